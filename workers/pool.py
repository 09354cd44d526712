"""The worker's pool of threads: Celery's thread pool semantics on a leaner executor.

Celery's `threads` pool hands every task to a `concurrent.futures.ThreadPoolExecutor`, which
creates a Future and a work item per task, takes an idle-semaphore lock on each submission and
resolves the Future afterwards: about a tenth of the embedded process's CPU per sample, under the
one interpreter lock every other thread needs (measured with py-spy on 50,000 `mock$target`
samples). Nothing reads those Futures: Celery's callbacks (acknowledgement, failure handling) run
inside `apply_target`. This pool keeps a fixed set of threads fed from one queue, and is plugged
in where Celery takes a pool class: the app's `worker_pool` setting (every `evalfleet worker`), and
`WorkController(pool_cls=...)` in the embedded process."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from celery.concurrency.base import BasePool, apply_target

logger = logging.getLogger(__name__)
_STOP = None


class ThreadPool(BasePool):
    body_can_be_buffer = True
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def on_start(self) -> None:
        for index in range(self.limit):
            thread = threading.Thread(target=self._serve, name=f"evalfleet-pool-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        get = self._work.get
        while True:
            item = get()
            if item is _STOP:
                return
            try:
                apply_target(*item)
            except BaseException:  # noqa: BLE001 - one task's escape must not take a pool thread away
                logger.exception("a task escaped the pool's callbacks")

    def on_apply(self, target, args=None, kwargs=None, callback=None, accept_callback=None, **_: Any) -> None:  # noqa: ANN001
        self._work.put((target, args, kwargs, callback, accept_callback))

    def on_stop(self) -> None:
        # As Celery's thread pool stops: tasks not started are dropped (unacknowledged, so the
        # broker delivers them again), running ones finish.
        while True:
            try:
                self._work.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._work.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads = []
        super().on_stop()

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info.update({"max-concurrency": self.limit, "threads": len(self._threads)})
        return info
