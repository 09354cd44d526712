"""Workers added and removed mid-run as KEDA would (services/autoscaling.py, fed the real queue
depth): an added worker takes samples as soon as it is up, and a worker stopped with SIGTERM
loses none: every sample is recorded once, none reaches the model twice, and the samples the
stopped worker held run at once on the other, without waiting for the visibility timeout."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime

import pytest

from services.autoscaling import Autoscaler, ScalingPolicy
from tests.faults.conftest import assert_every_sample_once, logs_of, poll, rows, run_file

pytestmark = pytest.mark.services

SAMPLES = 1_600
# 8 slots x 100 ms: 80 samples/s per worker, so the queue is still deep when the second one starts.
LATENCY_MS, CONCURRENCY = 100, 8
POLICY = ScalingPolicy(target=400, min_replicas=1, max_replicas=2, scale_down_window_s=0, cooldown_s=0)


def test_a_worker_added_mid_run_works_at_once_and_one_stopped_mid_run_loses_nothing(redis_cluster, workers,
                                                                                     background):
    from workers.app import queue_depth

    (first,) = workers.start(1, concurrency=CONCURRENCY)
    model = {"key": "slow", "provider": "mock", "name": "target", "latency_ms": LATENCY_MS}
    path = run_file(redis_cluster.root, "scaling", rows(SAMPLES), models=[model])
    run = background.start("run", "-f", str(path), "--json")
    poll(lambda: (queue_depth(redis_cluster.queue) or 0) > SAMPLES // 2, timeout=30, message="the queue filling")

    scaler = Autoscaler(POLICY, replicas=1)
    decisions = []
    added = added_spawned = added_ready = stopped_at = None
    while run.alive():
        depth = queue_depth(redis_cluster.queue) or 0
        replicas = scaler.decide(time.monotonic(), depth)
        decisions.append((depth, replicas))
        if replicas == 2 and added is None:
            added_spawned = time.time()
            (added,) = workers.start(1, concurrency=CONCURRENCY, wait_ready=False)
        if added is not None and added_ready is None and " ready." in added.log():
            added_ready = time.time()
        if replicas == 1 and added_ready is not None and stopped_at is None:
            first.process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
        time.sleep(0.2)
    finished_at = time.monotonic()
    assert added is not None and stopped_at is not None, decisions

    result = run.wait()
    assert result.returncode == 0, str(result)
    (log,) = logs_of(result.json()).values()
    assert_every_sample_once(log, [row["id"] for row in rows(SAMPLES)])
    assert log["samples_errored"] == 0
    assert result.json()["task_results"][0]["model_calls"] == SAMPLES  # none sent to the model twice
    assert first.process.wait(30) == 0  # a graceful stop

    by_worker = Counter(s["worker"].split("@", 1)[0] for s in log["samples"])
    assert set(by_worker) == {first.name, added.name} and min(by_worker.values()) > 0, by_worker
    first_started = min(datetime.fromisoformat(s["started_at"]).timestamp() for s in log["samples"]
                        if s["worker"].startswith(f"{added.name}@"))
    # "At once": the added worker's first sample began within moments of its being ready.
    assert first_started - added_ready < 3, (first_started - added_ready, first_started - added_spawned)
    # What the stopped worker held came back at once (the visibility timeout is 30 s).
    assert finished_at - stopped_at < 20, finished_at - stopped_at
    print(f"decisions (depth, replicas): {decisions[0]} ... {decisions[-1]}; added worker: spawn -> ready "
          f"{added_ready - added_spawned:.1f} s, ready -> first sample {first_started - added_ready:.2f} s; "
          f"run finished {finished_at - stopped_at:.1f} s after the SIGTERM; samples per worker {dict(by_worker)}")
