"""Calls of concurrent threads answered together: one thread takes whatever calls are waiting (no
lingering: alone, a call goes at once) and answers them with one batch call. A worker's samples
then cost one round trip per batch, not one per sample."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Argument = TypeVar("Argument")
Answer = TypeVar("Answer")


class _Call(Generic[Argument, Answer]):
    __slots__ = ("answer", "argument", "done", "error")

    def __init__(self, argument: Argument):
        self.argument = argument
        self.done = threading.Event()
        self.answer: Answer | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[Argument, Answer]):
    """`call(argument)` from any thread; `answer_many(arguments)` answers a batch, in order."""

    MAX_BATCH = 500

    def __init__(self, answer_many: Callable[[list[Argument]], list[Answer]], thread_name: str):
        self.answer_many = answer_many
        self.thread_name = thread_name
        self._queue: queue.SimpleQueue[_Call[Argument, Answer]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, argument: Argument) -> Answer:
        request: _Call[Argument, Answer] = _Call(argument)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                    self._thread.start()
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.answer  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for request, answer in zip(batch, self.answer_many([r.argument for r in batch]), strict=True):
                    request.answer = answer
            except BaseException as exc:  # noqa: BLE001 - each caller decides what a failed call means
                for request in batch:
                    request.error = exc
            for request in batch:
                request.done.set()
