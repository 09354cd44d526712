"""Large prompts: `log_prompts: reference` logs a prompt rendered from the task's template as the
template's hash plus the fields it was rendered with (the template is in the log once, in the
task specification); readers rebuild the very prompt that was sent; such a log uploads into
the result store under the same keys as the run that wrote it. Logs whose sample bodies are
large are assembled row by row, in order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

import evalfleet
from services.cli import main
from shared.db import get_engine, sample_results, task_results
from shared.settings import reset_settings
from workers.sample import reset_worker_state

ROWS = [{"id": f"r{i}", "input": f"question {i}", "target": "B", "options": ["x", f"y{i}", "z"]}
        for i in range(8)]
SHOTS = "Example: the answer to everything is 42.\n" * 2000  # ~80 KB: read row by row when logged
QA_TEMPLATE = SHOTS + "Q: {input}\nA:"
MC_TEMPLATE = "Pick one for {input}:\n{choices}\nLetter:"


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluation(key: str, log_prompts: str) -> dict:
    return {"key": key, "log_prompts": log_prompts, "task_specifications": [
        {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data",
         "task_config": {"prompt_template": QA_TEMPLATE, "scorers": ["exact"]}},
        {"key": "mc", "task_key": "multiple-choice", "model_key": "mock$echo", "dataset_key": "data",
         "task_config": {"prompt_template": MC_TEMPLATE, "choices_field": "options"}},
    ]}


def run(path: Path) -> dict:
    result = cli("run", "-f", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def logs_by_key(report: dict) -> dict[str, evalfleet.TaskResultLog]:
    return {t["key"]: evalfleet.read_log(t["log_path"]) for t in report["task_results"]}


def test_reference_logging_rebuilds_the_prompts_a_full_log_holds(tmp_path, write_run):
    full_report = run(write_run(tmp_path, evaluation("full", "full"), rows=ROWS, name="full.yaml"))
    full = logs_by_key(full_report)
    referenced_report = run(write_run(tmp_path, evaluation("ref", "reference"), rows=ROWS, name="ref.yaml"))
    referenced = logs_by_key(referenced_report)
    for key in ("qa", "mc"):
        log, reference_log = full[key], referenced[key]
        assert reference_log.evaluation.log_prompts == "reference" and log.evaluation.log_prompts == "full"
        template = reference_log.task_specification.task.config["prompt_template"]
        for sample, logged in zip(log.samples, reference_log.samples, strict=True):
            assert sample.prompt is not None and sample.prompt_ref is None
            assert logged.prompt is None
            assert logged.prompt_ref.template_sha256 == hashlib.sha256(template.encode()).hexdigest()
            assert evalfleet.prompt_of(logged, reference_log) == sample.prompt
            assert logged.output == sample.output and logged.scores == sample.scores
    assert referenced["mc"].samples[0].prompt_ref.fields == {"choices": "A) x\nB) y0\nC) z"}
    # The echo model answered with the prompt it was sent: the rebuilt prompt is that prompt.
    assert all(s.output == evalfleet.prompt_of(s, referenced["mc"]) for s in referenced["mc"].samples)
    # Neither the database nor the log holds the template once per sample.
    def longest_body(report: dict) -> int:
        with get_engine().connect() as connection:
            return connection.execute(
                select(func.max(func.length(sample_results.c.body)))
                .join(task_results, task_results.c.id == sample_results.c.task_result_id)
                .where(task_results.c.run_id == report["run_id"])).scalar()

    assert longest_body(full_report) > len(SHOTS) > 50 * longest_body(referenced_report)
    qa_log = Path(next(t for t in referenced_report["task_results"] if t["key"] == "qa")["log_path"])
    assert qa_log.stat().st_size < 2 * len(QA_TEMPLATE) + 20_000


def test_a_template_changed_under_a_reference_log_is_an_error_not_a_wrong_prompt(tmp_path, write_run):
    log = logs_by_key(run(write_run(tmp_path, evaluation("ref", "reference"), rows=ROWS)))["qa"]
    log.task_specification.task.config["prompt_template"] = "Q: {input}"
    try:
        evalfleet.prompt_of(log.samples[0], log)
    except ValueError as exc:
        assert "prompt template" in str(exc)
    else:
        raise AssertionError("a prompt was rebuilt from another template")


def test_a_reference_log_uploaded_elsewhere_serves_the_original_run_from_the_cache(tmp_path, write_run,
                                                                                    monkeypatch):
    source = write_run(tmp_path / "source", evaluation("ref", "reference"), rows=ROWS)
    report = run(source)
    out = tmp_path / "export"
    exported = cli("export", "eval", report["run_id"], "--output", out, "--link-logs")
    assert exported.exit_code == 0, exported.output
    # A fresh installation: its own database, result store and logs.
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "fresh" / "home"))
    monkeypatch.setenv("EVALFLEET_LOG_DIR", str(tmp_path / "fresh" / "logs"))
    reset_settings()
    reset_worker_state()
    uploaded = run(exported.stdout.strip())
    assert all(t["model_calls"] == 0 for t in uploaded["task_results"])
    again = run(source)
    for task_result in again["task_results"]:
        assert (task_result["model_calls"], task_result["cache_hits"]) == (0, len(ROWS)), task_result


def test_large_bodies_are_logged_whole_and_in_order(tmp_path, write_run):
    rows = [{"id": f"s{i}", "input": f"question {i}", "target": "x"} for i in range(30)]
    report = run(write_run(tmp_path, {"key": "big", "task_specifications": [
        {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data",
         "task_config": {"prompt_template": QA_TEMPLATE}}]}, rows=rows))
    log = logs_by_key(report)["qa"]
    assert [s.id for s in log.samples] == [r["id"] for r in rows]
    assert [s.prompt for s in log.samples] == [QA_TEMPLATE.format(input=r["input"]) for r in rows]


def test_the_inspect_form_of_a_reference_log_carries_the_full_prompts(tmp_path, write_run):
    from shared.interop.inspect.writer import convert_to_inspect

    report = run(write_run(tmp_path, evaluation("ref", "reference"), rows=ROWS))
    qa = next(t for t in report["task_results"] if t["key"] == "qa")
    converted = json.loads(Path(convert_to_inspect(qa["log_path"], str(tmp_path / "inspect"), "json")).read_text())
    sent = [sample["messages"][0]["content"] for sample in converted["samples"]]
    assert sent == [QA_TEMPLATE.format(input=row["input"]) for row in ROWS]
