"""The result store in cluster mode: two `evalfleet worker` subprocesses on a Redis broker (a Redis
database of the test's own, which is also the store's index), PostgreSQL, and a durable store in a
local directory. Entries go to packs (a few hundred per object, not one file per sample). Losing
Redis (FLUSHDB: index and marker gone) costs no model call: lookups read the packs through the
database's durable index; `evalfleet store reindex` rebuilds the Redis index and its marker."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from store_helpers import QA_ROWS, log_of, model_requests, sample_view, task_result, write_qa_run

from shared import keys, packs

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]
N = len(QA_ROWS)


def packed_keys(store: Path) -> set[str]:
    """Inference keys held by the packs of a store directory, read with the pack format alone."""
    found: set[str] = set()
    for path in (store / "packs").glob("*.pack"):
        found |= set(packs.entries_of(path.read_bytes()))
    return found


def wait_until_packed(store: Path, expected: int, timeout: float = 30) -> set[str]:
    """Packs are written a couple of seconds after the entries (the journal holds them meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        found = packed_keys(store)
        journals = list((store / "journal").glob("*.journal")) if (store / "journal").exists() else []
        if len(found) >= expected and not journals:
            return found
        assert time.monotonic() < deadline, (len(found), journals)
        time.sleep(0.2)


def entry_prefix() -> str:
    """The Redis key prefix of the index entry of one inference (layout of shared/keys.py)."""
    return keys.cached_result("")


def index_entries(client) -> set[str]:  # noqa: ANN001
    """Inference keys the Redis index holds an entry for."""
    prefix = entry_prefix()
    return {k.decode()[len(prefix):] for k in client.scan_iter(match=f"{prefix}*", count=1000)}


def test_a_flushed_redis_index_reads_through_the_durable_store_and_reindex_restores_it(
        tmp_path, redis_db, postgres_url, worker_pool, subprocess_cli, fake_llm):
    store = tmp_path / "store"
    env = {**os.environ, "EVALFLEET_BROKER_URL": redis_db.url, "EVALFLEET_DATABASE_URL": postgres_url,
           "EVALFLEET_QUEUE": f"evalfleet-store-{uuid.uuid4().hex[:12]}", "EVALFLEET_STORE_URL": str(store),
           "PYTHONUNBUFFERED": "1"}
    cli = subprocess_cli(env)
    worker_pool.start(2, env, concurrency=4)
    path = write_qa_run(tmp_path, fake_llm.base_url, scorers=["includes", "exact"])

    def run() -> tuple[dict, dict, dict, int]:
        before = model_requests(fake_llm)
        report = cli("run", "-f", path, "--json", check=0).json()
        assert report["status"] == "success", report
        return report, task_result(report, "qa"), log_of(report, "qa"), model_requests(fake_llm) - before

    # 1. Cold: every sample calls the model; results land in the index at once and in packs (not
    # one file per sample) within seconds.
    _, first, first_log, calls = run()
    assert calls == N
    assert (first["model_calls"], first["cache_hits"], first["errors"]) == (N, 0, 0)
    assert len(index_entries(redis_db.client)) == N
    stored = wait_until_packed(store, N)
    assert index_entries(redis_db.client) == stored
    assert not list(store.rglob("*.json")), "entries must be packed, not written one file each"
    pack_files = sorted((store / "packs").glob("*.pack"))
    assert 1 <= len(pack_files) <= 2, pack_files  # one per worker at most for six samples
    workers_seen = {s["worker"].split("@")[0] for s in first_log["samples"]}
    assert workers_seen <= {"w1", "w2"} and workers_seen, workers_seen

    # 2. Redis loses everything: the index, the marker, the broker's state.
    redis_db.client.flushdb()
    assert not redis_db.client.exists(keys.STORE_INDEX_COMPLETE)

    _, second, second_log, calls = run()
    assert calls == 0, "a flushed index must fall back to the durable store, not to the model"
    assert (second["model_calls"], second["cache_hits"], second["errors"]) == (0, N, 0)
    assert [(s["cached"], s["model_calls"]) for s in second_log["samples"]] == [(True, 0)] * N
    assert second["metrics"] == first["metrics"]
    assert sample_view(second_log) == sample_view(first_log)
    assert packed_keys(store) == stored and sorted((store / "packs").glob("*.pack")) == pack_files
    # Read-through wrote what it read back into Redis, and a worker that met the incomplete index
    # rebuilt it in the background and marked it complete.
    assert len(index_entries(redis_db.client)) == N
    deadline = time.monotonic() + 30
    while not redis_db.client.exists(keys.STORE_INDEX_COMPLETE) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_db.client.exists(keys.STORE_INDEX_COMPLETE)

    # 3. `store reindex` copies every durable result into Redis and sets the marker.
    redis_db.client.flushdb()
    reindexed = cli("store", "reindex", "--json", check=0)
    assert json.loads(reindexed.stdout) == {"entries": len(stored)}, reindexed
    assert redis_db.client.exists(keys.STORE_INDEX_COMPLETE)
    assert len(index_entries(redis_db.client)) == N

    # 4. With the marker set the index is trusted: a key missing from Redis is a miss (one model
    # call), even though its blob is still in the durable store.
    dropped = sorted(index_entries(redis_db.client))[0]
    redis_db.client.delete(entry_prefix() + dropped)
    _, third, third_log, calls = run()
    assert calls == 1
    assert (third["model_calls"], third["cache_hits"]) == (1, N - 1)
    assert sum(s["cached"] for s in third_log["samples"]) == N - 1
    assert third["metrics"] == first["metrics"]
