"""Cluster-wide limits on model calls. A model's `max_connections` caps its in-flight requests
across every worker and host together: a Redis sorted set of leases, each expiring on its own, so
a worker that dies never leaks capacity. `requests_per_minute` adds a shared per-minute budget.
Without Redis (the embedded default) the same limits hold within the process.

A process keeps a lease it has finished with for a moment (IDLE_S) and gives it to its next
request, so a busy worker takes and returns leases about once per REUSE_S instead of making two
Redis round trips per request. Reuse never stretches a lease: one older than REUSE_S goes back to
Redis, so every request starts with at least its timeout plus a margin of lease left."""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from shared import keys
from shared.plan import ResolvedModel
from shared.process_cache import PerConfiguration
from shared.result_store import redis_client
from shared.settings import get_settings
from workers.telemetry import model_counters

logger = logging.getLogger(__name__)
LEASE_MARGIN_S = 30.0
REDIS_RETRY_S = 0.5
# One thread per process polls for a free lease while the others queue behind it locally, so a
# short poll interval costs Redis a few calls per second per process, not per thread.
WAIT_MIN_S, WAIT_MAX_S = 0.002, 0.02
REUSE_S = LEASE_MARGIN_S / 2  # a lease serves requests for this long after it was taken
IDLE_S = 0.05  # a lease nobody in the process uses goes back to Redis after this long

# KEYS[1] leases zset; ARGV: limit, now, lease expiry, token. Expired leases are dropped first.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[2])) * 1000))
  return 1
end
return 0
"""
# KEYS[1] counter of the current minute; ARGV: limit. Returns 1 when a request may go now.
_TAKE_RPM = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 61) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
"""


class ModelLimiter:
    def __init__(self, model: ResolvedModel, redis=None):  # noqa: ANN001
        self.model = model
        self.redis = redis
        self.lease_s = model.timeout + LEASE_MARGIN_S
        if redis is not None:
            self._acquire_script = redis.register_script(_ACQUIRE)
            self._take_rpm = redis.register_script(_TAKE_RPM)
        self._idle: list[tuple[str, float, float]] = []  # (token, taken at, parked at)
        self._idle_lock = threading.Lock()
        self._has_idle = threading.Event()
        self._returner: threading.Thread | None = None
        self._local = threading.BoundedSemaphore(model.max_connections)
        self._poller = threading.Lock()
        self._local_minute = (0, 0)
        self._local_lock = threading.Lock()
        self._in_flight = model_counters(model.key).in_flight

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the model's connections for the duration of one request."""
        if self.model.requests_per_minute:
            self._wait_for_rpm()
        if self.redis is None:
            with self._local:
                self._in_flight.inc()
                try:
                    yield
                finally:
                    self._in_flight.dec()
            return
        lease = self._reuse() or self._acquire()
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()
            self._put_back(lease)

    def leases_held(self) -> int | None:
        """Unexpired leases of the model across every worker (None without Redis)."""
        if self.redis is None:
            return None
        return self.redis.zcount(keys.model_leases(self.model.key), time.time(), "+inf")

    def _acquire(self) -> tuple[str, float]:
        token = uuid.uuid4().hex
        leases = keys.model_leases(self.model.key)
        delay = WAIT_MIN_S
        with self._poller:
            while True:
                lease = self._reuse()  # one finished while this thread waited
                if lease is not None:
                    return lease
                now = time.time()
                try:
                    if self._acquire_script(keys=[leases],
                                            args=[self.model.max_connections, now, now + self.lease_s, token]):
                        return token, now
                except RedisError as exc:
                    # Redis restarting: wait for it rather than fail the sample; the cap is
                    # kept, since nobody acquires a lease meanwhile.
                    logger.warning("waiting for Redis to take a lease on model %s: %s", self.model.key, exc)
                    delay = REDIS_RETRY_S
                time.sleep(random.uniform(WAIT_MIN_S, delay))
                delay = min(WAIT_MAX_S, delay * 2)

    def _reuse(self) -> tuple[str, float] | None:
        """The most recently finished lease that is still young, if any."""
        stale = []
        lease = None
        with self._idle_lock:
            while self._idle:
                token, taken_at, _ = self._idle.pop()
                if time.time() - taken_at < REUSE_S:
                    lease = token, taken_at
                    break
                stale.append(token)
        self._release(stale)
        return lease

    def _put_back(self, lease: tuple[str, float]) -> None:
        token, taken_at = lease
        if time.time() - taken_at >= REUSE_S:
            self._release([token])
            return
        with self._idle_lock:
            self._idle.append((token, taken_at, time.monotonic()))
            if self._returner is None:
                self._returner = threading.Thread(target=self._return_idle, name="evalfleet-lease-returner",
                                                  daemon=True)
                self._returner.start()
            self._has_idle.set()

    def _return_idle(self) -> None:
        """Give leases back to Redis once nobody in this process has used them for IDLE_S."""
        while True:
            self._has_idle.wait()
            time.sleep(IDLE_S / 2)
            with self._idle_lock:
                horizon = time.monotonic() - IDLE_S
                expired = [token for token, _, parked_at in self._idle if parked_at <= horizon]
                self._idle = [entry for entry in self._idle if entry[2] > horizon]
                if not self._idle:
                    self._has_idle.clear()
            self._release(expired)

    def release_idle(self) -> None:
        """Give back every lease no request is using (the process is stopping)."""
        with self._idle_lock:
            tokens = [token for token, _, _ in self._idle]
            self._idle = []
            self._has_idle.clear()
        self._release(tokens)

    def _release(self, tokens: list[str]) -> None:
        if not tokens:
            return
        try:
            self.redis.zrem(keys.model_leases(self.model.key), *tokens)
        except RedisError:
            pass  # the leases expire by themselves; a paid-for answer must not be lost over it

    def _wait_for_rpm(self) -> None:
        limit = self.model.requests_per_minute
        while True:
            minute = int(time.time() // 60)
            if self.redis is not None:
                allowed = self._take_rpm(keys=[keys.model_minute(self.model.key, minute)], args=[limit])
            else:
                with self._local_lock:
                    current, count = self._local_minute
                    count = count + 1 if current == minute else 1
                    self._local_minute = (minute, count)
                    allowed = count <= limit
            if allowed:
                return
            time.sleep(max(0.01, (minute + 1) * 60 - time.time()) + random.uniform(0, 0.5))


_limiters: PerConfiguration[ModelLimiter] = PerConfiguration(
    lambda model: ModelLimiter(model, redis_client(get_settings())))


def limiter_for(model: ResolvedModel) -> ModelLimiter:
    return _limiters.get(model)


def lease_counts() -> list[tuple[str, int | None, int]]:
    """(model key, leases held across the cluster, max_connections) of each model this process
    has called."""
    # A model whose settings changed between runs has a limiter per version: one row per key.
    latest = {limiter.model.key: limiter for limiter in _limiters.values()}
    return [(key, limiter.leases_held(), limiter.model.max_connections) for key, limiter in latest.items()]


def reset_limiters() -> None:
    release_idle_leases()
    _limiters.clear()


def release_idle_leases() -> None:
    for limiter in _limiters.values():
        limiter.release_idle()


atexit.register(release_idle_leases)
