"""Interop with Inspect AI, checked against the real inspect-ai (the pinned version, in a venv of
its own, run as subprocesses): evalfleet logs converted to `.eval` and `.json` are read by
Inspect's API, its CLI and its viewer bundler as they were written; logs Inspect wrote are
imported as handovers that `evalfleet run` uploads with no model call; a round trip keeps every
sample and metric; bad input is one LogError naming the file."""

from __future__ import annotations

import json
import math
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.interop import convert_to_inspect, import_inspect_log
from shared.interop.handover import handover_log_path
from shared.log import TaskResultLog
from shared.log.reader import LogError, iter_samples, read_log, read_log_header
from shared.log.writer import SampleSpool, write_task_result_log
from tests.interop.processes import evalfleet_run, run_inspect_cli, run_inspect_script

# Building the venv (once, by the first test that needs it) takes a minute or more.
pytestmark = pytest.mark.timeout(900)

ROWS = [
    {"id": "q1", "input": "What is 2+2?", "target": "4", "weight": 1.0},
    {"id": "q2", "input": "Name the capital of France: Paris or Lyon?", "target": "Paris", "weight": 2.0},
    {"id": "q3", "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say yes"}],
     "target": "yes", "weight": 0.5},
    # `{weight:.1f}` cannot format text: this sample fails while its prompt is made.
    {"id": "q4", "input": "A row whose weight is not a number", "target": "x", "weight": "heavy"},
]
RUN_FILE = {
    "datasets": [{"key": "mini", "path": "data.jsonl"}],
    "evaluation": {
        "key": "interop", "display_name": "Interop", "fail_on_error": False, "tags": ["interop"],
        "task_specifications": [
            {"key": "target", "task_key": "qa", "model_key": "mock$target", "dataset_key": "mini",
             "task_config": {"prompt_template": "{input} (weight {weight:.1f})", "scorers": ["exact", "includes"]},
             "star_metric": {"metric": "exact/accuracy", "success_threshold": 0.5}},
            {"key": "echo", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "mini", "num_samples": 3,
             "task_config": {"scorers": ["includes"]}},
            # One scored sample: its stderr is undefined (null in evalfleet's log).
            {"key": "single", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "mini", "num_samples": 1},
        ],
    },
}
# How the imported Inspect logs name Inspect's scorers (see write_inspect_logs.py).
IMPORTED_LABELS = {"includes": "includes", "match": "includes-2", "judge": "includes-3"}


