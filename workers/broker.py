"""The Redis broker transport: kombu's, with one Redis client per channel instead of one per
command. kombu builds a fresh `redis.Redis` object for every acknowledgement, every delivery
bookkeeping write and every publish outside a batch; redis-py's constructor copies its table of
response callbacks each time, which made those objects cost more CPU than the Redis commands
they send. A client object is safe to share between threads (its pool hands out connections),
so one per channel does the same work; it is rebuilt when the channel replaces its pool after a
reconnect.

It also lets a live worker say that it still holds its messages. kombu redelivers a message that
stayed unacknowledged longer than the visibility timeout, counted from its delivery; here every
worker process moves the delivery time of each message it holds to "now" every few seconds
(`refresh_held_messages`, called by the worker heartbeat). So only the messages of a worker that
stopped beating (killed, out of memory, host lost) ever come back, a short visibility timeout after
its death, while a live worker's long samples (minutes of retries) are never delivered twice."""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from kombu.transport import memory
from kombu.transport import redis as kombu_redis

_channels: weakref.WeakSet = weakref.WeakSet()


class Channel(kombu_redis.Channel):
    _shared_client = None

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - kombu's signature
        super().__init__(*args, **kwargs)
        _channels.add(self)

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


class _MemoryChannel(memory.Channel):
    _tags = itertools.count()

    def _next_delivery_tag(self) -> str:
        # A counter: the in-process broker's tags need only be unique in this process, and a
        # uuid4 per message (a system call) was a visible share of an embedded run's time.
        return str(next(self._tags))


class MemoryTransport(memory.Transport):
    """The embedded default's in-process broker."""

    Channel = _MemoryChannel


def transport_for(broker_url: str) -> str | None:
    """The transport for a broker URL, or None for kombu's choice (AMQP, TLS Redis, Sentinel:
    their schemes carry settings a class would lose). Named by path, not given as a class: a
    worker's answer to `celery inspect stats` carries it, and a class is not JSON."""
    if broker_url.startswith("redis://"):
        return f"{__name__}:{Transport.__name__}"
    if broker_url.startswith("memory://"):
        return f"{__name__}:{MemoryTransport.__name__}"
    return None


def held_delivery_tags(channel: Channel) -> list[str]:
    """The messages a channel has received and not yet acknowledged or rejected."""
    qos = channel._qos
    if qos is None:
        return []
    for _ in range(5):  # the consumer thread may change the dict while it is copied
        try:
            return [tag for tag in list(qos._delivered) if tag not in qos._dirty]
        except RuntimeError:
            continue
    return []


def refresh_held_messages() -> int:
    """Mark every message this process holds as delivered now, so kombu's visibility sweep leaves
    them alone while the process lives. Returns how many messages were refreshed."""
    refreshed = 0
    for channel in list(_channels):
        tags = held_delivery_tags(channel)
        if not tags:
            continue
        moment = time.time()
        with channel.conn_or_acquire() as client:
            # XX: only update members still there; one acknowledged meanwhile stays gone.
            client.zadd(channel.unacked_index_key, {tag: moment for tag in tags}, xx=True)
        refreshed += len(tags)
    return refreshed


def hand_back_held_messages() -> int:
    """Put every message this process holds back on its queue now (a worker stopping before its
    samples finished). Returns how many went back."""
    returned = 0
    for channel in list(_channels):
        qos = channel._qos
        if qos is None:
            continue
        for tag in held_delivery_tags(channel):
            try:
                # kombu restores to the end consumers take from: handed-back samples go next.
                qos.restore_by_tag(tag)
                returned += 1
            except Exception:  # noqa: BLE001 - what is not restored here comes back by visibility
                continue
    return returned
