"""End to end in embedded mode (no broker, no server): the real CLI runs evaluations in-process
and writes task result logs, which are checked against the schema and against the dataset."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from shared.errors import SpecError
from shared.log import TaskResultLog
from shared.settings import reset_settings

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
CAPITALS = [json.loads(line) for line in (REPO / "examples" / "data" / "capitals.jsonl").read_text().splitlines()
            if line.strip()]
REPORT_KEYS = {"run_id", "status", "evaluation", "task_results"}
TASK_RESULT_KEYS = {"key", "status", "log_path", "samples", "errors", "model_calls", "metrics"}
ROWS = [{"id": f"r{i}", "input": f"question {i}", "target": f"answer {i}", "topic": "t"} for i in range(10)]


def strict_json(text: str):
    """Parse as strict JSON: NaN or Infinity anywhere fails the test."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c!r}"))


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def run_json(path: Path, expected_exit: int = 0) -> dict:
    result = cli("run", "-f", str(path), "--json")
    assert result.exit_code == expected_exit, (result.output, result.exception)
    return strict_json(result.stdout)


def read_log(path: str) -> tuple[dict, TaskResultLog]:
    text = Path(path).read_text(encoding="utf-8")
    return strict_json(text), TaskResultLog.model_validate_json(text)


def evaluation(*specs: dict, key: str = "e2e", **fields) -> dict:
    return {"key": key, "display_name": "End to end", "task_specifications": list(specs), **fields}