@pytest.fixture(scope="module")
def evalfleet_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The logs of one evalfleet run, by task specification key."""
    home = tmp_path_factory.mktemp("evalfleet-run")
    (home / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    (home / "run.yaml").write_text(yaml.safe_dump(RUN_FILE, sort_keys=False), encoding="utf-8")
    report = evalfleet_run(home / "run.yaml", home)
    return {result["key"]: result["log_path"] for result in report["task_results"]}


@pytest.fixture(scope="module")
def converted(evalfleet_logs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """Each evalfleet log as `.eval` and `.json`, all in one directory, by (spec key, format)."""
    directory = tmp_path_factory.mktemp("inspect-logs")
    return {(key, fmt): convert_to_inspect(location, str(directory), fmt)
            for key, location in evalfleet_logs.items() for fmt in ("eval", "json")}


@pytest.fixture(scope="module")
def read_by_inspect(inspect_python: Path, converted: dict[tuple[str, str], str]) -> dict[str, Any]:
    directory = Path(next(iter(converted.values()))).parent
    return run_inspect_script(inspect_python, "read_inspect_logs.py", str(directory), *converted.values())


@pytest.fixture(scope="module")
def written_by_inspect(inspect_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_inspect_script(inspect_python, "write_inspect_logs.py", str(tmp_path_factory.mktemp("written")))


def nan_as_text(value: float | None) -> float | str:
    """How read_inspect_logs.py reports NaN; evalfleet's null is NaN for Inspect."""
    return "NaN" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def flat(metrics: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """`{label: {metric: value}}` as `{"label.metric": value}`, which pytest.approx compares."""
    return {f"{label}.{name}": value for label, values in metrics.items() for name, value in values.items()}


def plain(value: Any) -> Any:
    return [message.model_dump() for message in value] if isinstance(value, list) else value


# -- evalfleet -> Inspect -----------------------------------------------------------------------------


def test_inspect_reads_converted_logs_as_they_were_written(evalfleet_logs, converted, read_by_inspect):
    for (key, _fmt), path in converted.items():
        found = read_by_inspect["logs"][path]
        log = read_log(evalfleet_logs[key])
        assert found["status"] == found["header_status"] == log.status == "success"
        assert (found["task"], found["run_id"]) == (log.task_specification.task.key, log.run_id)
        assert found["model"] == f"mockllm/{log.task_specification.model.name}"
        assert [s["id"] for s in found["samples"]] == found["dataset_sample_ids"] == log.sample_ids
        assert (found["total_samples"], found["completed_samples"]) == (log.sample_count,
                                                                         log.sample_count - log.samples_errored)
        assert found["metrics"] == {label: {name: nan_as_text(value) for name, value in result.metrics.items()}
                                    for label, result in log.results.items()}
        for seen, record in zip(found["samples"], log.samples, strict=True):
            assert seen["input"] == plain(record.input)
            assert (seen["target"], seen["output"], seen["epoch"]) == (record.target, record.output or "", 1)
            assert seen["scores"] == {label: {"value": nan_as_text(score.value), "answer": score.answer}
                                      for label, score in record.scores.items()}
            assert seen["error"] == (record.error.message if record.error else None)
            assert seen["messages"][-1] == ("assistant" if record.output is not None else "user")
            assert {k: v for k, v in seen["metadata"].items() if k != "evalfleet"} == record.metadata
        evalfleet = found["metadata"]["evalfleet"]
        assert evalfleet["task_specification"] == log.task_specification.model_dump(mode="json")
        assert (evalfleet["evaluation_key"], evalfleet["spec_key"]) == ("interop", key)
        if path.endswith(".eval"):  # what the viewer lists
            assert [s["id"] for s in found["summaries"]] == log.sample_ids
            assert all(s["completed"] for s in found["summaries"])


def test_a_failed_sample_and_an_undefined_metric_stay_what_they_are(converted, read_by_inspect):
    failed = read_by_inspect["logs"][converted[("target", "eval")]]
    q4 = next(s for s in failed["samples"] if s["id"] == "q4")
    assert q4["error"] == "Unknown format code 'f' for object of type 'str'"
    assert (q4["output"], q4["scores"]) == ("", {})
    assert next(s for s in failed["summaries"] if s["id"] == "q4")["error"] == q4["error"]
    for fmt in ("eval", "json"):
        assert read_by_inspect["logs"][converted[("single", fmt)]]["metrics"] == {
            "includes": {"accuracy": 0.0, "stderr": "NaN"}}


def test_the_star_metric_is_inspects_headline_metric(converted, read_by_inspect):
    assert read_by_inspect["logs"][converted[("target", "json")]]["headline"] == {
        "scorer": "exact", "score": "exact", "metric": "accuracy", "reducer": None}
    assert read_by_inspect["logs"][converted[("echo", "json")]]["headline"] is None


def test_inspect_lists_converted_logs_by_their_names(converted, read_by_inspect):
    listed = {Path(entry["name"]).name: entry for entry in read_by_inspect["listed"]}
    assert set(listed) == {Path(path).name for path in converted.values()}
    for path in converted.values():
        entry = listed[Path(path).name]
        assert entry["task"] == "qa"
        assert entry["task_id"] == read_by_inspect["logs"][path]["task_id"]


def test_inspect_cli_lists_and_bundles_converted_logs_for_the_viewer(inspect_python, converted, tmp_path):
    directory = Path(next(iter(converted.values()))).parent
    listing = run_inspect_cli(inspect_python, "log", "list", "--log-dir", str(directory), "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert {Path(entry["name"]).name for entry in json.loads(listing.stdout)} == {
        Path(path).name for path in converted.values()}
    bundle = tmp_path / "bundle"
    built = run_inspect_cli(inspect_python, "view", "bundle", "--log-dir", str(directory), "--output-dir", str(bundle),
                            cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (bundle / "index.html").is_file()
    overview = json.loads((bundle / "logs" / "listing.json").read_text(encoding="utf-8"))  # reads every header
    assert set(overview) == {Path(path).name for path in converted.values()}
    assert {entry["status"] for entry in overview.values()} == {"success"}
    assert all(entry["primary_metric"]["name"] == "accuracy" for entry in overview.values())


def test_converting_again_rewrites_the_same_file(evalfleet_logs, tmp_path):
    for fmt in ("eval", "json"):
        first = convert_to_inspect(evalfleet_logs["target"], str(tmp_path / "a"), fmt)
        again = convert_to_inspect(evalfleet_logs["target"], str(tmp_path / "b"), fmt)
        assert Path(first).name == Path(again).name
        assert Path(first).read_bytes() == Path(again).read_bytes()
        # Inspect's name: <created>_<task>_<task id>, the task id without Inspect's separators.
        created, task, task_id = Path(first).stem.split("_")
        assert task == "qa" and len(task_id) == 22 and "-" not in task_id
        assert created == read_log_header(evalfleet_logs["target"]).stats.started_at.strftime("%Y-%m-%dT%H-%M-%S-00-00")


# -- Inspect -> evalfleet -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_inspect_written_logs_import_as_handovers_that_run_with_no_model_calls(written_by_inspect, fmt, tmp_path):
    path = written_by_inspect["paths"][fmt]
    expected = written_by_inspect["expected"]
    if fmt == "eval":
        assert {info.compress_type for info in zipfile.ZipFile(path).infolist()} == {93}  # Zstandard, as Inspect writes
    run_file = import_inspect_log(path, str(tmp_path / "handover"))
    document = yaml.safe_load(run_file.read_text(encoding="utf-8"))
    spec = document["evaluation"]["task_specifications"][0]
    text = (run_file.parent / spec["task_result_log_path"]).read_text(encoding="utf-8")
    log = TaskResultLog.model_validate_json(text)
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON {token}"))
    assert log.version == 2 and log.status == "success" and log.task_specification.task.template == "qa"
    assert [s["name"] for s in spec["task_config"]["scorers"]] == ["includes", "includes", "includes"]
    # A temperature makes the model an entity of the run file; without one it is `openai$<name>`.
    assert spec["model_key"] == ("openai-gpt-4o-mini" if fmt == "eval" else "openai$gpt-4o-mini")
    by_id = {record.id: record for record in log.samples}
    for sample in expected["samples"]:
        record = by_id[sample["id"]]
        target = sample["target"]
        assert record.target == (target if isinstance(target, str) else json.dumps(target))
        assert record.output == sample["output"]
        assert {label: score.value for label, score in record.scores.items()} == {
            IMPORTED_LABELS[name]: value for name, value in sample["scores"].items()}
        assert (record.error.message if record.error else None) == sample["error"]
        assert record.metadata == {("inspect_id" if k == "id" else k): v for k, v in sample["metadata"].items()}
    assert by_id["4"].error.type == "TimeoutError"
    assert by_id["chat"].input[0].model_dump() == {"role": "system", "content": "Answer in one word."}
    inspect_metrics = {IMPORTED_LABELS[name]: metrics for name, metrics in expected["metrics"].items()}
    assert flat({label: result.metrics for label, result in log.results.items()}) == pytest.approx(flat(inspect_metrics))

    report = evalfleet_run(run_file, tmp_path)
    [result] = report["task_results"]
    assert (result["status"], result["samples"], result["errors"], result["model_calls"]) == ("success", 4, 1, 0)
    assert flat(result["metrics"]) == pytest.approx(flat(inspect_metrics))


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_round_trip_keeps_ids_inputs_targets_outputs_scores_and_metrics(evalfleet_logs, fmt, tmp_path):
    handovers = {}
    for key, location in evalfleet_logs.items():
        inspect_log = convert_to_inspect(location, str(tmp_path / "inspect"), fmt)
        handovers[key] = import_inspect_log(inspect_log, str(tmp_path / f"handover-{key}"))
        original = read_log(location)
        back = read_log(str(handovers[key].parent / handover_log_path(key)))
        assert (back.run_id, back.evaluation, back.status, back.star_metric) == (
            original.run_id, original.evaluation, original.status, original.star_metric)
        assert back.task_specification.model_dump(exclude={"dataset", "num_samples", "task_result_log_path"}) == \
            original.task_specification.model_dump(exclude={"dataset", "num_samples", "task_result_log_path"})
        assert back.sample_ids == original.sample_ids
        assert {label: r.metrics for label, r in back.results.items()} == {
            label: r.metrics for label, r in original.results.items()}
        for mine, theirs in zip(back.samples, original.samples, strict=True):
            assert mine.model_dump(exclude={"started_at", "completed_at"}) == \
                theirs.model_dump(exclude={"started_at", "completed_at"})

    report = evalfleet_run(handovers["target"], tmp_path)
    [result] = report["task_results"]
    assert (result["model_calls"], result["errors"]) == (0, 1)
    assert result["metrics"] == {label: r.metrics for label, r in read_log(evalfleet_logs["target"]).results.items()}


# -- bad input ----------------------------------------------------------------------------------------


def _not_a_log(written: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "notes.eval"
    path.write_text("these are notes, not a log\n", encoding="utf-8")
    return path


def _truncated(fmt: str) -> Any:
    def make(written: dict[str, Any], tmp_path: Path) -> Path:
        data = Path(written["paths"][fmt]).read_bytes()
        path = tmp_path / f"truncated.{fmt}"
        path.write_bytes(data[: len(data) * 2 // 3])
        return path
    return make


def _version_99(written: dict[str, Any], tmp_path: Path) -> Path:
    return Path(written["paths"]["version_99"])


@pytest.mark.parametrize(("make", "problem"), [
    (_not_a_log, "not an Inspect log"),
    (_truncated("eval"), "truncated or damaged .eval archive"),
    (_truncated("json"), "truncated or malformed JSON"),
    (_version_99, "Inspect log version 99 is not supported"),
], ids=["not-a-log", "truncated-eval", "truncated-json", "version-99"])
def test_bad_input_is_one_log_error_naming_the_file(written_by_inspect, make, problem, tmp_path):
    path = make(written_by_inspect, tmp_path)
    output = tmp_path / "handover"
    with pytest.raises(LogError) as caught:
        import_inspect_log(str(path), str(output))
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)
    assert not list(output.rglob("*.yaml")) and not list(output.rglob("*.json")) and not list(output.rglob("*.jsonl"))


def test_a_log_on_s3_converts_like_a_local_one(evalfleet_logs, tmp_path, monkeypatch):
    import boto3

    from shared import storage
    from tests.support.moto import moto_server, s3_environment

    with moto_server(tmp_path / "moto.log") as endpoint:
        for name, value in s3_environment(endpoint, tmp_path).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(storage, "_s3_stores", {})  # S3 clients are made once per location
        boto3.client("s3").create_bucket(Bucket="logs")
        boto3.client("s3").upload_file(evalfleet_logs["target"], "logs", "interop/target.json")
        for fmt in ("eval", "json"):
            remote = convert_to_inspect("s3://logs/interop/target.json", str(tmp_path / "remote"), fmt)
            local = convert_to_inspect(evalfleet_logs["target"], str(tmp_path / "local"), fmt)
            assert Path(remote).name == Path(local).name
            assert Path(remote).read_bytes() == Path(local).read_bytes()


def test_converting_a_file_that_is_not_an_evalfleet_log_is_a_log_error(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}', encoding="utf-8")
    with pytest.raises(LogError, match="not a task result log"):
        convert_to_inspect(str(path), str(tmp_path / "out"))
    assert not list((tmp_path / "out").glob("*"))


# -- layout and memory --------------------------------------------------------------------------------


def test_handovers_use_the_export_layout():
    from services.export import linked_log_path

    assert handover_log_path("my-spec") == linked_log_path("my-spec")


def test_memory_does_not_grow_with_the_sample_count(evalfleet_logs, tmp_path):
    """Converting, and importing a `.json`, hold one sample at a time: 1,700 more samples (several
    MB as objects) cost less than 2 MB more at the peak (bounded buffers and caches)."""
    header = read_log_header(evalfleet_logs["target"])
    template = next(iter_samples(evalfleet_logs["target"]))

    def peaks(count: int) -> list[int]:
        directory = tmp_path / str(count)
        with SampleSpool() as spool:
            for i in range(count):
                spool.add(f"s{i}", template.model_copy(update={"id": f"s{i}", "position": i,
                                                               "output": f"answer {i} " * 40}).model_dump_json())
            location = write_task_result_log(str(directory), "log.json", header, spool)
        found = []
        for fmt, then_import in (("eval", False), ("json", True)):
            tracemalloc.start()
            path = convert_to_inspect(location, str(directory / "inspect"), fmt)
            found.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            if then_import:
                tracemalloc.start()
                import_inspect_log(path, str(directory / "handover"))
                found.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
        return found

    small, large = peaks(300), peaks(2000)
    assert all(b - a < 2_000_000 for a, b in zip(small, large, strict=True)), (small, large)


def test_a_log_with_epochs_reads_in_inspect_with_its_epochs(inspect_python, tmp_path):
    home = tmp_path / "epochs"
    home.mkdir()
    (home / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS[:2]), encoding="utf-8")
    run_file = {"datasets": [{"key": "mini", "path": "data.jsonl"}], "evaluation": {
        "key": "interop-epochs", "epochs": 3, "epoch_reducer": "pass_at_2", "task_specifications": [
            {"key": "target", "task_key": "qa", "model_key": "mock$target", "dataset_key": "mini",
             "task_config": {"scorers": ["exact"]}}]}}
    (home / "run.yaml").write_text(yaml.safe_dump(run_file, sort_keys=False), encoding="utf-8")
    [result] = evalfleet_run(home / "run.yaml", home)["task_results"]
    path = convert_to_inspect(result["log_path"], str(tmp_path / "inspect"), "eval")
    found = run_inspect_script(inspect_python, "read_inspect_logs.py", str(tmp_path / "inspect"), path)["logs"][path]
    assert (found["epochs"], found["epochs_reducer"]) == (3, ["pass_at_2"])
    assert found["dataset_sample_ids"] == ["q1", "q2"]
    assert sorted((s["id"], s["epoch"]) for s in found["samples"]) == [
        (i, e) for i in ("q1", "q2") for e in (1, 2, 3)]
