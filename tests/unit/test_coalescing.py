"""Concurrent calls answered together (shared.coalescing), as the result store's lookups use it."""

from __future__ import annotations

import threading

import pytest

from shared.coalescing import Coalescer


def test_concurrent_calls_share_batches_and_each_gets_its_own_answer():
    batches: list[list[int]] = []
    release = threading.Event()

    def answer_many(arguments: list[int]) -> list[int]:
        batches.append(list(arguments))
        release.wait(5)  # the first batch holds the thread while the others queue up
        return [argument * 10 for argument in arguments]

    coalescer = Coalescer(answer_many, "test-coalescer")
    answers: dict[int, int] = {}
    threads = [threading.Thread(target=lambda n=n: answers.__setitem__(n, coalescer.call(n))) for n in range(20)]
    for thread in threads:
        thread.start()
    while sum(map(len, batches)) == 0:
        threading.Event().wait(0.001)
    threading.Event().wait(0.05)
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == {n: n * 10 for n in range(20)}
    assert sorted(n for batch in batches for n in batch) == list(range(20))
    assert len(batches) < 20, batches  # callers that waited went together


def test_a_lone_call_goes_at_once_and_a_failed_batch_fails_its_callers_only():
    calls = []

    def answer_many(arguments: list[str]) -> list[str]:
        calls.append(arguments)
        if "bad" in arguments:
            raise ConnectionError("store unreachable")
        return [a.upper() for a in arguments]

    coalescer = Coalescer(answer_many, "test-coalescer")
    assert coalescer.call("a") == "A"
    with pytest.raises(ConnectionError):
        coalescer.call("bad")
    assert coalescer.call("b") == "B"
    assert calls == [["a"], ["bad"], ["b"]]
