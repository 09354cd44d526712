"""The Celery app and its configuration. Messages are JSON only (pickle is never accepted), sample
tasks are acknowledged late so a lost worker loses no sample, and no task result backend is used:
results go to the database, which is the single account of every sample."""

from __future__ import annotations

import itertools
import re
import uuid
from contextlib import ExitStack

from celery import Celery
from celery.app.amqp import task_message

from shared.plan import ResolvedTaskSpec
from shared.redact import mask_url
from shared.settings import Settings, get_settings
from workers.broker import transport_for

SAMPLE_TASK = "evalfleet.sample"
AGGREGATE_TASK = "evalfleet.aggregate"
SWEEP_TASK = "evalfleet.recovery-sweep"
EMBEDDED_BROKER = "memory://"

# The aggregator and the recovery sweep are services that run wherever a worker runs; they are
# named here only so worker processes register them, keeping the import direction services -> workers.
app = Celery("evalfleet", include=["workers.sample", "services.aggregator", "services.recovery"])


def configure_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    broker_url = settings.broker_url or EMBEDDED_BROKER
    if app.conf.broker_url and app.conf.broker_url != broker_url:
        app.close()  # connection and producer pools belong to the old broker
    if "amqp" in app.__dict__:
        # Celery derives its queue declarations once; a new default queue needs them again.
        for derived in ("queues", "default_queue"):
            app.amqp.__dict__.pop(derived, None)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport_for(broker_url),
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        task_default_queue=settings.queue,
        broker_transport_options={
            # Live workers refresh the delivery time of the messages they hold (workers.broker), so
            # this only ever applies to the messages of a worker that died.
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for a dead worker's unacknowledged samples every few seconds (kombu's defaults
            # scan about every 100 s), so they come back soon after the visibility timeout.
            "unacked_restore_interval": max(1, min(5, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
            # A sweeper killed mid-sweep holds kombu's sweep lock until it expires (default 5 min).
            "unacked_mutex_expire": 60,
            # The in-memory transport polls; its 1 s default would idle the embedded worker.
            **({"polling_interval": 0.005} if not settings.broker_url else {}),
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A broker restart must not fail a submission: keep trying for about a minute.
        task_publish_retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 3},
        worker_hijack_root_logger=False,
        # The worker's own messages (workers.process, workers.shutdown) go to stderr as written.
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_disable_rate_limits=True,
        # Threads (samples wait on model APIs), fed without a Future per task (workers.pool).
        worker_pool="workers.pool:ThreadPool",
        enable_utc=True,
    )
    return app


configure_app()


def queue_for(spec: ResolvedTaskSpec) -> str:
    """Samples of a model with its own `queue` go there, so a slow model cannot starve others;
    its aggregation follows, since the workers on that queue are the ones sure to be running."""
    if get_settings().embedded:
        return app.conf.task_default_queue  # the in-process worker consumes one queue
    return (spec.model.queue if spec.model else None) or app.conf.task_default_queue


def dispatch_aggregation(task_result_id: int, spec: ResolvedTaskSpec) -> None:
    app.send_task(AGGREGATE_TASK, args=[task_result_id], queue=queue_for(spec))


PUBLISH_BATCH = 500


class SampleSender:
    """Publishes sample messages over one broker connection. Per-message costs that otherwise
    dominate submission are paid once: on Redis, messages go out in pipelined batches (one round
    trip per PUBLISH_BATCH messages); each queue is declared and routed once; and the task message
    is built once per queue by Celery (`create_task_message`), then copied with each sample's
    id, arguments and monitoring repr, and handed to Celery's own `send_task_message` (retry
    policy, routing, publish signals). Headers and body are those `app.send_task` would send."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._batch = None
        # queue -> (the message's headers, properties and embedded options; the routed options)
        self._templates: dict[str, tuple[dict, dict, dict, dict]] = {}
        # Task ids unique across senders without a uuid4 (and its system call) per message.
        self._id_prefix = uuid.uuid4().hex
        self._sequence = itertools.count()

    def __enter__(self) -> SampleSender:
        self.producer = self._stack.enter_context(app.producer_or_acquire())
        batch = getattr(self.producer, "batch", None)  # kombu >= 5.7; other transports send at once
        if batch is not None:
            self._batch = self._stack.enter_context(batch(PUBLISH_BATCH))
        return self

    def flush(self) -> None:
        """Publish what the current batch holds now."""
        if self._batch is not None:
            self._batch.flush()

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def _template(self, queue: str) -> tuple[dict, dict, dict, dict]:
        template = self._templates.get(queue)
        if template is None:
            self.producer.maybe_declare(app.amqp.queues[queue])
            task = app.tasks[SAMPLE_TASK]
            options = app.amqp.router.route({"queue": queue, "declare": []}, SAMPLE_TASK, (), {}, task)
            headers, properties, body, _ = app.amqp.create_task_message(
                "", SAMPLE_TASK, (), {}, reply_to=app.thread_oid,
                create_sent_event=False, ignore_result=None, argsrepr="", kwargsrepr="{}")
            template = self._templates[queue] = (headers, properties, body[2], options)
        return template

    def send(self, task_result_id: int, position: int, sample: dict, queue: str, checked: bool = False) -> None:
        """`checked`: the sample was just looked up in the result store and is not there."""
        headers, properties, embed, options = self._template(queue)
        task_id = f"{self._id_prefix}-{next(self._sequence)}"
        args = [task_result_id, position, sample, True] if checked else [task_result_id, position, sample]
        message = task_message(
            {**headers, "id": task_id, "root_id": task_id, "argsrepr": f"[{task_result_id}, {position}, ...]"},
            {**properties, "correlation_id": task_id}, (args, {}, embed), None)
        app.amqp.send_task_message(self.producer, SAMPLE_TASK, message, **options)


def broker_address() -> str:
    """The broker URL with any password masked, fit for messages and logs."""
    return mask_url(app.conf.broker_url or EMBEDDED_BROKER)


# The sample a message carries, read from the monitoring repr `SampleSender` writes into every
# message's headers, so a scan needs no decoding of bodies.
_SAMPLE_ARGS = re.compile(rb'"argsrepr":\s*"\[(\d+),\s*(\d+),')
SCAN_CHUNK = 1000


def pending_samples(queue: str, limit: int = 20_000) -> dict[int, set[int]] | None:
    """On a Redis broker: the samples (task result id -> positions) that messages still carry,
    waiting in `queue` or delivered and unacknowledged anywhere (a live worker's, or a dead
    worker's that kombu will deliver again). None on other brokers, or past `limit` messages."""
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis
    from kombu.transport.redis import Channel as RedisChannel

    found: dict[int, set[int]] = {}

    def note(raw: bytes) -> None:
        match = _SAMPLE_ARGS.search(raw)
        if match:
            found.setdefault(int(match.group(1)), set()).add(int(match.group(2)))

    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
    try:
        names = [queue] + [f"{queue}{RedisChannel.sep}{step}" for step in RedisChannel.priority_steps if step]
        if sum(client.llen(name) for name in names) + client.hlen(RedisChannel.unacked_key) > limit:
            return None
        for name in names:
            for start in range(0, client.llen(name), SCAN_CHUNK):
                for raw in client.lrange(name, start, start + SCAN_CHUNK - 1):
                    note(raw)
        for _, raw in client.hscan_iter(RedisChannel.unacked_key, count=SCAN_CHUNK):
            note(raw)
    finally:
        client.close()
    return found


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a queue (not those delivered to a worker), or None when the broker
    cannot say (the embedded in-memory broker)."""
    url = app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        import redis
        from kombu.transport.redis import Channel as RedisChannel

        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        try:
            # kombu keeps one list per priority step: `queue`, then `queue<sep><step>`.
            names = [queue] + [f"{queue}{RedisChannel.sep}{step}" for step in RedisChannel.priority_steps if step]
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.llen(name)
            return sum(pipe.execute())
        finally:
            client.close()
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        with app.connection_for_write() as connection:
            try:
                return connection.default_channel.queue_declare(queue, passive=True).message_count
            except connection.channel_errors:
                return 0  # never declared: nothing was ever sent there
    return None
