"""The Celery app and its configuration. Messages are JSON only (pickle is never accepted), sample
tasks are acknowledged late so a lost worker loses no sample, and no task result backend is used:
results go to the database, which is the single account of every sample."""

from __future__ import annotations

from contextlib import ExitStack

from celery import Celery

from shared.plan import ResolvedTaskSpec
from shared.settings import Settings, get_settings
from workers.broker import transport_for

SAMPLE_TASK = "evalfleet.sample"
AGGREGATE_TASK = "evalfleet.aggregate"
EMBEDDED_BROKER = "memory://"

# The aggregator is a service that runs wherever a worker runs; it is named here only so worker
# processes register it, keeping the import direction services -> workers.
app = Celery("evalfleet", include=["workers.sample", "services.aggregator"])


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
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for a dead worker's unacknowledged samples every few seconds (kombu's defaults
            # scan about every 100 s), so they come back soon after the visibility timeout.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
            # The in-memory transport polls; its 1 s default would idle the embedded worker.
            **({"polling_interval": 0.005} if not settings.broker_url else {}),
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A broker restart must not fail a submission: keep trying for about a minute.
        task_publish_retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 3},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_disable_rate_limits=True,
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
    """Publishes sample messages over one broker connection. On Redis, messages go out in
    pipelined batches (one round trip per PUBLISH_BATCH messages); each queue is declared once;
    and the message's argument repr (only for monitoring) is not computed. All three are
    per-message costs that otherwise dominate submission."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._declared: set[str] = set()

    def __enter__(self) -> SampleSender:
        self.producer = self._stack.enter_context(app.producer_or_acquire())
        batch = getattr(self.producer, "batch", None)  # kombu >= 5.7; other transports send at once
        if batch is not None:
            self._stack.enter_context(batch(PUBLISH_BATCH))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def send(self, task_result_id: int, position: int, sample: dict, queue: str) -> None:
        if queue not in self._declared:
            self.producer.maybe_declare(app.amqp.queues[queue])
            self._declared.add(queue)
        app.send_task(SAMPLE_TASK, args=[task_result_id, position, sample], queue=queue, producer=self.producer,
                      declare=[], argsrepr=f"[{task_result_id}, {position}, ...]", kwargsrepr="{}")


def broker_address() -> str:
    """The broker URL with any password masked, fit for messages and logs."""
    return app.connection().as_uri()
