"""Crashes: a worker killed mid-run (Redis and RabbitMQ brokers), an aggregation that never fired or
stalled, and a Redis broker that restarts (losing its queues) in the middle of a run."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.faults.conftest import (
    assert_every_sample_once,
    logs_of,
    openai_model,
    poll,
    prompt_of,
    rows,
    run_file,
    run_progress,
    sqlite_query,
    use_cluster,
)

pytestmark = pytest.mark.services


def _kill_a_worker_mid_run(sandbox, workers, background, *, samples: int, latency_ms: int) -> dict:  # noqa: ANN001
    """Run with two workers, SIGKILL the first once some (not all) samples are done, then wait for
    the waiting `evalfleet run`. Returns its report, after checking the kill did land mid-run."""
    data = rows(samples)
    model = {"key": "slowmock", "provider": "mock", "name": "target", "latency_ms": latency_ms}
    path = run_file(sandbox.root, "crash", data, models=[model])
    victim, survivor = workers.start(2, concurrency=4)
    run = background.start("run", "-f", str(path), "--json")

    def run_id() -> str | None:
        from services.runs import list_runs

        found = list_runs(limit=1)
        return found[0].run_id if found else None

    current = poll(run_id, timeout=60, message="the run was not submitted")
    done_at_kill, total, _ = poll(lambda: (p := run_progress(current))[0] >= 6 and p, timeout=60,
                                  message="no samples done")
    assert "] received" in victim.log(), "the worker to kill holds no messages"
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    assert done_at_kill < total, "the run finished before the kill: make it slower"

    result = run.wait(timeout=120)
    assert result.returncode == 0, str(result)
    report = result.json()
    assert report["run_id"] == current
    assert report["status"] == "success", report
    [task_result] = report["task_results"]
    assert (task_result["done"], task_result["errors"]) == (samples, 0)
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    assert [s["position"] for s in log["samples"]] == list(range(samples))
    assert all(s["error"] is None for s in log["samples"])
    by_worker = Counter(s["worker"].split("@", 1)[0] for s in log["samples"])
    assert sum(n for name, n in by_worker.items() if name != victim.name) > 0, by_worker
    return report


def test_a_killed_worker_loses_no_sample_on_redis(redis_cluster, sqlite_url, workers, background):
    redis_cluster.setenv("EVALFLEET_VISIBILITY_TIMEOUT", "10")
    # 60 samples x 0.4 s on 2 x 4 threads: about 3 s of work. No replacement worker: the survivor
    # sweeps for the killed worker's unacknowledged messages every few seconds and takes them over
    # once the visibility timeout (10 s) has passed; `run` itself waits at most 120 s.
    _kill_a_worker_mid_run(redis_cluster, workers, background, samples=60, latency_ms=400)
    assert sqlite_query(sqlite_url, "SELECT count(*), count(DISTINCT sample_id) FROM sample_results") == [(60, 60)]


def test_a_killed_worker_loses_no_sample_on_rabbitmq(rabbitmq_cluster, workers, background):
    # RabbitMQ redelivers the killed worker's unacknowledged messages as soon as its connection drops.
    _kill_a_worker_mid_run(rabbitmq_cluster, workers, background, samples=60, latency_ms=400)
    from shared.db import get_engine, sample_results

    with get_engine().connect() as connection:
        ids = connection.execute(select(sample_results.c.sample_id)).scalars().all()
    assert len(ids) == len(set(ids)) == 60


def test_status_finishes_an_aggregation_that_never_fired_or_stalled(redis_cluster, workers, cli):
    from shared.db import get_engine, now, runs, task_results

    data = rows(8)
    models = [{"key": "m", "provider": "mock", "name": "target"}]
    path = run_file(redis_cluster.root, "stalled", data, models=models,
                    specs=[{"key": "never-fired", "model_key": "m"}, {"key": "stalled", "model_key": "m"}])
    workers.start(1, concurrency=4)
    finished = cli("run", "-f", str(path), "--json", check=0).json()
    run_id = finished["run_id"]
    logs = {t["key"]: Path(t["log_path"]) for t in finished["task_results"]}
    workers.stop()

    # Undo the aggregation: as if the process that recorded the last sample died before dispatching
    # it (`never-fired`: running, all samples done) or the aggregator died (`stalled`: aggregating).
    for log in logs.values():
        log.unlink()
    t = task_results.c
    with get_engine().begin() as connection:
        connection.execute(update(task_results).where(t.run_id == run_id).values(
            status="running", log_path=None, metrics=None, completed_at=None, claimed_at=None))
        connection.execute(update(task_results).where(t.run_id == run_id, t.spec_key == "stalled").values(
            status="aggregating", claimed_at=now(), aggregator="host:123:dead"))
        connection.execute(update(runs).where(runs.c.id == run_id).values(status="running", finished_at=None))

    # A fresh claim may be an aggregator still at work: left alone (until its owner has not refreshed it
    # for a minute); the other is finished.
    first = cli("status", run_id, "--json", check=0).json()
    by_key = {t["key"]: t for t in first["task_results"]}
    assert first["status"] == "running", first
    assert by_key["never-fired"]["status"] == "success", first
    assert by_key["stalled"]["status"] == "aggregating", first
    assert logs["never-fired"].exists() and not logs["stalled"].exists()

    with get_engine().begin() as connection:
        connection.execute(update(task_results).where(t.run_id == run_id, t.spec_key == "stalled").values(
            claimed_at=now() - timedelta(minutes=2)))
    report = cli("status", run_id, "--json", check=0).json()
    assert report["status"] == "success", report
    for key, log in logs_of(report).items():
        assert Path(next(t["log_path"] for t in report["task_results"] if t["key"] == key)) == logs[key]
        assert log["status"] == "success"
        assert log["run_id"] == run_id
        assert_every_sample_once(log, [r["id"] for r in data])
        assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
    with get_engine().connect() as connection:
        assert connection.execute(select(runs.c.finished_at).where(runs.c.id == run_id)).scalar_one() is not None


def test_a_redis_restart_mid_run_loses_no_sample_and_recomputes_none(sandbox, private_redis, sqlite_url, workers,
                                                                     background, fake_openai):
    use_cluster(sandbox, private_redis.url, sqlite_url)
    data = rows(40)
    # 40 samples x 1 s on 2 x 2 threads: about 10 s of work.
    fake_openai.configure(latency_ms=1000)
    model = openai_model("steady", fake_openai)
    path = run_file(sandbox.root, "restart", data, models=[model], fail_on_error=True)
    workers.start(2, concurrency=2, env={"FAKE_OPENAI_KEY": "sk-test"})
    run = background.start("run", "-f", str(path), "--json")

    def queued() -> int:
        with private_redis.client() as client:
            return client.llen(sandbox.queue)

    poll(lambda: len(_recorded(sqlite_url)) >= 6, timeout=60, message="no samples recorded")
    recorded_before = _recorded(sqlite_url)
    in_flight_at_restart = fake_openai.stats()["in_flight"]
    lost = queued()
    private_redis.restart()
    assert queued() == 0
    assert lost > 0, "nothing was queued at the restart: make the run longer"

    result = run.wait(timeout=150)
    assert result.returncode == 0, str(result)
    report = result.json()
    assert report["status"] == "success", report
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    errors = {s["id"]: s["error"] for s in log["samples"] if s["error"]}
    assert not errors, errors  # see test_a_redis_outage_does_not_turn_a_model_call_into_a_sample_error
    # Samples recorded before the restart were not asked of the model again; in all, no prompt was
    # asked more often than the restart explains (those in flight at that moment).
    requests = Counter(entry["prompt"] for entry in fake_openai.requests_log())
    prompts = {r["id"]: prompt_of(r) for r in data}
    assert {sample_id: requests[prompts[sample_id]] for sample_id in recorded_before} == dict.fromkeys(
        recorded_before, 1)
    assert set(requests) <= set(prompts.values())
    repeated = {prompt: n for prompt, n in requests.items() if n > 1}
    assert sum(requests.values()) <= len(data) + in_flight_at_restart, (repeated, in_flight_at_restart)


def _recorded(sqlite_url: str) -> set[str]:
    """Sample ids with a recorded result (none while the database is not created yet)."""
    if not Path(sqlite_url.removeprefix("sqlite:///")).exists():
        return set()
    try:
        return {sample_id for (sample_id,) in sqlite_query(sqlite_url, "SELECT sample_id FROM sample_results")}
    except sqlite3.OperationalError:  # the schema is not migrated yet
        return set()


@pytest.mark.parametrize("moment", ["during-the-request", "before-the-request"])
def test_a_redis_outage_does_not_turn_a_model_call_into_a_sample_error(sandbox, private_redis, fake_openai, moment):
    """In this process, against a real Redis and the fake server: the sample path of a worker
    (`evaluate_sample` with the `openai` provider and its Redis-leased `max_connections`) while Redis
    is down for about a second, as in a restart."""
    import threading

    from shared.cache_identity import InferenceIdentity
    from shared.plan import ResolvedDataset, ResolvedModel, ResolvedTask
    from shared.samples import Sample
    from workers.limits import reset_limiters
    from workers.providers.openai import OpenAIProvider
    from workers.sample import Execution, evaluate_sample
    from workers.tasks import load_task

    sandbox.setenv("EVALFLEET_REDIS_URL", private_redis.url)
    sandbox.monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    fake_openai.configure(latency_ms=1000)
    reset_limiters()
    model = ResolvedModel(key="outage", provider="openai", name="fake-model", base_url=fake_openai.base_url,
                          api_key_env="FAKE_OPENAI_KEY", timeout=10, max_connections=2)
    task = load_task(ResolvedTask(key="qa", template="qa", config={"scorers": ["includes"],
                                                                   "prompt_template": "{input} | {target}"}),
                     ResolvedDataset(key="d", path=str(sandbox.root / "unused.jsonl")))
    execution = Execution(task_result_id=0, run_id="outage", spec=None, cache_policy="no-cache", task=task,
                          provider=OpenAIProvider(model), identity=InferenceIdentity({}, {}))
    sample = Sample(id="s00", input="question 00", target="answer-00")
    outcome: dict = {}

    def evaluate() -> None:
        outcome["record"] = evaluate_sample(execution, sample, 0, "inline").record

    thread = threading.Thread(target=evaluate, daemon=True)
    try:
        if moment == "during-the-request":
            thread.start()
            fake_openai.wait_for(lambda stats: stats["in_flight"] == 1, timeout=10)
            private_redis.kill()
            fake_openai.wait_for(lambda stats: stats["responses"].get("200") == 1, timeout=10)
            thread.join(15)
            private_redis.start()
        else:
            private_redis.kill()
            thread.start()
            time.sleep(1.0)
            private_redis.start()
            thread.join(15)
        assert not thread.is_alive()
        record = outcome["record"]
        assert record.error is None, f"{record.error.type}: {record.error.message}"
        assert record.output == "question 00 | answer-00"
        assert record.model_calls == 1
    finally:
        reset_limiters()
