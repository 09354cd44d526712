"""The Redis broker transport keeps one Redis client per channel (kombu's builds one per command),
and the Celery app uses it for redis:// brokers only."""

from __future__ import annotations

from kombu import Connection

from tests.integration.conftest import RABBITMQ_URL, Sandbox
from workers.broker import Transport, transport_for


def test_app_uses_the_transport_for_redis_only(sandbox: Sandbox, redis_url: str, sqlite_url: str) -> None:
    from workers.app import app

    sandbox.use_broker(redis_url, sqlite_url)
    with app.connection_for_write() as connection:
        assert type(connection.transport) is Transport
        assert connection.default_channel.client.ping()
    assert transport_for(RABBITMQ_URL) is None
    assert transport_for("rediss://127.0.0.1:6380/0") is None  # TLS settings come from kombu's own parsing


def test_a_channel_reuses_its_client_until_its_pool_is_replaced(redis_url: str) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.channel()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        given = object()
        with channel.conn_or_acquire(given) as passed:
            assert passed is given

        channel._disconnect_pools()  # what kombu does when the connection is re-established
        with channel.conn_or_acquire() as rebuilt:
            assert rebuilt is not first
            assert rebuilt.connection_pool is channel.pool
            assert rebuilt.ping()


def test_messages_round_trip_with_acknowledgement(redis_url: str) -> None:
    """Publish, consume and acknowledge through the transport: the acknowledgement goes over the
    shared client and removes the message from kombu's unacked bookkeeping."""
    with Connection(redis_url, transport=Transport) as connection:
        queue = connection.SimpleQueue("transport-test")
        for number in range(20):
            queue.put({"n": number})
        received = []
        for _ in range(20):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        assert sorted(received) == list(range(20))
        client = connection.default_channel._create_client()
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
        queue.close()
