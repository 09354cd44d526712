"""Controlling runs on a cluster: retrying the failed samples of a run (by id or by log path),
cancelling a run mid-way, and listing runs."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import (
    assert_every_sample_once,
    logs_of,
    openai_model,
    poll,
    prompt_of,
    read_log,
    rows,
    run_file,
    run_progress,
    submit_in_process,
    wait_in_process,
)

pytestmark = pytest.mark.services


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_retry_asks_the_model_only_for_the_failed_samples(redis_cluster, workers, cli, fake_openai):
    samples = rows(10)
    failing = {"s02", "s06"}
    failing_prompts = {prompt_of(r) for r in samples if r["id"] in failing}
    fake_openai.configure(prompt_faults=dict.fromkeys(failing_prompts, "500"))
    model = openai_model("flaky", fake_openai, max_attempts=2)
    path = run_file(redis_cluster.root, "retried", samples, models=[model], fail_on_error=True)
    workers.start(1, concurrency=4, env={"FAKE_OPENAI_KEY": "sk-test"})

    first = cli("run", "-f", str(path), "--json", check=1).json()
    assert first["status"] == "error", first
    old_run_id = first["run_id"]
    [old_log_path] = [t["log_path"] for t in first["task_results"]]
    old_log = read_log(old_log_path)
    assert {s["id"] for s in old_log["samples"] if s["error"]} == failing
    assert all(s["error"]["status_code"] == 500 and s["error"]["attempts"] == 2
               for s in old_log["samples"] if s["error"])
    old_digest = _sha(old_log_path)

    # The provider recovers; the retry asks it only for the two samples that failed.
    fake_openai.configure(prompt_faults={})
    fake_openai.reset()
    retried = cli("retry", old_run_id, "--json", check=0).json()
    assert retried["status"] == "success", retried
    assert retried["retry_of"] == old_run_id and retried["run_id"] != old_run_id
    assert Counter(e["prompt"] for e in fake_openai.requests_log()) == Counter(failing_prompts)
    [log] = logs_of(retried).values()
    assert log["retry_of"] == old_run_id
    assert log["run_id"] == retried["run_id"]
    assert log["task_specification"]["key"] == old_log["task_specification"]["key"] == "retried-qa"
    assert log["status"] == "success"
    assert_every_sample_once(log, [r["id"] for r in samples])
    for sample in log["samples"]:
        assert sample["error"] is None, sample
        assert sample["scores"]["includes"]["value"] == 1.0
        if sample["id"] in failing:
            assert (sample["model_calls"], sample["cached"]) == (1, False), sample
        else:
            assert (sample["model_calls"], sample["cached"]) == (0, True), sample
    assert log["stats"]["model_calls"] == 2
    assert _sha(old_log_path) == old_digest

    # Given the original run's log instead of its id: the same retry of the same run.
    fake_openai.reset()
    by_path = cli("retry", old_log_path, "--json", check=0).json()
    assert by_path["status"] == "success", by_path
    assert by_path["retry_of"] == old_run_id
    assert by_path["run_id"] not in (old_run_id, retried["run_id"])
    [log] = logs_of(by_path).values()
    assert log["retry_of"] == old_run_id
    assert_every_sample_once(log, [r["id"] for r in samples])
    assert all(s["error"] is None for s in log["samples"])
    # Those two are in the result store by now: at most they are asked again, nothing else is.
    assert set(e["prompt"] for e in fake_openai.requests_log()) <= failing_prompts
    assert _sha(old_log_path) == old_digest
    assert read_log(old_log_path) == old_log


def test_cancel_stops_a_run_mid_way_and_writes_what_finished(redis_cluster, redis_url, workers, cli, fake_openai):
    import redis

    samples = rows(60)
    # 60 samples x 1 s on 4 threads: 15 s of work, cancelled after a few.
    fake_openai.configure(latency_ms=1000)
    model = openai_model("slow", fake_openai)
    path = run_file(redis_cluster.root, "cancelled", samples, models=[model])
    workers.start(1, concurrency=4, env={"FAKE_OPENAI_KEY": "sk-test"})
    run_id = cli("run", "-f", str(path), "--detach", check=0).stdout.strip()
    poll(lambda: run_progress(run_id)[0] >= 4, timeout=60, message="no samples done")

    result = cli("cancel", run_id, "--grace", "1", "--json", check=1)
    requests_at_cancel = fake_openai.stats()["requests"]

    report = result.json()
    assert report["status"] == "cancelled", report
    [task_result] = report["task_results"]
    assert task_result["status"] == "cancelled"
    [log] = logs_of(report).values()
    assert log["status"] == "cancelled"
    finished = [s["id"] for s in log["samples"]]
    assert 4 <= len(finished) < len(samples), len(finished)
    assert len(set(finished)) == len(finished)
    assert log["sample_ids"] == finished
    assert all(s["error"] is None for s in log["samples"])
    assert log["results"]["includes"]["scored"] == len(finished)

    # The worker drops the rest of the run's messages without calling the model.
    client = redis.Redis.from_url(redis_url)
    try:
        poll(lambda: client.llen(redis_cluster.queue) == 0, timeout=20, message="the queue was not drained")
    finally:
        client.close()
    time.sleep(2.0)
    stats = fake_openai.stats()
    assert stats["requests"] == requests_at_cancel, (stats["requests"], requests_at_cancel)
    assert stats["in_flight"] == 0
    assert stats["requests"] < len(samples)
    status = cli("status", run_id, "--json", check=1).json()
    assert status["status"] == "cancelled"


def test_list_shows_runs_newest_first_with_status_and_progress(redis_cluster, workers, cli, fake_openai):
    samples = rows(3)
    fake_openai.configure(prompt_faults={prompt_of(samples[1]): "400"})
    ok = run_file(redis_cluster.root, "listed-ok", samples,
                  models=[{"key": "m", "provider": "mock", "name": "target"}])
    bad = run_file(redis_cluster.root, "listed-bad", samples, models=[openai_model("picky", fake_openai)],
                   fail_on_error=True)
    # no-cache: the same samples as `ok` would otherwise be served from the result store at
    # submission, with no worker needed.
    pending = run_file(redis_cluster.root, "listed-pending", samples,
                       models=[{"key": "m", "provider": "mock", "name": "target"}], cache_policy="no-cache")
    workers.start(1, concurrency=4, env={"FAKE_OPENAI_KEY": "sk-test"})
    first = wait_in_process(submit_in_process(ok))
    second = wait_in_process(submit_in_process(bad))
    assert (first["status"], second["status"]) == ("success", "error")
    workers.stop()
    third = submit_in_process(pending)  # no worker left: it stays at 0 of 3

    listed = cli("list", "--json", check=0).json()

    assert [r["run_id"] for r in listed] == [third, second["run_id"], first["run_id"]]
    assert [(r["evaluation"], r["status"], r["done"], r["samples"], r["errors"]) for r in listed] == [
        ("listed-pending", "running", 0, 3, 0),
        ("listed-bad", "error", 3, 3, 1),
        ("listed-ok", "success", 3, 3, 0),
    ]
    assert listed[0]["finished_at"] is None and listed[1]["finished_at"] and listed[2]["finished_at"]
    assert listed[0]["created_at"] >= listed[1]["created_at"] >= listed[2]["created_at"]
