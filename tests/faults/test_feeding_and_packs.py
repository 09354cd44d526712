"""Million-sample mechanics at test scale, in cluster mode (real `evalfleet worker` processes on a
Redis broker): the submitter keeps a bounded window of samples in flight, a detached run is fed
by the workers, and the packed result store loses nothing acknowledged when a worker is killed
mid-pack, serves lookups from its packs once Redis is flushed, and can be compacted while a run
reads it."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from shared import keys
from tests.faults.conftest import assert_every_sample_once, logs_of, poll, rows, run_file, run_progress

pytestmark = pytest.mark.services

MOCK = {"key": "mocky", "provider": "mock", "name": "target"}


def _queue_length(redis_url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.llen(queue)
    finally:
        client.close()


def _run_row(database_url: str, run_id: str) -> tuple:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(
                "SELECT r.feeder, t.enqueued, t.done, t.total FROM runs r JOIN task_results t ON t.run_id = r.id "
                "WHERE r.id = :r"), {"r": run_id}).one()
    finally:
        engine.dispose()


def test_a_window_bounds_what_is_in_flight_and_a_detached_run_is_fed_by_the_workers(
        redis_cluster, redis_url, sqlite_url, workers, cli):
    """No worker yet: `run --detach` enqueues one window (100 of 1,000 samples), hands the rest
    over and returns. A worker started later takes the feeding over and the run completes with
    every sample exactly once."""
    redis_cluster.setenv("EVALFLEET_SUBMIT_WINDOW", "100")
    data = rows(1000)
    path = run_file(redis_cluster.root, "windowed", data, models=[MOCK])
    detached = cli("run", "-f", str(path), "--detach", timeout=60)
    assert detached.returncode == 0, str(detached)
    run_id = detached.stdout.strip()
    # The window, not the run, is what waits in the broker.
    assert _queue_length(redis_url, redis_cluster.queue) == 100
    feeder, enqueued, done, total = _run_row(sqlite_url, run_id)
    assert (enqueued, done, total) == (100, 0, 1000)
    assert feeder is not None and feeder.startswith("submitter-")

    workers.start(1, concurrency=8)
    deadline = time.monotonic() + 90
    while run_progress(run_id)[2] == "running" and time.monotonic() < deadline:
        # While it runs, the broker never holds more than a window.
        assert _queue_length(redis_url, redis_cluster.queue) <= 100
        time.sleep(0.05)
    report = json.loads(cli("status", run_id, "--json").stdout)
    assert report["status"] == "success", report
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    feeder, enqueued, done, total = _run_row(sqlite_url, run_id)
    assert (feeder, enqueued, done) == (None, None, 1000)
    assert "feeder went quiet" in workers.workers[0].log()


def _store_stats(cli) -> dict:  # noqa: ANN001
    result = cli("store", "stats", "--json")
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout)


def test_a_worker_killed_mid_pack_loses_no_acknowledged_entry_and_lookups_survive_a_redis_flush(
        redis_cluster, redis_url, workers, cli, background):
    store = redis_cluster.root / "store"
    redis_cluster.setenv("EVALFLEET_STORE_URL", str(store))
    data = rows(3000)
    slow = {**MOCK, "key": "slowish", "latency_ms": 2}
    path = run_file(redis_cluster.root, "packed", data, models=[slow])
    victim, _ = workers.start(2, concurrency=16)
    run = background.start("run", "-f", str(path), "--json")
    run_id = poll(lambda: _latest_run(), timeout=60, message="the run was not submitted")
    # Killed while its journal holds entries not yet in a pack (a pack waits for 256 entries
    # or two seconds).
    poll(lambda: run_progress(run_id)[0] >= 300, timeout=60, message="no samples done")
    journals = list((store / "journal").glob("*.journal"))
    assert journals, "expected entries waiting in a journal"
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    result = run.wait(timeout=150)
    assert result.returncode == 0, str(result)
    [log] = logs_of(result.json()).values()
    assert_every_sample_once(log, [r["id"] for r in data])

    # A worker started on this host packs what the dead one left in its journal.
    workers.start(1, concurrency=4)
    poll(lambda: not list((store / "journal").glob("*.journal")), timeout=60,
         message="the dead worker's journal was not packed")
    stats = _store_stats(cli)
    assert stats["current_entries"] == len(data), stats
    assert stats["packs"] <= len(data) // 100, stats  # hundreds of entries per object, not one each

    # Redis loses everything; the packs answer every lookup: a re-run costs no model call.
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
        assert not client.exists(keys.STORE_INDEX_COMPLETE)
    finally:
        client.close()
    again = cli("run", "-f", str(path), "--json", timeout=150)
    assert again.returncode == 0, str(again)
    [task_result] = again.json()["task_results"]
    assert (task_result["model_calls"], task_result["cache_hits"]) == (0, len(data)), task_result


def test_compaction_while_a_run_reads_the_store_changes_no_answer(redis_cluster, workers, cli, background):
    store = redis_cluster.root / "store"
    redis_cluster.setenv("EVALFLEET_STORE_URL", str(store))
    data = rows(1500)
    workers.start(2, concurrency=8)
    # Two runs with `update`: every entry is written twice, so half of all entries are superseded.
    for _ in range(2):
        path = run_file(redis_cluster.root, "compacted", data, models=[MOCK], cache_policy="update")
        assert cli("run", "-f", str(path), "--json", timeout=150).returncode == 0
    poll(lambda: not list((store / "journal").glob("*.journal")), timeout=30, message="entries not packed")
    before = _store_stats(cli)
    assert before["entries"] == 2 * len(data) and before["current_entries"] == len(data), before

    # A reading run (reuse) and compaction at the same time; its workers read through the packs
    # (Redis flushed), so compaction moves entries under their feet.
    import redis

    client = redis.Redis.from_url(os.environ["EVALFLEET_BROKER_URL"])
    try:
        for key in client.scan_iter(match=keys.cached_result("*")):
            client.delete(key)
        client.delete(keys.STORE_INDEX_COMPLETE)
    finally:
        client.close()
    path = run_file(redis_cluster.root, "compacted", data, models=[MOCK], cache_policy="reuse")
    run = background.start("run", "-f", str(path), "--json")
    compactions = 0
    while run.alive() or compactions == 0:
        compacted = cli("store", "compact", "--min-dead", "0.01", "--json", timeout=60)
        assert compacted.returncode == 0, str(compacted)
        compactions += 1
    result = run.wait(timeout=150)
    assert result.returncode == 0, str(result)
    [task_result] = result.json()["task_results"]
    assert (task_result["model_calls"], task_result["cache_hits"], task_result["errors"]) == (0, len(data), 0)
    # Once nothing else moves entries, one more compaction leaves every entry current but what
    # packs under the threshold keep (compaction leaves a pack less than 1% superseded alone).
    assert cli("store", "compact", "--min-dead", "0.01").returncode == 0
    after = _store_stats(cli)
    assert after["current_entries"] == len(data), after
    assert after["entries"] - after["current_entries"] < 0.01 * after["entries"], after
    assert after["bytes"] < before["bytes"]


def _latest_run() -> str | None:
    from services.runs import list_runs

    found = list_runs(limit=1)
    return found[0].run_id if found else None
