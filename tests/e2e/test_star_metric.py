"""The star metric and pass status: declared on the evaluation or a task specification, checked
against the task's scorers, shown in the table, `run --json` and the log, and used as a CI gate
with `run --fail-under`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import evalfleet
from services.cli import main

# `mock$echo` answers with the prompt: "{target}" makes `includes` right on every sample, "x{target}"
# makes `exact` wrong on every sample.
ROWS = [{"id": f"s{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(5)]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def evaluation(star: dict | None = None, spec_star: dict | None = None) -> dict:
    spec = {"key": "qa", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "data",
            "task_config": {"prompt_template": "{target}", "scorers": ["includes"]}}
    if spec_star:
        spec["star_metric"] = spec_star
    other = {"key": "qa-exact", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "data",
             "task_config": {"prompt_template": "x{target}", "scorers": ["exact"]}}
    document = {"key": "starred", "display_name": "Starred", "task_specifications": [spec, other]}
    if star:
        document["star_metric"] = star
    return document


def test_a_star_metric_is_checked_against_the_task_s_scorers(tmp_path, write_run):
    path = write_run(tmp_path, evaluation(star={"metric": "inclde/accuracy", "success_threshold": 0.5}))
    result = cli("run", "-f", str(path))
    assert result.exit_code == 2
    assert "evaluation.star_metric.metric" in result.output
    assert "did you mean 'includes'" in result.output and "includes/accuracy" in result.output
    path = write_run(tmp_path, evaluation(spec_star={"metric": "includes/median", "success_threshold_pct": 50}))
    result = cli("run", "-f", str(path))
    assert result.exit_code == 2 and "task_specifications[0:qa].star_metric.metric" in result.output
    path = write_run(tmp_path, evaluation(star={"metric": "includes", "success_threshold": 0.5,
                                                "success_threshold_pct": 50}))
    assert cli("run", "-f", str(path)).exit_code == 2


def test_pass_status_is_in_the_json_the_table_and_the_log(tmp_path, write_run):
    # The evaluation's star metric names `includes`, which only the first specification reports;
    # the second overrides it with its own.
    document = evaluation(star={"metric": "includes/accuracy", "success_threshold_pct": 80})
    document["task_specifications"][1]["star_metric"] = {"metric": "exact", "success_threshold": 0.5}
    path = write_run(tmp_path, document, rows=ROWS)
    result = cli("run", "-f", str(path), "--json")
    assert result.exit_code == 0, result.output
    by_key = {t["key"]: t for t in json.loads(result.stdout)["task_results"]}
    assert by_key["qa"]["star_metric"] == {"metric": "includes/accuracy", "value": 1.0, "threshold": 0.8,
                                           "pass_status": True}
    assert by_key["qa-exact"]["pass_status"] is False  # "x<target>" never equals the target
    log = evalfleet.read_log(by_key["qa"]["log_path"], header_only=True)
    assert log.star_metric.pass_status is True and log.star_metric.metric == "includes/accuracy"
    table = cli("run", "-f", str(path))
    assert "includes/accuracy 1.000 vs 0.8: pass" in table.stdout
    assert "exact/accuracy 0.000 vs 0.5: FAIL" in table.stdout


@pytest.mark.parametrize(("gate", "exit_code"), [(None, 0), ("star", 1), ("0.5", 1), ("0", 0)])
def test_fail_under_turns_a_missed_star_metric_into_exit_1(tmp_path, write_run, gate, exit_code):
    document = evaluation(star={"metric": "includes/accuracy", "success_threshold_pct": 80})
    document["task_specifications"][1]["star_metric"] = {"metric": "exact/accuracy", "success_threshold": 0.5}
    path = write_run(tmp_path, document, rows=ROWS)
    args = ["run", "-f", str(path)] + ([] if gate is None else ["--fail-under"] if gate == "star"
                                       else ["--fail-under", gate])
    result = cli(*args)
    assert result.exit_code == exit_code, result.output


def test_fail_under_without_a_star_metric_is_bad_input(tmp_path, write_run):
    path = write_run(tmp_path, evaluation(), rows=ROWS)
    result = cli("run", "-f", str(path), "--fail-under")
    assert result.exit_code == 2 and "star_metric" in result.output