def qa(**fields) -> dict:
    return {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data", **fields}


def db_rows(tmp_path: Path, table: str) -> list:
    with sqlite3.connect(tmp_path / ".evalfleet" / "evalfleet.db") as connection:
        return connection.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - test-chosen name


@pytest.fixture
def allow_python_models(monkeypatch):
    """Let `python` models import tests/python_models.py."""
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_models")
    reset_settings()


def assert_report_shape(document: dict) -> None:
    assert REPORT_KEYS <= set(document)
    assert document["task_results"]
    for task_result in document["task_results"]:
        assert TASK_RESULT_KEYS <= set(task_result)


def assert_log_matches_selection(log: TaskResultLog, ids: list[str]) -> None:
    """Every selected sample exactly once, in selection order."""
    assert log.sample_ids == ids
    assert [s.id for s in log.samples] == ids
    assert [s.position for s in log.samples] == list(range(len(ids)))
    assert log.sample_count == len(ids)


# -- the quickstart ------------------------------------------------------------------------------

def test_quickstart_succeeds_as_a_real_command_printing_one_json_document(tmp_path):
    completed = subprocess.run(
        [shutil.which("evalfleet") or sys.executable, *([] if shutil.which("evalfleet") else ["-m", "services.cli"]),
         "run", "-f", str(QUICKSTART), "--json"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    document = strict_json(completed.stdout)
    assert_report_shape(document)
    assert (document["status"], document["evaluation"]) == ("success", "quickstart")
    assert [t["key"] for t in document["task_results"]] == ["capitals-qa", "capitals-unique", "capitals-complete"]
    for task_result in document["task_results"]:
        assert (task_result["status"], task_result["samples"], task_result["errors"]) == ("success", 20, 0)
        log_path = Path(task_result["log_path"])
        assert log_path.is_relative_to(tmp_path / "logs")
        _, log = read_log(str(log_path))
        assert log.run_id == document["run_id"]
    qa_result = document["task_results"][0]
    assert qa_result["model_calls"] == 20
    assert qa_result["metrics"]["exact"] == {"accuracy": 1.0, "stderr": 0.0}
    assert (tmp_path / ".evalfleet" / "evalfleet.db").is_file()  # EVALFLEET_HOME reached the command


def test_quickstart_logs_hold_every_sample_once_with_results_and_stats(tmp_path):
    document = run_json(QUICKSTART)
    ids = [row["id"] for row in CAPITALS]
    logs = {t["key"]: read_log(t["log_path"]) for t in document["task_results"]}

    raw, log = logs["capitals-qa"]
    assert_log_matches_selection(log, ids)
    assert (log.status, log.samples_errored, log.subsampling) == ("success", 0, "head")
    assert (log.evaluation.key, log.task_specification.key) == ("quickstart", "capitals-qa")
    assert log.task_specification.model.key == "mock$target"
    for sample, row in zip(log.samples, CAPITALS, strict=True):
        assert (sample.input, sample.target, sample.output) == (row["input"], row["target"], row["target"])
        assert sample.prompt == f"What is the capital of {row['input']}? Answer with the city only."
        assert {label: s.value for label, s in sample.scores.items()} == {"exact": 1.0, "includes": 1.0}
        assert sample.metadata == {k: v for k, v in row.items() if k not in ("id", "input", "target")}
        assert sample.error is None
    assert set(raw["results"]) == {"exact", "includes"}
    assert raw["results"]["exact"] == {"metrics": {"accuracy": 1.0, "stderr": 0.0}, "scored": 20, "errors": 0}
    usage = log.stats.model_usage["mock$target"]
    assert (log.stats.model_calls, usage.calls) == (20, 20)
    assert usage.input_tokens == sum(s.usage.input_tokens for s in log.samples) > 0
    assert usage.output_tokens == sum(s.usage.output_tokens for s in log.samples) > 0

    raw, log = logs["capitals-unique"]
    assert_log_matches_selection(log, ids)
    counts = {}
    for row in CAPITALS:
        counts[row["input"]] = counts.get(row["input"], 0) + 1
    expected = [0.0 if counts[row["input"]] > 1 else 1.0 for row in CAPITALS]
    assert [s.scores["uniqueness"].value for s in log.samples] == expected
    assert raw["results"]["uniqueness"]["metrics"]["mean"] == pytest.approx(sum(expected) / len(expected))
    assert log.stats.model_calls == 0 and log.stats.model_usage == {}

    raw, log = logs["capitals-complete"]
    expected = [1.0 if str(row.get("region") or "").strip() else 0.0 for row in CAPITALS]
    assert [s.scores["completeness"].value for s in log.samples] == expected
    assert raw["results"]["completeness"]["metrics"]["mean"] == pytest.approx(sum(expected) / len(expected))


def test_report_metrics_equal_the_log_results(tmp_path):
    document = run_json(QUICKSTART)
    for task_result in document["task_results"]:
        raw, _ = read_log(task_result["log_path"])
        assert task_result["metrics"] == {label: r["metrics"] for label, r in raw["results"].items()}


# -- commands ------------------------------------------------------------------------------------

def test_detach_without_a_broker_is_bad_input(tmp_path):
    result = cli("run", "-f", str(QUICKSTART), "--detach")
    assert result.exit_code == 2
    assert "broker" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_status_json_after_a_run_prints_the_same_document(tmp_path):
    ran = cli("run", "-f", str(QUICKSTART), "--json")
    assert ran.exit_code == 0
    run_id = json.loads(ran.stdout)["run_id"]
    status = cli("status", run_id, "--json")
    assert status.exit_code == 0
    assert strict_json(status.stdout) == strict_json(ran.stdout)


def test_status_of_an_unknown_run_is_bad_input(tmp_path):
    result = cli("status", "0" * 32, "--json")
    assert result.exit_code == 2
    assert "no run" in result.stderr


def test_list_json_shows_runs_newest_first(tmp_path, write_run):
    first = run_json(write_run(tmp_path / "a", evaluation(qa(), key="first")))
    second = run_json(QUICKSTART)
    result = cli("list", "--json")
    assert result.exit_code == 0
    listed = strict_json(result.stdout)
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert [r["evaluation"] for r in listed] == ["quickstart", "first"]
    assert [(r["status"], r["samples"], r["done"], r["errors"]) for r in listed] == [
        ("success", 60, 60, 0), ("success", 5, 5, 0)]
    assert listed[0]["created_at"] >= listed[1]["created_at"]
    only = strict_json(cli("list", "--json", "--evaluation", "first").stdout)
    assert [r["run_id"] for r in only] == [first["run_id"]]


def test_add_registers_entities_that_later_run_files_use_by_key(tmp_path, write_run, write_dataset_file):
    write_dataset_file(tmp_path / "setup" / "data" / "shared.jsonl", ROWS)
    setup = write_run(
        tmp_path / "setup",
        evaluation({"task_key": "shared-qa", "model_key": "shared-model", "dataset_key": "shared-data"},
                   key="setup"),
        datasets=[{"key": "shared-data", "path": "data/shared.jsonl"}],
        models=[{"key": "shared-model", "provider": "mock", "name": "target"}],
        tasks=[{"key": "shared-qa", "template": "qa", "config": {"scorers": ["exact"]}}],
    )
    added = cli("add", "-f", str(setup))
    assert added.exit_code == 0, added.output
    assert added.stdout.splitlines() == ["dataset\tshared-data\tcreated", "model\tshared-model\tcreated",
                                         "task\tshared-qa\tcreated"]
    assert sorted((kind, key) for _, kind, key, *_ in db_rows(tmp_path, "entities")) == [
        ("dataset", "shared-data"), ("model", "shared-model"), ("task", "shared-qa")]
    assert db_rows(tmp_path, "runs") == []
    assert not (tmp_path / "logs").exists()

    later = write_run(tmp_path / "later", evaluation(
        {"key": "reuse", "task_key": "shared-qa", "model_key": "shared-model", "dataset_key": "shared-data"},
        key="later"), datasets=[])
    document = run_json(later)
    (task_result,) = document["task_results"]
    assert (document["status"], task_result["samples"]) == ("success", 10)
    assert task_result["metrics"]["exact"]["accuracy"] == 1.0
    _, log = read_log(task_result["log_path"])
    assert log.task_specification.dataset.path == str((tmp_path / "setup" / "data" / "shared.jsonl").resolve())
    assert log.task_specification.task.config["scorers"] == [{"name": "exact"}]
    assert log.task_specification.model.key == "shared-model"


def test_schema_output_is_the_task_result_log_schema(tmp_path):
    result = cli("schema")
    assert result.exit_code == 0
    assert strict_json(result.stdout) == TaskResultLog.model_json_schema()


# -- runs of every built-in task -----------------------------------------------------------------

def test_every_built_in_task_runs_end_to_end(tmp_path, write_run, write_dataset_file):
    write_dataset_file(tmp_path / "mc.json", [
        {"id": "m1", "input": "Capital of Japan?", "choices": ["Paris", "Tokyo"], "target": "B"},
        {"id": "m2", "input": "Capital of Peru?", "choices": ["Lima", "Oslo"], "target": "A"},
    ])
    write_dataset_file(tmp_path / "people.csv", [
        {"id": "p1", "input": "x", "name": "Ann", "email": "ann@example.com"},
        {"id": "p2", "input": "y", "name": "Bob", "email": ""},
        {"id": "p3", "input": "z", "name": "Ann", "email": "  "},
    ])
    path = write_run(tmp_path, evaluation(
        qa(task_config={"prompt_template": "{input} ({topic})",
                        "scorers": ["exact", {"name": "regex", "pattern": r"(\d+)"},
                                    {"name": "regex", "pattern": r"(\d+)$"}, "numeric"]}),
        {"key": "mc", "task_key": "multiple-choice", "model_key": "mock$target", "dataset_key": "mc"},
        {"key": "unique-names", "task_key": "uniqueness", "dataset_key": "people", "task_config": {"field": "name"}},
        {"key": "emails", "task_key": "completeness", "dataset_key": "people", "task_config": {"field": "email"}},
    ), datasets=[{"key": "data", "path": "data.jsonl"}, {"key": "mc", "path": "mc.json"},
                 {"key": "people", "path": "people.csv"}])
    write_dataset_file(tmp_path / "data.jsonl",
                       [{"id": f"n{i}", "input": f"{i} times 6", "target": str(6 * i), "topic": "maths"}
                        for i in range(4)])
    document = run_json(path)
    results = {t["key"]: t for t in document["task_results"]}
    assert list(results["qa"]["metrics"]) == ["exact", "regex", "regex-2", "numeric"]
    assert {label: m["accuracy"] for label, m in results["qa"]["metrics"].items()} == {
        "exact": 1.0, "regex": 1.0, "regex-2": 1.0, "numeric": 1.0}
    assert results["mc"]["metrics"]["choice"]["accuracy"] == 1.0
    assert results["unique-names"]["metrics"]["uniqueness"]["mean"] == pytest.approx(1 / 3)
    assert results["emails"]["metrics"]["completeness"]["mean"] == pytest.approx(1 / 3)
    _, mc_log = read_log(results["mc"]["log_path"])
    assert "A) Paris\nB) Tokyo" in mc_log.samples[0].prompt
    _, names = read_log(results["unique-names"]["log_path"])
    assert [s.scores["uniqueness"].value for s in names.samples] == [0.0, 1.0, 0.0]
    _, qa_log = read_log(results["qa"]["log_path"])
    assert qa_log.samples[1].prompt == "1 times 6 (maths)"


def test_a_specification_without_a_key_is_named_by_its_derived_key(tmp_path, write_run):
    spec = {k: v for k, v in qa().items() if k != "key"}
    document = run_json(write_run(tmp_path, evaluation(spec)))
    (task_result,) = document["task_results"]
    assert task_result["key"] == "qa__mock-target__data"
    assert Path(task_result["log_path"]).name == "qa__mock-target__data.json"


def test_a_single_sample_has_a_null_stderr_in_the_report_and_the_log(tmp_path, write_run):
    document = run_json(write_run(tmp_path, evaluation(qa(num_samples=1))))
    (task_result,) = document["task_results"]
    assert task_result["metrics"]["includes"] == {"accuracy": 1.0, "stderr": None}
    raw, log = read_log(task_result["log_path"])
    assert raw["results"]["includes"]["metrics"] == {"accuracy": 1.0, "stderr": None}
    assert log.sample_ids == ["s0"]


def test_stderr_in_the_log_is_the_sample_std_over_root_n(tmp_path, write_run):
    rows = [{"id": f"r{i}", "input": "q", "target": "yes" if i < 3 else "no"} for i in range(8)]
    document = run_json(write_run(tmp_path, evaluation(qa(model_key="mock$echo", task_config={
        "prompt_template": "yes", "scorers": ["exact"]})), rows=rows))
    metrics = document["task_results"][0]["metrics"]["exact"]
    values = [1.0] * 3 + [0.0] * 5
    mean = sum(values) / 8
    std = (sum((v - mean) ** 2 for v in values) / 7) ** 0.5
    assert metrics["accuracy"] == pytest.approx(0.375)
    assert metrics["stderr"] == pytest.approx(std / 8 ** 0.5)


# -- subsampling through a run -------------------------------------------------------------------

def test_random_subsampling_selects_the_same_samples_on_every_run(tmp_path, write_run):
    rows = [{"id": f"row-{i:03d}", "input": f"q{i}", "target": f"a{i}"} for i in range(40)]
    path = write_run(tmp_path, evaluation(qa(), num_samples=6, subsampling="random"), rows=rows)
    first = run_json(path)["task_results"][0]
    second = run_json(path)["task_results"][0]
    _, log1 = read_log(first["log_path"])
    _, log2 = read_log(second["log_path"])
    rank = {r["id"]: hashlib.blake2b(f"evalfleet-subsampling-v1:{r['id']}".encode(), digest_size=8).digest()
            for r in rows}
    expected = sorted(sorted(rank, key=rank.get)[:6])  # zero-padded ids sort in row order
    assert_log_matches_selection(log1, expected)
    assert log2.sample_ids == log1.sample_ids
    assert (log1.subsampling, first["samples"]) == ("random", 6)


def test_head_subsampling_and_specification_overrides_through_a_run(tmp_path, write_run):
    path = write_run(tmp_path, evaluation(qa(), qa(key="two", num_samples=2), num_samples=4))
    document = run_json(path)
    assert [t["samples"] for t in document["task_results"]] == [4, 2]
    _, log = read_log(document["task_results"][1]["log_path"])
    assert log.sample_ids == ["s0", "s1"]


def test_deprecated_mode_debug_runs_ten_samples_and_warns(tmp_path, write_run):
    rows = [{"id": f"r{i}", "input": "q", "target": "a"} for i in range(25)]
    result = cli("run", "-f", str(write_run(tmp_path, evaluation(qa(), mode="debug"), rows=rows)), "--json")
    assert result.exit_code == 0, result.output
    assert "deprecated" in result.stderr
    assert strict_json(result.stdout)["task_results"][0]["samples"] == 10


# -- failures ------------------------------------------------------------------------------------

def test_a_run_whose_samples_mostly_fail_ends_in_error_with_every_sample_logged(tmp_path, write_run,
                                                                                allow_python_models):
    path = write_run(tmp_path, evaluation(qa(model_key="flaky")),
                     models=[{"key": "flaky", "provider": "python", "name": "python_models:fail_most"}], rows=ROWS)
    document = run_json(path, expected_exit=1)
    assert document["status"] == "error"
    (task_result,) = document["task_results"]
    assert (task_result["status"], task_result["samples"], task_result["errors"]) == ("error", 10, 9)
    raw, log = read_log(task_result["log_path"])
    assert_log_matches_selection(log, [r["id"] for r in ROWS])
    assert (log.status, log.samples_errored) == ("error", 9)
    assert log.error is not None and "9 of 10" in log.error.message
    for sample in log.samples:
        if sample.id == "r0":
            assert sample.error is None and sample.scores["includes"].value == 1.0
        else:
            assert sample.error.type == "RuntimeError"
            assert f"model is down (sample {sample.id})" in sample.error.message
            assert sample.scores == {}
    assert raw["results"]["includes"]["metrics"] == {"accuracy": 1.0, "stderr": None}
    assert raw["results"]["includes"]["scored"] == 1


def test_a_prompt_template_with_a_missing_field_is_refused_before_anything_runs(tmp_path, write_run):
    path = write_run(tmp_path, evaluation(qa(task_config={"prompt_template": "Capital of {country}?"})))
    result = cli("run", "-f", str(path), "--json")
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert str(path) in message and "task_config.prompt_template" in message and "{country}" in message
    assert not (tmp_path / "logs").exists()


def test_fail_on_error_false_keeps_a_failing_run_successful(tmp_path, write_run, allow_python_models):
    path = write_run(tmp_path, evaluation(qa(model_key="python$python_models:always_fail"), fail_on_error=False))
    document = run_json(path)
    assert (document["status"], document["task_results"][0]["errors"]) == ("success", 5)


# -- python models -------------------------------------------------------------------------------

@pytest.mark.parametrize("declared", [True, False], ids=["model-entity", "provider-dollar-name"])
def test_a_python_provider_model_answers_from_a_function(tmp_path, write_run, allow_python_models, declared):
    models = [{"key": "fn", "provider": "python", "name": "python_models:answer_target"}] if declared else None
    model_key = "fn" if declared else "python$python_models:answer_target"
    document = run_json(write_run(tmp_path, evaluation(qa(model_key=model_key)), models=models))
    (task_result,) = document["task_results"]
    assert (document["status"], task_result["model_calls"]) == ("success", 5)
    assert task_result["metrics"]["includes"]["accuracy"] == 1.0
    _, log = read_log(task_result["log_path"])
    assert log.samples[0].output == "The answer is answer 0."
    assert log.stats.model_usage[model_key].calls == 5


def test_a_python_model_that_cannot_be_imported_does_not_hang_the_run(tmp_path, write_run, monkeypatch):
    from services.embedded import embedded_worker
    from services.runs import wait_for_run
    from services.submitter import submit

    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "no_such_module_xyz")
    reset_settings()
    path = write_run(tmp_path, evaluation(qa(model_key="python$no_such_module_xyz:answer", num_samples=1)))
    with embedded_worker(2):
        try:
            run_id = submit(path)
        except SpecError:
            return  # rejected as bad input before submitting: the better outcome
        report = wait_for_run(run_id, timeout_s=4)
    assert report.finished, "the run was still running after 4 s"
    assert report.status == "error"


def test_latency_percentiles_are_nearest_rank_over_the_recorded_samples(tmp_path, write_run, allow_python_models):
    # 20 samples taking 10, 20, ... 200 ms: nearest rank puts p50 at the 10th (100 ms), p95 at the 19th.
    rows = [{"id": f"s{i:02d}", "input": "q", "target": "a", "ms": 10 * (i + 1)} for i in range(20)]
    path = write_run(tmp_path, {"key": "latency", "task_specifications": [
        {"key": "l", "task_key": "qa", "model_key": "sleepy", "dataset_key": "data"}]}, rows=rows,
        models=[{"key": "sleepy", "provider": "python", "name": "python_models:sleep_metadata_ms"}])
    result = CliRunner().invoke(main, ["run", "-f", str(path), "--json"])
    assert result.exit_code == 0, result.output
    (task_result,) = json.loads(result.stdout)["task_results"]
    usage = task_result["usage"]
    # Against the latencies the log recorded, not wall-clock windows: a loaded machine stretches
    # every sleep, never the ranks.
    recorded = sorted(sample["latency_ms"] for sample in read_log(task_result["log_path"])[0]["samples"])
    assert usage["latency_p50_ms"] == pytest.approx(recorded[9]), (usage, recorded)
    assert usage["latency_p95_ms"] == pytest.approx(recorded[18]), (usage, recorded)
    assert recorded[9] >= 100 and recorded[18] >= 190, recorded
