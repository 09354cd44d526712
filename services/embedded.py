"""The embedded default: a Celery worker inside the current process, on the in-memory transport
with a thread pool (workers.pool), so `evalfleet run` needs no server of any kind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery.app.trace import setup_worker_optimizations
from celery.worker import WorkController
from celery.worker import state as worker_state

from workers.app import app
from workers.pool import ThreadPool

STOP_TIMEOUT_S = 30
EMBEDDED_HOSTNAME = "embedded@localhost"
WAKE_TASK = "evalfleet.embedded.wake"


@app.task(name=WAKE_TASK, ignore_result=True)
def _wake() -> None:
    """Does nothing: its delivery ends the consumer's blocking 2 s wait, so shutdown is immediate."""


class _EmbeddedWorker(WorkController):
    def __init__(self, *args, **kwargs):
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer):  # noqa: ANN001
        self.ready.set()


@contextmanager
def embedded_worker(concurrency: int) -> Iterator[WorkController]:
    app.finalize()
    app.set_current()
    # What `celery worker` does at start: without it tasks see the machine's name as their host.
    setup_worker_optimizations(app, EMBEDDED_HOSTNAME)
    worker = _EmbeddedWorker(
        app=app, hostname=EMBEDDED_HOSTNAME, pool_cls=ThreadPool, concurrency=concurrency,
        without_heartbeat=True, without_mingle=True, without_gossip=True, loglevel="WARNING",
        ready_callback=None,
    )
    thread = threading.Thread(target=worker.start, name="evalfleet-embedded-worker", daemon=True)
    thread.start()
    worker.ready.wait(STOP_TIMEOUT_S)
    try:
        yield worker
    finally:
        worker_state.should_terminate = 0
        # Two: Celery's sync loop runs one more blocking cycle after it sees the flag.
        app.send_task(WAKE_TASK)
        app.send_task(WAKE_TASK)
        thread.join(STOP_TIMEOUT_S)
        worker_state.should_terminate = None
