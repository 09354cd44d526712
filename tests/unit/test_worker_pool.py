"""The worker's thread pool (workers.pool): Celery's pool contract on a plain queue of work."""

from __future__ import annotations

import threading
import time

from workers.pool import ThreadPool


def _started(limit: int) -> ThreadPool:
    pool = ThreadPool(limit=limit)
    pool.start()
    return pool


def test_tasks_run_with_celery_callbacks_up_to_the_limit_at_once():
    pool = _started(3)
    lock = threading.Lock()
    running = peak = 0
    accepted, results = [], []
    finished = threading.Semaphore(0)

    def task(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return n * n

    def done(value: int) -> None:
        results.append(value)
        finished.release()

    for n in range(9):
        pool.apply_async(task, args=(n,), callback=done, accept_callback=lambda pid, at: accepted.append(pid))
    for _ in range(9):
        assert finished.acquire(timeout=10)
    assert sorted(results) == [n * n for n in range(9)]
    assert len(accepted) == 9
    assert peak == 3
    assert pool.info["threads"] == 3 and pool.info["max-concurrency"] == 3
    pool.stop()
    assert pool.info["threads"] == 0


def test_a_task_that_escapes_its_callbacks_does_not_take_a_thread_away():
    pool = _started(1)
    ran = threading.Event()

    def escapes() -> None:
        raise RuntimeError("not caught by apply_target")  # Celery's tracer never lets one out; a target might

    lost = []
    pool.apply_async(escapes, callback=lost.append)
    pool.apply_async(lambda: "ran", callback=lambda value: ran.set())
    assert ran.wait(10)  # the pool's one thread is still serving
    assert lost == []
    pool.stop()


def test_stopping_drops_tasks_not_started_and_waits_for_running_ones():
    pool = _started(1)
    release = threading.Event()
    started = threading.Event()
    calls = []

    def long_task() -> None:
        started.set()
        release.wait(10)
        calls.append("long")

    pool.apply_async(long_task, callback=lambda _: None)
    for _ in range(5):
        pool.apply_async(lambda: calls.append("queued"), callback=lambda _: None)
    assert started.wait(10)
    stopper = threading.Thread(target=pool.stop)
    stopper.start()
    time.sleep(0.1)
    assert stopper.is_alive()  # waits for the running task
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert calls == ["long"]  # the queued tasks were dropped (their messages stay unacknowledged)
