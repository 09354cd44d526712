"""The Redis broker transport: kombu's, with one Redis client per channel instead of one per
command. kombu builds a fresh `redis.Redis` object for every acknowledgement, every delivery
bookkeeping write and every publish outside a batch; redis-py's constructor copies its table of
response callbacks each time, which made those objects cost more CPU than the Redis commands
they send. A client object is safe to share between threads (its pool hands out connections),
so one per channel does the same work; it is rebuilt when the channel replaces its pool after a
reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None) -> Iterator:  # noqa: ANN001 - kombu's signature
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> type[Transport] | None:
    """The transport class for a broker URL, or None for kombu's choice (AMQP, memory, TLS
    Redis, Sentinel: their schemes carry settings a class would lose)."""
    return Transport if broker_url.startswith("redis://") else None
