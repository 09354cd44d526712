"""How many megabytes of prompts a worker process holds at once. A sample's memory is a small
multiple of its prompt (rendered, hashed, sent, recorded), so a hundred threads each rendering
a 5 MB few-shot template would hold gigabytes; past the budget, large samples wait their turn.
Ordinary samples (under `SMALL_BYTES`) never touch the lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

SMALL_BYTES = 64 * 1024


class PromptBudget:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.held = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        if size < SMALL_BYTES:
            yield
            return
        with self._changed:
            # A sample larger than the whole budget runs alone rather than never.
            while self.held and self.held + size > self.limit:
                self._changed.wait()
            self.held += size
        try:
            yield
        finally:
            with self._changed:
                self.held -= size
                self._changed.notify_all()


_budget: PromptBudget | None = None
_budget_lock = threading.Lock()


def prompt_budget() -> PromptBudget:
    global _budget
    budget = _budget
    if budget is not None:  # every sample asks: no lock once it exists
        return budget
    with _budget_lock:
        if _budget is None:
            from shared.settings import get_settings

            _budget = PromptBudget(int(get_settings().prompt_budget_mb * 1024 * 1024))
        return _budget


def reset_prompt_budget() -> None:
    global _budget
    with _budget_lock:
        _budget = None
