"""Cluster-wide model limits (`max_connections` leases in Redis, expiring when their holder dies)
and queue routing (`queue` on a model), with real worker processes."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from tests.faults.conftest import (
    assert_every_sample_once,
    logs_of,
    openai_model,
    rows,
    run_file,
    submit_in_process,
    wait_in_process,
)

pytestmark = pytest.mark.services

CAP = 4


def test_max_connections_holds_across_worker_processes_and_dead_leases_expire(redis_cluster, redis_url, workers,
                                                                              cli, fake_openai):
    import redis

    from shared import keys

    samples = rows(100)
    fake_openai.configure(latency_ms=100)
    model = openai_model("capped", fake_openai, max_connections=CAP)
    path = run_file(redis_cluster.root, "capped", samples, models=[model])
    # Prefetch 1: each worker holds at most 40 messages, so all three take part.
    workers.start(3, concurrency=40, env={"FAKE_OPENAI_KEY": "sk-test", "EVALFLEET_PREFETCH_MULTIPLIER": "1"})

    # Holders that died mid-request left every lease taken; each expires on its own.
    client = redis.Redis.from_url(redis_url)
    leases = keys.model_leases("capped")
    expiry = time.time() + 5
    client.zadd(leases, {f"dead-holder-{i}": expiry for i in range(CAP)})
    try:
        report = wait_in_process(submit_in_process(path), timeout=90)
        # Workers give an idle lease back 50 ms after its last request, on a thread of their own.
        deadline = time.monotonic() + 5
        while (remaining := client.zcard(leases)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()

    assert report["status"] == "success", report
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in samples])
    assert all(s["error"] is None for s in log["samples"])
    stats = fake_openai.stats()
    assert stats["requests"] == len(samples), stats
    assert stats["max_concurrency"] <= CAP, stats
    assert stats["max_concurrency"] == CAP, stats
    # Nothing reached the model while the dead leases held all the capacity...
    first_request = min(entry["t"] for entry in fake_openai.requests_log())
    assert first_request >= expiry - 0.05, (first_request, expiry)
    # ...and every lease, dead or alive, is gone afterwards.
    assert remaining == 0
    by_worker = Counter(s["worker"].split("@", 1)[0] for s in log["samples"])
    assert set(by_worker) == {"w1", "w2", "w3"}, by_worker


def test_each_model_is_served_only_by_the_workers_of_its_queue(redis_cluster, workers, cli):
    suffix = uuid.uuid4().hex[:8]
    fast_queue, slow_queue = f"fast-{suffix}", f"slow-{suffix}"
    models = [
        {"key": "fast", "provider": "mock", "name": "target", "queue": fast_queue},
        {"key": "slow", "provider": "mock", "name": "target", "queue": slow_queue, "latency_ms": 20},
    ]
    samples = rows(12)
    path = run_file(redis_cluster.root, "routed", samples, models=models,
                    specs=[{"key": "on-fast", "model_key": "fast"}, {"key": "on-slow", "model_key": "slow"}])
    fast_worker, slow_worker = workers.start(1, concurrency=4, queues=fast_queue) + workers.start(
        1, concurrency=4, queues=slow_queue)

    result = cli("run", "-f", str(path), "--json", check=0)

    report = result.json()
    assert report["status"] == "success", report
    logs = logs_of(report)
    assert set(logs) == {"on-fast", "on-slow"}
    for key, expected in (("on-fast", fast_worker.name), ("on-slow", slow_worker.name)):
        log = logs[key]
        assert_every_sample_once(log, [r["id"] for r in samples])
        assert {s["worker"].split("@", 1)[0] for s in log["samples"]} == {expected}, key
        assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
