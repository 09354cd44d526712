"""The task result log (shared/log.py): its schema, and writing it as strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from shared.errors import StoreError
from shared.log import (
    ScorerResult,
    TaskResultLog,
    finite_or_none,
    list_task_result_logs,
    task_result_log_schema,
)
from shared.storage import LocalStore


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_schema_command_prints_the_task_result_log_json_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == TaskResultLog.model_json_schema()


def test_the_schema_requires_the_documented_top_level_fields():
    schema = TaskResultLog.model_json_schema()
    for name in ("status", "run_id", "evaluation", "task_specification", "sample_count", "sample_ids",
                 "samples", "results", "stats"):
        assert name in schema["properties"]
    assert set(schema["properties"]["status"]["enum"]) == {"started", "success", "error", "cancelled"}


def test_finite_or_none_replaces_nan_and_infinity_recursively():
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": 2.5, "e": None}
    assert finite_or_none(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": 2.5, "e": None}


def test_scorer_results_write_nan_as_null():
    result = ScorerResult(metrics={"accuracy": 1.0, "stderr": math.nan}, scored=1, errors=0)
    assert strict_json(result.model_dump_json())["metrics"] == {"accuracy": 1.0, "stderr": None}


def test_a_log_store_write_that_fails_leaves_no_file(tmp_path):
    store = LocalStore(tmp_path / "logs")
    with pytest.raises(RuntimeError), store.writer("ev/r1/spec.json") as out:
        out.write('{"samples": [')
        raise RuntimeError("database went away")
    assert list(list_task_result_logs(str(tmp_path / "logs"))) == []
    assert not any(p.is_file() for p in (tmp_path / "logs").rglob("*"))


def test_a_log_store_refuses_paths_outside_its_root(tmp_path):
    store = LocalStore(tmp_path / "logs")
    for relpath in ("../escape.json", "/abs.json", "a/../../b.json"):
        with pytest.raises(StoreError):
            store.uri(relpath)


def test_the_schema_linked_from_the_readme_is_the_generated_one():
    committed = Path(__file__).resolve().parents[2] / "docs" / "task_result_log.schema.json"
    assert json.loads(committed.read_text()) == task_result_log_schema(), (
        "docs/task_result_log.schema.json is stale: regenerate it with `evalfleet schema`")
