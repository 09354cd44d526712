"""Bad input through the CLI: exit code 2, one line on stderr naming the file and the field, no
traceback, and nothing registered or submitted (no database rows, no log directory)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from services.cli import main

ROWS = [{"id": f"s{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(3)]
BASE = {
    "datasets": [{"key": "data", "path": "data.jsonl"}],
    "models": [{"key": "m", "provider": "mock", "name": "target"}],
    "tasks": [{"key": "strict-qa", "template": "qa", "config": {"scorers": ["exact"]}}],
    "evaluation": {
        "key": "bad-input",
        "display_name": "Bad input",
        "task_specifications": [{"key": "spec", "task_key": "strict-qa", "model_key": "m", "dataset_key": "data"}],
    },
}
SPEC = "evaluation.task_specifications[0:spec]"


@dataclass
class Case:
    """A broken run file: `edit` breaks BASE; the error must name `file` and contain `field`."""

    edit: Callable[[dict], None] | None = None
    field: str = ""
    file: str = "run.yaml"
    text: str | None = None  # the run file's text, instead of BASE
    dataset: bytes | None = None  # data.jsonl's bytes, instead of ROWS
    csv: bytes | None = None  # written as data.csv, which the dataset then points at


def _set(path: str, value):
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return edit


CASES = {
    "malformed-yaml": Case(text="evaluation:\n  key: ev\n  display_name: [unclosed\n  tags: []\n", field="line "),
    "duplicate-yaml-key": Case(text="evaluation:\n  key: a\n  key: b\n", field="line 3"),
    "unknown-field": Case(_set("evaluation.colour", "red"), "evaluation.colour"),
    "unknown-spec-field": Case(_set("evaluation.task_specifications.0.modle_key", "m"), f"{SPEC}.modle_key"),
    "bad-key": Case(_set("evaluation.key", "has spaces"), "evaluation.key"),
    "key-too-long": Case(_set("evaluation.key", "k" * 251), "evaluation.key"),
    "empty-display-name": Case(_set("evaluation.display_name", ""), "evaluation.display_name"),
    "no-task-specifications": Case(_set("evaluation.task_specifications", []), "evaluation.task_specifications"),
    "bad-num-samples": Case(_set("evaluation.num_samples", 0), "evaluation.num_samples"),
    "missing-dataset-file": Case(_set("datasets.0.path", "missing.jsonl"), "datasets[0:data].path"),
    "unknown-task": Case(_set("evaluation.task_specifications.0.task_key", "essay"), f"{SPEC}.task_key"),
    "unknown-model": Case(_set("evaluation.task_specifications.0.model_key", "gpt-9"), f"{SPEC}.model_key"),
    "unknown-dataset": Case(_set("evaluation.task_specifications.0.dataset_key", "other"), f"{SPEC}.dataset_key"),
    "no-model-for-qa": Case(lambda d: d["evaluation"]["task_specifications"][0].pop("model_key"),
                            f"{SPEC}.model_key"),
    "unknown-task-config-field": Case(_set("evaluation.task_specifications.0.task_config", {"scorer": "exact"}),
                                      f"{SPEC}.task_config.scorer"),
    "unknown-judge-model": Case(
        _set("evaluation.task_specifications.0.task_config",
             {"scorers": ["exact", {"name": "model_graded_qa", "judge_model": "judge-9"}]}),
        f"{SPEC}.task_config.scorers[1].judge_model"),
    "judge-template-field": Case(
        _set("evaluation.task_specifications.0.task_config",
             {"scorers": [{"name": "model_graded_fact", "template": "{question} {mood}"}]}),
        f"{SPEC}.task_config.scorers"),
    "user-scorer-not-allowed": Case(
        _set("evaluation.task_specifications.0.task_config",
             {"scorers": [{"name": "mine", "entrypoint": "python_scorers:half"}]}),
        "EVALFLEET_ALLOWED_MODULES"),
    "second-spec-unknown-dataset": Case(
        lambda d: d["evaluation"]["task_specifications"].append(
            {"key": "spec2", "task_key": "qa", "model_key": "mock$target", "dataset_key": "other"}),
        "evaluation.task_specifications[1:spec2].dataset_key"),
    "row-without-input": Case(
        dataset=b'{"id": "s0", "input": "q", "target": "a"}\n{"id": "s1", "question": "q", "target": "a"}\n',
        file="data.jsonl", field="row 1: input"),
    "duplicate-sample-id": Case(
        dataset=b'{"id": "s0", "input": "q", "target": "a"}\n{"id": "s0", "input": "q", "target": "a"}\n',
        file="data.jsonl", field="row 1: id"),
}
MORE_CASES = {
    "csv-row-with-surplus-values": pytest.param(
        Case(csv=b"id,input,target\ns0,q,a\ns1,q,a,surplus\n", file="data.csv", field="row 1")),
    "dataset-not-utf8": pytest.param(
        Case(dataset=b'{"id": "s0", "input": "caf\xe9", "target": "a"}\n', file="data.jsonl")),
}
PARAMS = [pytest.param(case, id=name) for name, case in CASES.items()] + [
    pytest.param(*p.values, marks=p.marks, id=name) for name, p in MORE_CASES.items()]


def write_case(directory: Path, case: Case) -> Path:
    dataset = directory / "data.jsonl"
    if case.dataset is not None:
        dataset.write_bytes(case.dataset)
    else:
        dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    path = directory / "run.yaml"
    if case.text is not None:
        path.write_text(case.text, encoding="utf-8")
        return path
    doc = copy.deepcopy(BASE)
    if case.csv is not None:
        (directory / "data.csv").write_bytes(case.csv)
        doc["datasets"][0]["path"] = "data.csv"
    if case.edit is not None:
        case.edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def assert_nothing_registered_or_submitted(directory: Path) -> None:
    database = directory / ".evalfleet" / "evalfleet.db"
    if database.exists():
        with sqlite3.connect(database) as connection:
            for table in ("entities", "runs", "task_results", "sample_results"):
                assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table  # noqa: S608
    assert not (directory / "logs").exists()


def assert_one_clear_line(stderr: str, file: Path, field: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert str(file) in lines[0]
    assert field in lines[0]


@pytest.mark.parametrize("command", ["run", "add"])
@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(tmp_path, command, case):
    path = write_case(tmp_path, case)
    result = CliRunner().invoke(main, [command, "-f", str(path), *(["--json"] if command == "run" else [])])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == ""
    assert_one_clear_line(result.stderr, tmp_path / case.file, case.field)
    assert_nothing_registered_or_submitted(tmp_path)


def test_a_missing_run_file_is_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["run", "-f", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert_one_clear_line(result.stderr, tmp_path / "absent.yaml", "not found")
    assert_nothing_registered_or_submitted(tmp_path)


def test_bad_input_from_the_real_command_is_one_line_on_stderr(tmp_path):
    path = write_case(tmp_path, CASES["unknown-field"])
    executable = shutil.which("evalfleet")
    command = [executable] if executable else [sys.executable, "-m", "services.cli"]
    completed = subprocess.run([*command, "run", "-f", str(path), "--json"], cwd=tmp_path, env=dict(os.environ),
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert_one_clear_line(completed.stderr, path, "evaluation.colour")
    assert "accepted fields" in completed.stderr
    assert_nothing_registered_or_submitted(tmp_path)


@pytest.mark.parametrize("command", [["list"], ["status", "0123456789abcdef"], ["list", "--json"]])
def test_an_unreachable_database_is_one_line_not_a_traceback(command):
    result = CliRunner().invoke(main, [*command, "--database-url", "postgresql://evalfleet:secret@127.0.0.1:1/x"])
    assert result.exit_code == 1, result.output
    assert "is unreachable" in result.output and "Traceback" not in result.output
    assert "secret" not in result.output
    assert len(result.output.strip().splitlines()) == 1
