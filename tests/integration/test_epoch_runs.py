"""Epochs end to end on the fake Chat Completions server: one model call per sample per epoch,
scores reduced per sample (hand-computed), every epoch's record in the log, cache keys per epoch
(the first epoch keeps the keys of runs without epochs), and a retry that runs only the failed
epochs."""

from __future__ import annotations

import uuid

import pytest
import yaml

from tests.integration.conftest import only_log, qa_run_file

KEY_VARIABLE = "FAKE_EPOCH_TEST_KEY"
ROWS = [{"id": f"s{i}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(4)]


@pytest.fixture
def api_key(sandbox) -> str:
    key = f"sk-test-{uuid.uuid4().hex}"
    sandbox.setenv(KEY_VARIABLE, key)
    return key


def run_file(sandbox, server, *, epochs: int, reducer: str = "mean", cache_policy: str = "reuse"):
    model = {"key": "fake", "provider": "openai", "name": "gpt-epochs", "base_url": server.base_url,
             "api_key_env": KEY_VARIABLE, "timeout": 10, "max_attempts": 1}
    path = qa_run_file(sandbox.root, len(ROWS), key="epochs", model_key="fake", rows=ROWS, models=[model],
                       scorers=["exact"], fail_on_error=False)
    document = yaml.safe_load(path.read_text())
    document["evaluation"].update(epochs=epochs, epoch_reducer=reducer, cache_policy=cache_policy)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_each_epoch_is_a_model_call_and_scores_reduce_per_sample(sandbox, fake_openai, api_key, cli):
    # Attempt k of a sample's prompt gets the k-th answer: which epoch gets which does not matter.
    fake_openai.configure(answer_sequences={
        "question 0": ["answer-0", "wrong", "answer-0", "answer-0"],  # 3 of 4 correct
        "question 1": ["wrong"],  # none
        "question 2": ["answer-2"],  # all
        "question 3": ["wrong", "wrong", "wrong", "answer-3"],  # 1 of 4
    })
    report = cli("run", "-f", str(run_file(sandbox, fake_openai, epochs=4, reducer="pass_at_2",
                                           cache_policy="no-cache")), "--json", check=0).json()
    [task_result] = report["task_results"]
    assert (task_result["samples"], task_result["done"], task_result["model_calls"]) == (16, 16, 16)
    assert fake_openai.stats()["requests"] == 16
    log = only_log(report)
    assert [(s["id"], s["position"], s["epoch"]) for s in log["samples"][:5]] == [
        ("s0", 0, 1), ("s0", 1, 2), ("s0", 2, 3), ("s0", 3, 4), ("s1", 4, 1)]
    reduced = {s["id"]: s["reduced_scores"]["exact"]["value"] for s in log["samples"] if s["reduced_scores"]}
    # pass@2 over 4 epochs with c correct: 1 - C(4 - c, 2) / C(4, 2)
    assert reduced == pytest.approx({"s0": 1.0, "s1": 0.0, "s2": 1.0, "s3": 0.5})
    assert all(s["reduced_scores"] is None for s in log["samples"] if s["epoch"] != 4)
    result = log["results"]["exact"]
    assert result["scored"] == 4
    assert result["metrics"]["accuracy"] == pytest.approx(0.625)
    assert log["task_specification"]["epochs"] == 4 and log["task_specification"]["epoch_reducer"] == "pass_at_2"


def test_each_epoch_is_its_own_cache_entry_and_the_first_keeps_single_run_keys(sandbox, fake_openai, api_key,
                                                                               cli):
    fake_openai.configure(answers={row["input"]: row["target"] for row in ROWS})
    cli("run", "-f", str(run_file(sandbox, fake_openai, epochs=1)), "--json", check=0)
    assert fake_openai.stats()["requests"] == 4
    report = cli("run", "-f", str(run_file(sandbox, fake_openai, epochs=3)), "--json", check=0).json()
    [task_result] = report["task_results"]
    assert (task_result["model_calls"], task_result["cache_hits"]) == (8, 4)
    assert fake_openai.stats()["requests"] == 12
    again = cli("run", "-f", str(run_file(sandbox, fake_openai, epochs=3)), "--json", check=0).json()
    assert (again["task_results"][0]["model_calls"], again["task_results"][0]["cache_hits"]) == (0, 12)
    assert fake_openai.stats()["requests"] == 12


def test_a_retry_runs_only_the_failed_epochs(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers={row["input"]: row["target"] for row in ROWS},
                          prompt_sequences={"question 1": ["ok", "400", "ok"]})
    report = cli("run", "-f", str(run_file(sandbox, fake_openai, epochs=3, cache_policy="no-cache")), "--json",
                 check=0).json()
    [task_result] = report["task_results"]
    assert (task_result["done"], task_result["errors"]) == (12, 1)
    failed = [s for s in only_log(report)["samples"] if s["error"]]
    assert [s["id"] for s in failed] == ["s1"]
    assert fake_openai.stats()["requests"] == 12

    retried = cli("retry", report["run_id"], "--json", check=0).json()
    assert fake_openai.stats()["requests"] == 13  # the failed epoch only
    log = only_log(retried)
    assert [(s["id"], s["epoch"]) for s in log["samples"]] == [(r["id"], e) for r in ROWS for e in (1, 2, 3)]
    assert all(s["error"] is None for s in log["samples"])
    assert {s["id"]: s["reduced_scores"]["exact"]["value"] for s in log["samples"] if s["reduced_scores"]} == {
        "s0": 1.0, "s1": 1.0, "s2": 1.0, "s3": 1.0}
    assert [s["epoch"] for s in log["samples"] if s["id"] == failed[0]["id"] and s["model_calls"]] == [
        failed[0]["epoch"]]
