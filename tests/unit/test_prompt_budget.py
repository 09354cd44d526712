"""The prompt budget: large samples wait while the megabytes of prompts held would exceed it, one
larger than the whole budget still runs (alone), ordinary samples never wait."""

from __future__ import annotations

import threading
import time

from workers.prompt_budget import SMALL_BYTES, PromptBudget
from workers.providers.mock import word_count

MB = 1024 * 1024


def hold_in_threads(budget: PromptBudget, sizes: list[int], pause: float = 0.02) -> int:
    """Runs one thread per size holding it for `pause`; returns the most bytes ever held at once."""
    peak = 0
    lock = threading.Lock()

    def one(size: int) -> None:
        nonlocal peak
        with budget.hold(size):
            with lock:
                peak = max(peak, budget.held)
            time.sleep(pause)

    threads = [threading.Thread(target=one, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert budget.held == 0
    return peak


def test_large_prompts_never_exceed_the_budget_together():
    budget = PromptBudget(16 * MB)
    peak = hold_in_threads(budget, [5 * MB] * 12)
    assert 10 * MB <= peak <= 16 * MB


def test_a_prompt_larger_than_the_budget_runs_alone():
    budget = PromptBudget(4 * MB)
    assert hold_in_threads(budget, [5 * MB, 5 * MB, 3 * MB]) == 5 * MB


def test_ordinary_prompts_are_not_counted():
    budget = PromptBudget(1)
    assert hold_in_threads(budget, [SMALL_BYTES - 1] * 50, pause=0.05) == 0


def test_mock_word_counts_match_split_without_building_the_list():
    for text in ("", "one", "  a  b\n\tc ", "é ü\u00a0x"):
        assert word_count(text) == len(text.split())
