"""Three hosts (network namespaces on this machine, tests/support/hosts.py) run one evaluation on
Redis and PostgreSQL reached by address over their own links: every sample once, every host does
some, and a host cut off the network mid-run loses nothing: its samples come back by the visibility
timeout and run on the others, and the row lock it held in an open transaction (as a worker does
while it commits results) is dropped by the server instead of stalling every other worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.faults.conftest import assert_every_sample_once, logs_of, poll, rows, run_file
from tests.integration.conftest import Sandbox
from tests.support.hosts import HostNetwork, NamespacesUnavailable
from tests.support.postgres import PrivatePostgres
from tests.support.redis_server import PrivateRedis

pytestmark = pytest.mark.services

HOLD_PROGRESS_ROW = """
import time
from sqlalchemy import text
from shared.db import get_engine
with get_engine().begin() as connection:
    connection.execute(text("UPDATE task_results SET done = done"))
    print("holding", flush=True)
    time.sleep(600)
"""
SAMPLES = 1200
# 3 hosts x 4 slots x 100 ms: about 120 samples/s, so the run is still going when a host is cut.
LATENCY_MS = 100
CONCURRENCY = 4


@dataclass
class Cluster:
    network: HostNetwork
    redis: PrivateRedis
    postgres: PrivatePostgres


@pytest.fixture
def cluster(sandbox: Sandbox) -> Iterator[Cluster]:
    """Three hosts; Redis and PostgreSQL of the test's own, bound to the services' address (the
    bridge, not loopback); the store and the logs in directories every host shares."""
    try:
        network = HostNetwork(3).create()
    except NamespacesUnavailable as exc:
        pytest.skip(f"network namespaces cannot be created here (needs root or CAP_NET_ADMIN): {exc}")
    redis = postgres = None
    try:
        redis = PrivateRedis(sandbox.root / "redis", host=network.services_address)
        redis.start()
        postgres = PrivatePostgres(host=network.services_address)
        postgres.start()
        sandbox.monkeypatch.setenv("EVALFLEET_QUEUE", sandbox.queue)
        sandbox.monkeypatch.setenv("EVALFLEET_STORE_URL", str(sandbox.root / "store"))
        # The smallest the setting allows: a cut-off host's samples come back about 10 s after its
        # last heartbeat.
        sandbox.monkeypatch.setenv("EVALFLEET_VISIBILITY_TIMEOUT", "10")
        sandbox.setenv("EVALFLEET_DATABASE_URL", postgres.url)
        sandbox.setenv("EVALFLEET_BROKER_URL", redis.url)
        yield Cluster(network, redis, postgres)
    finally:
        network.destroy()  # kills whatever still runs on the hosts first
        if redis is not None:
            redis.kill()
        if postgres is not None:
            from shared.db import dispose_engines

            dispose_engines()
            postgres.destroy()


def _samples_per_host(database_url: str) -> Counter:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        found = conn.execute("SELECT split_part(body::json->>'worker', '@', 2), count(*) FROM sample_results "
                             "GROUP BY 1").fetchall()
    return Counter({host: count for host, count in found})


def test_three_hosts_share_a_run_and_one_cut_off_mid_run_loses_nothing(cluster, workers, background):
    network, hosts = cluster.network, cluster.network.hosts
    assert cluster.redis.url.startswith(f"redis://{network.services_address}:")
    assert f"@{network.services_address}:" in cluster.postgres.url
    for host in hosts:
        workers.start(1, concurrency=CONCURRENCY, named=False, on=host.command, wait_ready=False)
    for worker in workers.workers:
        workers.wait_ready(worker)
    model = {"key": "slow", "provider": "mock", "name": "target", "latency_ms": LATENCY_MS}
    ids = [row["id"] for row in rows(SAMPLES)]
    path = run_file(workers.sandbox.root, "hosts", rows(SAMPLES), models=[model])
    run = background.start("run", "-f", str(path), "--json")

    everyone = {host.name for host in hosts}

    def every_host_busy() -> bool:
        done = _samples_per_host(cluster.postgres.url)
        return all(done[name] >= 20 for name in everyone)

    poll(every_host_busy, timeout=30, interval=0.2, message="every host recording samples")
    cut_host = hosts[-1]
    # The worst moment to lose a host: mid-commit, holding the run's progress row, which every
    # worker's next commit waits for.
    holder = subprocess.Popen(cut_host.command(sys.executable, "-c", HOLD_PROGRESS_ROW), env=workers.sandbox.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert holder.stdout.readline().strip() == "holding", holder.stdout.read()
    network.cut(cut_host)
    cut_at = time.monotonic()
    done_at_cut = sum(_samples_per_host(cluster.postgres.url).values())
    assert done_at_cut < SAMPLES / 2, "the run was nearly over before the cut: nothing to show"

    result = run.wait(timeout=60)
    assert result.returncode == 0, str(result)
    recovered_in = time.monotonic() - cut_at
    # The cut-off worker never learns it is cut off: it is stopped the way a lost host is.
    for pid in network.processes(cut_host):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    (log,) = logs_of(result.json()).values()
    assert log["status"] == "success"
    assert_every_sample_once(log, ids)
    assert log["samples_errored"] == 0
    by_host = Counter(sample["worker"].split("@", 1)[1] for sample in log["samples"])
    assert set(by_host) == everyone, by_host
    assert all(count > 0 for count in by_host.values()), by_host
    # What the cut-off host had taken but not recorded ran on the others.
    cut_worker = workers.workers[-1]
    taken = sum(1 for line in cut_worker.log().splitlines() if "] received" in line)
    assert taken > by_host[cut_host.name], (taken, by_host)
    rows_recorded = _samples_per_host(cluster.postgres.url)
    assert sum(rows_recorded.values()) == SAMPLES, rows_recorded
    print(f"samples per host {dict(by_host)}; cut at {done_at_cut}/{SAMPLES} with {taken} taken by "
          f"{cut_host.name}; the run finished {recovered_in:.1f} s after the cut")
