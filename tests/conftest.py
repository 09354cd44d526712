"""Shared test setup: every test runs isolated in its own temporary directory, in embedded mode.

`isolated` (autouse) gives each test a fresh working directory, database, log directory and result
store, and forgets per-process state afterwards. Fixtures that need a broker or a server database
(tests/integration) set their EVALFLEET_* variables on top of it and call `reset_settings()` and
`configure_app()` again.

The `write_run` and `write_dataset_file` fixtures return `write_run_file` and `write_dataset`; tests
take them as arguments rather than importing this module (several conftest.py files share its name).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import db
from shared.settings import Settings, reset_settings
from workers import sample as sample_worker
from workers.app import configure_app

# Five samples with ids, inputs and targets: the default dataset of `write_run_file`.
DEFAULT_ROWS: list[dict[str, Any]] = [
    {"id": f"s{i}", "input": f"question {i}", "target": f"answer {i}", "topic": "t"} for i in range(5)
]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in `tmp_path` with its own home and log directory and no broker or server.

    Every EVALFLEET_* variable that is a setting is removed first, so the developer's environment
    (a broker, a PostgreSQL URL, a result store) never leaks into a test; variables that are not
    settings (e.g. ones the integration tests read to find their services) are left alone.
    """
    for name in Settings.model_fields:
        monkeypatch.delenv(f"EVALFLEET_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / ".evalfleet"))
    monkeypatch.setenv("EVALFLEET_LOG_DIR", str(tmp_path / "logs"))
    reset_settings()
    configure_app()
    yield tmp_path
    db.dispose_engines()
    sample_worker.reset_worker_state()
    reset_settings()


def write_dataset(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as .jsonl, .json (a list) or .csv, by the suffix of `path`."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        import csv

        columns = list(dict.fromkeys(name for row in rows for name in row))
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f"no writer for {path.suffix}")
    return path


def write_run_file(
    directory: Path,
    evaluation: dict[str, Any],
    *,
    rows: Iterable[dict[str, Any]] | None = None,
    datasets: list[dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    tasks: list[dict[str, Any]] | None = None,
    name: str = "run.yaml",
) -> Path:
    """Write `<directory>/<name>` with the given `evaluation` section, used as is.

    Unless `datasets` is given, the file declares one dataset `data` at `data.jsonl`, written from
    `rows` (default: `DEFAULT_ROWS`). `datasets=[]` declares none (for registered datasets).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if datasets is None:
        write_dataset(directory / "data.jsonl", DEFAULT_ROWS if rows is None else rows)
        datasets = [{"key": "data", "path": "data.jsonl"}]
    document: dict[str, Any] = {}
    for section, entities in (("datasets", datasets), ("models", models), ("tasks", tasks)):
        if entities:
            document[section] = entities
    document["evaluation"] = evaluation
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def write_dataset_file():
    """`write_dataset_file(path, rows)` -> path; the format follows the suffix."""
    return write_dataset


@pytest.fixture
def write_run():
    """`write_run(directory, evaluation, rows=..., datasets=..., models=..., tasks=...)` -> path."""
    return write_run_file
