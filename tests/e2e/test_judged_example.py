"""The judged example (examples/judged.yaml) offline: model-graded scorers with the mock grader as
judge, their verdicts and judge usage in the log, and a re-run served whole from the store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import evalfleet
from services.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "judged.yaml"


def run() -> dict:
    result = CliRunner().invoke(main, ["run", "-f", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_judged_example_grades_with_the_mock_judge_and_reuses_its_verdicts(tmp_path):
    first = run()
    [task_result] = first["task_results"]
    assert (task_result["status"], task_result["samples"], task_result["errors"]) == ("success", 20, 0)
    assert task_result["metrics"]["model_graded_qa"]["accuracy"] == 1.0
    assert task_result["metrics"]["model_graded_fact"]["accuracy"] == 1.0
    assert task_result["star_metric"]["pass_status"] is True
    log = evalfleet.read_log(task_result["log_path"])
    sample = log.samples[0]
    assert sample.scores["model_graded_qa"].answer == "C"
    assert sample.scores["model_graded_qa"].explanation.endswith("GRADE: C")
    assert [j.model for j in sample.judges] == ["mock$grader", "mock$grader"]
    assert log.stats.model_usage["mock$grader"].calls == 40
    again = run()["task_results"][0]
    assert (again["model_calls"], again["cache_hits"]) == (0, 20)
    assert all(not s.judges for s in evalfleet.read_log(again["log_path"]).samples)
