"""Fixtures for the deploy tests that start real processes (the worker probe, the migration
command): the sandbox, Redis, PostgreSQL, `evalfleet` subprocesses and workers from
tests/integration/conftest.py. The checks of the deploy files themselves need none of them."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration import conftest as integration  # noqa: E402

pytest_runtest_makereport = integration.pytest_runtest_makereport
sandbox = integration.sandbox
redis_url = integration.redis_url
sqlite_url = integration.sqlite_url
postgres_url = integration.postgres_url
cli = integration.cli
workers = integration.workers
