"""Stopping a worker without losing or repeating samples (what Kubernetes and systemd do with
SIGTERM, and a person with Ctrl+C).

The first SIGTERM or SIGINT starts a graceful stop: the worker stops taking messages, samples it
received but has not started go straight back to the broker (the sample task checks `stopping()`),
and samples in flight get `EVALFLEET_WORKER_GRACE` seconds to finish and be recorded. Whatever is
still unfinished then is handed back to the broker and the process exits. A second signal hands
everything back and exits at once. On RabbitMQ the broker takes back unacknowledged messages
itself when the connection closes; on Redis they are pushed back explicitly (and, should even
that fail, come back once the dead worker's heartbeat is missed, see workers.broker)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from celery.worker import state as worker_state

logger = logging.getLogger(__name__)
_stopping = threading.Event()
EXIT_HANDED_BACK = 1


def stopping() -> bool:
    """True once this worker process was asked to stop: samples not yet started go back."""
    return _stopping.is_set()


class GracefulStop:
    def __init__(self, grace_s: float, on_exit=None, redis_broker: bool = True):  # noqa: ANN001
        self.grace_s = grace_s
        self.on_exit = on_exit
        self.redis_broker = redis_broker
        self._lock = threading.Lock()

    def install(self) -> None:
        """Take over SIGTERM and SIGINT (call from the main thread, once Celery installed its own)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:  # noqa: ANN001
        if _stopping.is_set():
            self._say(f"{signal.Signals(signum).name} again: handing every sample back and stopping now")
            threading.Thread(target=self.hand_back_and_exit, daemon=True).start()
            return
        _stopping.set()
        self._say(f"{signal.Signals(signum).name}: stopping; samples in flight get {self.grace_s:g} s, "
                  "samples not started go back to the queue (signal again to stop at once)")
        threading.Thread(target=self._deadline, name="evalfleet-stop-deadline", daemon=True).start()
        # Celery's warm shutdown: stop consuming, let the pool finish what it runs, then exit.
        worker_state.should_stop = 0

    def _deadline(self) -> None:
        if threading.Event().wait(self.grace_s):
            return  # pragma: no cover - an Event nobody sets
        self._say(f"grace period of {self.grace_s:g} s over: handing the unfinished samples back")
        self.hand_back_and_exit()

    def hand_back_and_exit(self) -> None:
        with self._lock:
            returned = 0
            if self.redis_broker:
                from workers.broker import hand_back_held_messages

                try:
                    returned = hand_back_held_messages()
                except Exception as exc:  # noqa: BLE001 - they come back by visibility instead
                    logger.warning("could not hand samples back: %s", exc)
            self._say(f"handed {returned} messages back to the broker" if self.redis_broker
                      else "the broker takes back unacknowledged messages when the connection closes")
            if self.on_exit is not None:
                try:
                    self.on_exit()
                except Exception:  # noqa: BLE001
                    pass
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_HANDED_BACK)

    @staticmethod
    def _say(message: str) -> None:
        print(f"evalfleet worker: {message}", file=sys.stderr, flush=True)
