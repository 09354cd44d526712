"""Task result logs as a product: the header-first layout (version 2, version 1 still read), the
Python API (`evalfleet.read_log`, `iter_samples`, `list_logs`, `write_log`), the `evalfleet logs`
commands, retrying one log without the database that produced it, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import evalfleet
from services.cli import main
from shared.log.reader import LogError, LogSummary, retryable
from shared.settings import reset_settings
from workers.sample import reset_worker_state

ROWS = [{"id": f"r{i}", "input": f"question {i}", "target": f"answer {i}"} for i in range(12)]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def run(tmp_path: Path, write_run, key: str = "logs", rows=None, **spec) -> dict:
    evaluation = {"key": key, "display_name": "Logs", "task_specifications": [
        {"key": f"{key}-qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data", **spec}]}
    path = write_run(tmp_path, evaluation, rows=ROWS if rows is None else rows, name=f"{key}.yaml")
    result = cli("run", "-f", str(path), "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def only_log(report: dict) -> str:
    [task_result] = report["task_results"]
    return task_result["log_path"]


def test_the_summary_comes_before_the_samples_and_the_file_is_made_with_the_umask(tmp_path, write_run):
    old = os.umask(0o022)
    try:
        path = only_log(run(tmp_path, write_run))
    finally:
        os.umask(old)
    text = Path(path).read_text()
    order = [text.index(f'"{key}":') for key in ("version", "status", "error", "run_id", "evaluation",
                                                  "task_specification", "sample_count", "results", "stats",
                                                  "sample_ids", "samples")]
    assert order == sorted(order)
    assert json.loads(text)["version"] == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_the_python_api_reads_headers_streams_samples_and_writes_logs(tmp_path, write_run):
    path = only_log(run(tmp_path, write_run))
    header = evalfleet.read_log(path, header_only=True)
    assert (header.status, header.sample_count, header.samples, header.sample_ids) == ("success", 12, None, None)
    assert header.results["includes"].metrics["accuracy"] == 1.0
    streamed = list(evalfleet.iter_samples(path))
    assert [s.id for s in streamed] == [r["id"] for r in ROWS]
    whole = evalfleet.read_log(path)
    assert whole.samples == streamed and whole.sample_ids == [r["id"] for r in ROWS]
    copy = evalfleet.write_log(whole, str(tmp_path / "copies" / "copy.json"))
    assert evalfleet.read_log(copy) == whole
    [summary] = evalfleet.list_logs(str(tmp_path / "copies"))
    assert (summary.spec_key, summary.status, summary.location) == ("logs-qa", "success", copy)


def _as_version_1(path: str, target: Path) -> Path:
    """The same log laid out as version 1 wrote it: the summary after the samples."""
    document = json.loads(Path(path).read_text())
    head = ("version", "run_id", "retry_of", "evaluation", "task_specification", "sample_count", "subsampling")
    tail = ("results", "stats", "status", "samples_errored", "error")
    text = "{" + "".join(f'"{k}": {json.dumps(1 if k == "version" else document[k])}, ' for k in head)
    text += '"sample_ids": ' + json.dumps(document["sample_ids"]) + ', "samples": [\n'
    text += ",\n".join(json.dumps({k: v for k, v in s.items() if k != "attempts"}) for s in document["samples"])
    text += "\n]" + "".join(f', "{k}": {json.dumps(document[k])}' for k in tail) + "}\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def test_version_1_logs_are_still_read(tmp_path, write_run):
    path = only_log(run(tmp_path, write_run))
    old = _as_version_1(path, tmp_path / "old" / "v1.json")
    header = evalfleet.read_log_header(str(old))
    assert (header.version, header.status, header.sample_count) == (1, "success", 12)
    assert [s.id for s in evalfleet.iter_samples(str(old))] == [r["id"] for r in ROWS]
    assert evalfleet.list_logs(str(tmp_path / "old"))[0].version == 1


def test_logs_in_another_layout_are_streamed_by_parsing(tmp_path, write_run):
    path = only_log(run(tmp_path, write_run))
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(Path(path).read_text()), indent=2))
    assert evalfleet.read_log_header(str(pretty)).sample_count == 12
    assert [s.id for s in evalfleet.iter_samples(str(pretty))] == [r["id"] for r in ROWS]


@pytest.mark.parametrize(("content", "said"), [
    ("hello", "not a task result log"),
    ('{"some": "json"}', "not a task result log"),
    (None, "truncated"),
    ("newer", "newer than this evalfleet reads"),
])
def test_bad_logs_are_one_line_naming_the_file(tmp_path, write_run, content, said):
    source = Path(only_log(run(tmp_path, write_run))).read_text()
    bad = tmp_path / "bad.json"
    if content is None:
        bad.write_text(source[: len(source) // 2])
    elif content == "newer":
        bad.write_text(source.replace('"version":2', '"version":3', 1))
    else:
        bad.write_text(content)
    with pytest.raises(LogError) as info:
        if content is None:
            list(evalfleet.iter_samples(str(bad)))
        else:
            evalfleet.read_log_header(str(bad))
    assert str(bad) in str(info.value) and said in str(info.value)
    command = ["logs", "samples", str(bad), "--json"] if content is None else ["logs", "info", str(bad)]
    result = cli(*command)
    assert result.exit_code == 2, result.output
    assert said in result.output and str(bad) in result.output and "Traceback" not in result.output


def test_logs_commands_scan_the_log_directory_not_the_database(tmp_path, write_run):
    good = only_log(run(tmp_path, write_run, key="good"))
    # Another machine: only the log directory, no database.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "logs", elsewhere / "logs")
    (elsewhere / "logs" / "notes.json").write_text('{"not": "a log"}')
    os.chdir(elsewhere)
    listed = cli("logs", "list", "--log-dir", str(elsewhere / "logs"), "--json")
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)
    assert (entry["spec_key"], entry["status"], entry["sample_count"]) == ("good-qa", "success", 12)
    assert entry["metrics"]["includes"]["accuracy"] == 1.0
    assert not (elsewhere / ".evalfleet").exists()
    assert json.loads(cli("logs", "list", "--log-dir", str(elsewhere / "logs"), "--status", "error", "--json")
                      .stdout) == []
    header = json.loads(cli("logs", "info", good, "--header-only", "--json").stdout)
    assert "samples" not in header and header["sample_count"] == 12
    whole = json.loads(cli("logs", "info", good, "--json").stdout)
    assert len(whole["samples"]) == 12
    lines = cli("logs", "samples", good, "--json", "--offset", "2", "--limit", "3").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r2", "r3", "r4"]
    assert cli("logs", "samples", good, "--errors-only", "--json").stdout == ""
    assert json.loads(cli("logs", "schema").stdout) == json.loads(cli("schema").stdout)


def _summary(run_id: str, status: str, retry_of: str | None = None, spec: str = "s") -> LogSummary:
    from datetime import UTC, datetime

    moment = datetime.now(UTC)
    return LogSummary(location=f"{run_id}.json", version=2, evaluation_key="e", spec_key=spec, display_name=spec,
                      run_id=run_id, retry_of=retry_of, status=status, sample_count=1, samples_errored=0, metrics={},
                      started_at=moment, completed_at=moment, model=None, task="qa", dataset="d")


def test_retryable_logs_are_the_failed_ones_no_successful_retry_superseded():
    logs = [_summary("a", "error"), _summary("b", "error", retry_of="a"), _summary("c", "success", retry_of="b"),
            _summary("d", "cancelled"), _summary("e", "error"), _summary("f", "error", retry_of="e"),
            _summary("g", "error", spec="other"), _summary("h", "success", retry_of="g", spec="another")]
    assert [log.run_id for log in retryable(logs)] == ["d", "e", "f", "g"]


def test_retry_of_a_log_reruns_only_its_task_and_needs_no_database(tmp_path, write_run, write_dataset_file,
                                                                  monkeypatch):
    rows = [{**r, "input": f"fail {r['id']}" if i in (3, 7) else r["input"]} for i, r in enumerate(ROWS)]
    evaluation = {"key": "two", "display_name": "Two specs", "fail_on_error": False, "task_specifications": [
        {"key": "flaky", "task_key": "qa", "model_key": "python$python_models:fail_on_marker",
         "dataset_key": "data"},
        {"key": "steady", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data"}]}
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_models")
    reset_settings()
    path = write_run(tmp_path, evaluation, rows=rows)
    first = cli("run", "-f", str(path), "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    flaky = next(t for t in report["task_results"] if t["key"] == "flaky")
    assert flaky["errors"] == 2, report
    # Elsewhere: a new home (no database of the run), the same dataset path.
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "fresh-home"))
    monkeypatch.setenv("EVALFLEET_MODEL_FAILS", "never")
    reset_settings()
    reset_worker_state()  # this process's result writer belongs to the first home's database
    retried = cli("retry", flaky["log_path"], "--json")
    assert retried.exit_code == 0, retried.output
    again = json.loads(retried.stdout)
    assert [t["key"] for t in again["task_results"]] == ["flaky"]
    assert again["retry_of"] == report["run_id"]
    [task_result] = again["task_results"]
    assert (task_result["errors"], task_result["cache_hits"], task_result["model_calls"]) == (0, 10, 2)
    log = evalfleet.read_log(task_result["log_path"])
    assert log.retry_of == report["run_id"] and [s.id for s in log.samples] == [r["id"] for r in ROWS]
