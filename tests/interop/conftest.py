"""Fixtures of the Inspect interop tests: the Inspect venv, built once (under a lock) by
tests/support/inspect_venv.py. The tests that need it are skipped, saying why, only when the
package index cannot be reached to build it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.support` is importable however pytest was started
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.inspect_venv import PackageIndexUnreachable, ensure_inspect_venv  # noqa: E402


@pytest.fixture(scope="session")
def inspect_python() -> Path:
    """The Inspect venv's python, the venv built first when it is missing."""
    try:
        return ensure_inspect_venv()
    except PackageIndexUnreachable as exc:
        pytest.skip(f"needs inspect-ai in its own venv, which cannot be built offline: {exc}")
