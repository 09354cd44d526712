"""Leases of `max_connections` on a real Redis: a process reuses the lease it just finished with
instead of taking a new one, gives idle leases back within moments, never reuses an old lease,
and two processes together never hold more than the cap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from shared import keys
from shared.plan import ResolvedModel
from workers import limits
from workers.limits import ModelLimiter


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _model(cap: int) -> ResolvedModel:
    return ResolvedModel(key="leased", provider="openai", name="m", max_connections=cap, timeout=10)


def _tokens(client: redis.Redis) -> set[bytes]:
    return set(client.zrange(keys.model_leases("leased"), 0, -1))


def test_consecutive_requests_share_one_lease_which_goes_back_when_idle(client: redis.Redis) -> None:
    limiter = ModelLimiter(_model(4), client)
    seen = []
    for _ in range(20):
        with limiter.slot():
            seen.append(_tokens(client))
    assert all(len(tokens) == 1 for tokens in seen)
    assert len(set().union(*seen)) == 1  # one lease served all twenty requests

    deadline = time.monotonic() + 2
    while _tokens(client) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _tokens(client) == set()  # returned by the process after IDLE_S without use


def test_a_lease_past_its_reuse_window_is_replaced(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = ModelLimiter(_model(4), client)
    with limiter.slot():
        [first] = _tokens(client)
    monkeypatch.setattr(limits, "REUSE_S", 0.0)  # every lease is now too old to hand on
    with limiter.slot():
        [second] = _tokens(client)
    assert second != first
    limiter.release_idle()
    assert _tokens(client) == set()


def test_two_processes_never_exceed_the_cap_together(client: redis.Redis) -> None:
    cap = 5
    processes = [ModelLimiter(_model(cap), client), ModelLimiter(_model(cap), client)]
    in_flight = peak = 0
    served = [0, 0]
    lock = threading.Lock()

    def requests(index: int) -> None:
        nonlocal in_flight, peak
        for _ in range(30):
            with processes[index % 2].slot():
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                    served[index % 2] += 1
                time.sleep(0.002)
                with lock:
                    in_flight -= 1

    threads = [threading.Thread(target=requests, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert peak == cap
    assert served == [360, 360]
    assert client.zcard(keys.model_leases("leased")) <= cap
    for limiter in processes:
        limiter.release_idle()
    assert _tokens(client) == set()
