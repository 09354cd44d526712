"""Model-graded scoring on the fake Chat Completions server, with the model under test and the
judge as two model names: grades, partial credit and a reply without a grade; judge usage and
cost; the judge's retries and its max_connections across two workers; and the cache rules, each
counted at the server per model."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import only_log, qa_run_file, write_dataset

UNDER_TEST, JUDGE = "gpt-under-test", "judge-1"
KEY_VARIABLE = "FAKE_JUDGE_TEST_KEY"
ROWS = [{"id": f"s{i}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(5)]
# The model under test answers each question; the judge grades by what the submission says.
ANSWERS = {"question 0": "good 0", "question 1": "good 1", "question 2": "partial 2", "question 3": "bad 3",
           "question 4": "garbled 4"}
VERDICTS = {"[Submission]: good": "It matches the criterion.\nGRADE: C",
            "[Submission]: partial": "Half of it.\nGRADE: P",
            "[Submission]: bad": "Wrong.\nGRADE: I",
            "[Submission]: garbled": "I cannot tell."}
PRICE = {"input_per_million": 1000.0, "output_per_million": 2000.0}


def models(server, *, under_test: str = UNDER_TEST, **judge_fields) -> list[dict]:
    common = {"provider": "openai", "base_url": server.base_url, "api_key_env": KEY_VARIABLE, "timeout": 10}
    return [{"key": "mut", "name": under_test, "max_attempts": 1, **common},
            {"key": "judge", "name": JUDGE, "max_attempts": 3, "retry_timeout": 30, "pricing": PRICE,
             **common, **judge_fields}]


def run_file(sandbox, server, rows=ROWS, *, scorer: dict | None = None, key: str = "judged", **model_fields):
    scorer = scorer or {"name": "model_graded_qa", "judge_model": "judge", "partial_credit": True}
    return qa_run_file(sandbox.root, len(rows), key=key, model_key="mut", rows=rows,
                       models=models(server, **model_fields), scorers=[scorer], fail_on_error=False)


@pytest.fixture
def api_key(sandbox) -> str:
    key = f"sk-test-{uuid.uuid4().hex}"
    sandbox.setenv(KEY_VARIABLE, key)
    return key


def calls_by_model(server) -> dict[str, int]:
    return dict(server.stats()["models"])


def test_grades_reasoning_partial_credit_and_judge_cost(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, model_answers={JUDGE: VERDICTS})
    report = cli("run", "-f", str(run_file(sandbox, fake_openai)), "--json", check=0).json()

    log = only_log(report)
    by_id = {s["id"]: s for s in log["samples"]}
    scores = {i: s["scores"]["model_graded_qa"] for i, s in by_id.items()}
    assert {i: (s["value"], s["answer"]) for i, s in scores.items()} == {
        "s0": (1.0, "C"), "s1": (1.0, "C"), "s2": (0.5, "P"), "s3": (0.0, "I"), "s4": (None, None)}
    assert scores["s0"]["explanation"] == VERDICTS["[Submission]: good"]
    assert "no grade" in scores["s4"]["explanation"] and "I cannot tell." in scores["s4"]["explanation"]
    assert all(s["error"] is None for s in by_id.values())  # a reply without a grade fails the scorer only
    result = log["results"]["model_graded_qa"]
    assert (result["scored"], result["errors"]) == (4, 1)
    assert result["metrics"]["accuracy"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # Every sample made one judge call, recorded with its tokens; the judge's usage and cost are in the stats.
    for sample in by_id.values():
        [judged] = sample["judges"]
        assert (judged["model"], judged["calls"], judged["attempts"]) == ("judge", 1, 1)
        assert judged["input_tokens"] > 20 and judged["output_tokens"] >= 3
    usage = log["stats"]["model_usage"]
    judge_in = sum(s["judges"][0]["input_tokens"] for s in by_id.values())
    judge_out = sum(s["judges"][0]["output_tokens"] for s in by_id.values())
    assert (usage["judge"]["calls"], usage["judge"]["input_tokens"], usage["judge"]["output_tokens"]) == (
        5, judge_in, judge_out)
    assert usage["judge"]["cost_usd"] == pytest.approx((judge_in * 1000 + judge_out * 2000) / 1e6)
    assert usage["mut"]["calls"] == 5 and usage["mut"]["cost_usd"] is None
    # The run's cost (report, table) includes judging.
    [task_result] = report["task_results"]
    assert task_result["usage"]["cost_usd"] == pytest.approx(usage["judge"]["cost_usd"])
    assert calls_by_model(fake_openai) == {UNDER_TEST: 5, JUDGE: 5}
    # The judge saw the question, the submission and the criterion.
    prompts = [e["prompt"] for e in fake_openai.requests_log() if e["model"] == JUDGE]
    assert any("question 0" in p and "[Submission]: good 0" in p and "answer-0" in p for p in prompts)


def test_the_cache_rules_for_judged_scores(sandbox, fake_openai, api_key, cli):
    rows = ROWS[:4]  # graded samples only: a reply without a grade is asked again on every run
    fake_openai.configure(answers=ANSWERS, model_answers={JUDGE: VERDICTS})

    def run(**kwargs) -> dict[str, int]:
        fake_openai.reset()
        report = cli("run", "-f", str(run_file(sandbox, fake_openai, rows, **kwargs)), "--json", check=0).json()
        assert report["status"] == "success", report
        return {model: n for model, n in calls_by_model(fake_openai).items() if n}

    assert run() == {UNDER_TEST: 4, JUDGE: 4}
    assert run() == {}  # reuse: neither model is called
    # Another judge template: re-judged, no call to the model under test.
    assert run(scorer={"name": "model_graded_qa", "judge_model": "judge", "partial_credit": True,
                       "instructions": "Be strict. End with GRADE: C, P or I."}) == {JUDGE: 4}
    # Another judge model (a different generation setting): re-judged only.
    assert run(temperature=0.5) == {JUDGE: 4}
    # Another model under test: new outputs, each judged.
    assert run(under_test="gpt-other") == {"gpt-other": 4, JUDGE: 4}


def test_judge_429s_are_retried_and_counted(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, model_answers={JUDGE: VERDICTS}, retry_after=0.1,
                          prompt_sequences={"[Submission]: good 0": ["429", "ok"]})
    log = only_log(cli("run", "-f", str(run_file(sandbox, fake_openai, ROWS[:2])), "--json", check=0).json())
    by_id = {s["id"]: s for s in log["samples"]}
    assert by_id["s0"]["scores"]["model_graded_qa"]["value"] == 1.0
    assert (by_id["s0"]["judges"][0]["calls"], by_id["s0"]["judges"][0]["attempts"]) == (2, 2)
    assert by_id["s0"]["model_calls"] == 1  # the model under test was called once
    assert log["stats"]["model_usage"]["judge"]["calls"] == 3


def test_a_failed_judge_fails_the_sample_naming_the_judge(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, model_answers={JUDGE: VERDICTS},
                          prompt_faults={"[Submission]: bad": "400"})
    log = only_log(cli("run", "-f", str(run_file(sandbox, fake_openai, ROWS[:4])), "--json", check=0).json())
    failed = {s["id"]: s for s in log["samples"]}["s3"]
    assert failed["error"]["type"] == "JudgeError" and "judge judge" in failed["error"]["message"]
    assert failed["output"] == "bad 3" and failed["model_calls"] == 1
    assert failed["judges"] == [{"model": "judge", "calls": 1, "attempts": 1, "input_tokens": 0,
                                 "output_tokens": 0, "latency_ms": None}]


def test_the_judges_max_connections_hold_across_two_workers(redis_cluster, fake_openai, api_key, cli, workers):
    rows = [{"id": f"s{i}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(24)]
    answers = {row["input"]: f"good {i}" for i, row in enumerate(rows)}
    fake_openai.configure(answers=answers, model_answers={JUDGE: VERDICTS}, latency_ms=150)
    write_dataset(redis_cluster.root / "data" / "capped.jsonl", rows)
    workers.start(2, concurrency=8)
    path = run_file(redis_cluster, fake_openai, rows, key="capped", max_connections=2)
    report = cli("run", "-f", str(path), "--json", check=0).json()
    log = only_log(report)
    assert log["results"]["model_graded_qa"]["metrics"]["accuracy"] == 1.0
    assert {s["worker"].split("@")[0] for s in log["samples"]} == {"w1", "w2"}
    stats = fake_openai.stats()
    assert stats["models"] == {UNDER_TEST: 24, JUDGE: 24}
    assert stats["max_concurrency_by_model"][JUDGE] == 2, stats
    assert stats["max_concurrency_by_model"][UNDER_TEST] > 2, stats
