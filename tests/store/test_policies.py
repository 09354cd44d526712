"""Cache policies in embedded mode, observed by counting model calls three ways: requests at the
fake OpenAI server, `model_calls`/`cache_hits` of `run --json`, and `cached`/`model_calls` of each
sample in the task result log.

reuse: read and write; update: write only; no-cache: neither. A change of scorer config only
reuses the model outputs and scores them again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from store_helpers import QA_ROWS, log_of, model_requests, sample_view, task_result, write_qa_run

pytestmark = pytest.mark.timeout(120)
N = len(QA_ROWS)


def run_counted(cli, server, path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """(report, the qa task result, its log, requests the server received during the run)."""
    before = model_requests(server)
    report = cli("run", "-f", path, "--json", check=0).json()
    calls = model_requests(server) - before
    assert report["status"] == "success", report
    return report, task_result(report, "qa"), log_of(report, "qa"), calls


def assert_called(result: dict[str, Any], log: dict[str, Any], calls: int) -> None:
    """Every sample went to the model, once, and was not served from the cache."""
    assert calls == N
    assert (result["samples"], result["done"], result["errors"]) == (N, N, 0)
    assert (result["model_calls"], result["cache_hits"]) == (N, 0)
    assert [(s["cached"], s["model_calls"]) for s in log["samples"]] == [(False, 1)] * N
    assert (log["stats"]["model_calls"], log["stats"]["cache_hits"]) == (N, 0)


def assert_reused(result: dict[str, Any], log: dict[str, Any], calls: int) -> None:
    """No sample went to the model; every one came from the cache."""
    assert calls == 0
    assert (result["samples"], result["done"], result["errors"]) == (N, N, 0)
    assert (result["model_calls"], result["cache_hits"]) == (0, N)
    assert [(s["cached"], s["model_calls"]) for s in log["samples"]] == [(True, 0)] * N
    assert (log["stats"]["model_calls"], log["stats"]["cache_hits"]) == (0, N)


def outputs(log: dict[str, Any]) -> list[str]:
    return [s["output"] for s in log["samples"]]


def test_reuse_twice_makes_no_model_call_the_second_time(tmp_path, cli, fake_llm):
    path = write_qa_run(tmp_path, fake_llm.base_url, policy="reuse", scorers=["includes", "exact"])

    _, first, first_log, calls = run_counted(cli, fake_llm, path)
    assert_called(first, first_log, calls)
    assert first["metrics"]["includes"]["accuracy"] == pytest.approx(0.5)
    assert outputs(first_log) == [f"Q: {row['input']}" for row in QA_ROWS]

    _, second, second_log, calls = run_counted(cli, fake_llm, path)
    assert_reused(second, second_log, calls)
    assert second["metrics"] == first["metrics"]
    assert second_log["results"] == first_log["results"]
    assert sample_view(second_log) == sample_view(first_log)
    assert [s["usage"] for s in second_log["samples"]] == [s["usage"] for s in first_log["samples"]]


def test_update_never_reads_but_writes(tmp_path, cli, fake_llm):
    path = write_qa_run(tmp_path, fake_llm.base_url, policy="update")
    reuse = write_qa_run(tmp_path, fake_llm.base_url, policy="reuse", name="reuse.yaml")

    _, first, first_log, calls = run_counted(cli, fake_llm, path)
    assert_called(first, first_log, calls)

    fake_llm.configure(reply="fixed", answer="a fresh answer")
    _, second, second_log, calls = run_counted(cli, fake_llm, path)
    assert_called(second, second_log, calls)  # the first run's outputs were cached, yet not read
    assert outputs(second_log) == ["a fresh answer"] * N

    fake_llm.configure(reply="fixed", answer="never asked")
    _, third, third_log, calls = run_counted(cli, fake_llm, reuse)
    assert_reused(third, third_log, calls)
    assert outputs(third_log) == ["a fresh answer"] * N  # what `update` wrote last, over the first run's


def test_no_cache_neither_reads_nor_writes(tmp_path, cli, fake_llm):
    no_cache = write_qa_run(tmp_path, fake_llm.base_url, policy="no-cache")
    reuse = write_qa_run(tmp_path, fake_llm.base_url, policy="reuse", name="reuse.yaml")

    _, first, first_log, calls = run_counted(cli, fake_llm, no_cache)
    assert_called(first, first_log, calls)

    _, second, second_log, calls = run_counted(cli, fake_llm, reuse)
    assert_called(second, second_log, calls)  # `no-cache` wrote nothing

    fake_llm.configure(reply="fixed", answer="not for the cache")
    _, third, third_log, calls = run_counted(cli, fake_llm, no_cache)
    assert_called(third, third_log, calls)  # the cache `reuse` filled was not read
    assert outputs(third_log) == ["not for the cache"] * N

    _, fourth, fourth_log, calls = run_counted(cli, fake_llm, reuse)
    assert_reused(fourth, fourth_log, calls)
    assert outputs(fourth_log) == outputs(second_log)  # `no-cache` overwrote nothing either


def test_a_scorer_config_change_rescores_cached_outputs_without_model_calls(tmp_path, cli, fake_llm):
    original = write_qa_run(tmp_path, fake_llm.base_url, name="original.yaml",
                            scorers=["includes", {"name": "regex", "pattern": r"Q: (\w+)"}])
    new_pattern = write_qa_run(tmp_path, fake_llm.base_url, name="new-pattern.yaml",
                               scorers=["includes", {"name": "regex", "pattern": r"^(\w+)"}])
    added_scorer = write_qa_run(tmp_path, fake_llm.base_url, name="added-scorer.yaml",
                                scorers=["includes", {"name": "regex", "pattern": r"Q: (\w+)"}, "exact"])
    new_prompt = write_qa_run(tmp_path, fake_llm.base_url, name="new-prompt.yaml",
                              scorers=["includes", {"name": "regex", "pattern": r"Q: (\w+)"}],
                              prompt_template="Question: {input}")

    _, first, first_log, calls = run_counted(cli, fake_llm, original)
    assert_called(first, first_log, calls)
    assert first["metrics"]["regex"]["accuracy"] == pytest.approx(0.5)
    assert [s["scores"]["regex"]["answer"] for s in first_log["samples"]] == [r["input"] for r in QA_ROWS]

    _, rescored, rescored_log, calls = run_counted(cli, fake_llm, new_pattern)
    assert_reused(rescored, rescored_log, calls)
    assert outputs(rescored_log) == outputs(first_log)
    assert [s["scores"]["regex"]["answer"] for s in rescored_log["samples"]] == ["Q"] * N
    assert rescored["metrics"]["regex"]["accuracy"] == 0.0  # scored again, not the cached 0.5
    assert rescored["metrics"]["includes"] == first["metrics"]["includes"]

    _, added, added_log, calls = run_counted(cli, fake_llm, added_scorer)
    assert_reused(added, added_log, calls)
    assert set(added["metrics"]) == {"includes", "regex", "exact"}
    assert added["metrics"]["exact"]["accuracy"] == 0.0
    assert all(set(s["scores"]) == {"includes", "regex", "exact"} for s in added_log["samples"])
    assert added["metrics"]["regex"] == first["metrics"]["regex"]

    # The prompt is part of the inference identity: a new template is a new inference.
    _, prompted, prompted_log, calls = run_counted(cli, fake_llm, new_prompt)
    assert_called(prompted, prompted_log, calls)
    assert outputs(prompted_log) == [f"Question: {row['input']}" for row in QA_ROWS]


FIRST_WORD = [{"name": "regex", "pattern": r"^(\w+)"}]
AFTER_Q = [{"name": "regex", "pattern": r"Q: (\w+)"}]


@pytest.mark.parametrize("index", [
    "durable store only",
    pytest.param("redis index"),
])
def test_scores_cached_for_an_output_that_update_replaced_are_not_served(index, tmp_path, cli, fake_llm, request,
                                                                        monkeypatch):
    """Scores belong to the output they were computed from: once `update` replaced an output, the
    scores an earlier scorer config computed from the old output must not come back with it."""
    if index == "redis index":
        monkeypatch.setenv("EVALFLEET_REDIS_URL", request.getfixturevalue("redis_db").url)
    after_q = write_qa_run(tmp_path, fake_llm.base_url, name="after-q.yaml", scorers=AFTER_Q)
    first_word = write_qa_run(tmp_path, fake_llm.base_url, name="first-word.yaml", scorers=FIRST_WORD)
    update = write_qa_run(tmp_path, fake_llm.base_url, name="update.yaml", scorers=AFTER_Q, policy="update")

    _, result, log, calls = run_counted(cli, fake_llm, after_q)
    assert_called(result, log, calls)
    _, result, log, calls = run_counted(cli, fake_llm, first_word)  # rescored: cached under this config too
    assert_reused(result, log, calls)
    assert [s["scores"]["regex"]["answer"] for s in log["samples"]] == ["Q"] * N

    fake_llm.configure(reply="fixed", answer="fresh answer")
    _, result, log, calls = run_counted(cli, fake_llm, update)
    assert_called(result, log, calls)
    assert outputs(log) == ["fresh answer"] * N

    _, result, log, calls = run_counted(cli, fake_llm, first_word)
    assert calls == 0 and result["model_calls"] == 0
    assert outputs(log) == ["fresh answer"] * N
    assert [s["scores"]["regex"]["answer"] for s in log["samples"]] == ["fresh"] * N, (
        "scores computed from the replaced output were served with the new one")
