"""Scenario 8: recovery from a dead worker at default settings. Two workers on Redis run a
latency-bound evaluation; one is SIGKILLed mid-run. Measured: the time from the kill to the first
and to the last of the samples it held being recorded by the survivor (they come back once the
dead worker's heartbeat is missed for EVALFLEET_VISIBILITY_TIMEOUT, default 30 s), and whether
the run then completes with every sample exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from benchmarks.harness import workload
from benchmarks.harness.cluster import Place, Workers
from benchmarks.harness.measurement import Check, Context, Result, median, quiet_before_measuring, run_driver
from benchmarks.harness.system import WORK, Deadline, log

SAMPLES, LATENCY_MS, WORKERS, CONCURRENCY = 240, 3_000, 2, 8
TARGET_S = 60.0


def _query(database: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute(sql, params).fetchall()


def _held_by(database: Path, worker_name: str) -> dict[int, set[int]]:
    rows = _query(database, "SELECT holding FROM workers WHERE name LIKE ?", f"{worker_name}@%")
    held: dict[int, set[int]] = {}
    for (holding,) in rows:
        for task_result_id, positions in json.loads(holding).items():
            held.setdefault(int(task_result_id), set()).update(positions)
    return held


def _recorded(database: Path, task_result_id: int, positions: set[int]) -> set[int]:
    marks = ",".join("?" * len(positions))
    return {p for (p,) in _query(database, f"SELECT position FROM sample_results WHERE task_result_id = ? "
                                           f"AND position IN ({marks})", task_result_id, *positions)}


def scenario_8(ctx: Context, result: Result) -> None:
    samples = ctx.size(SAMPLES, 160)
    result.config.update({"samples": samples, "latency_ms": LATENCY_MS, "workers": WORKERS,
                          "worker_concurrency": CONCURRENCY, "model": f"mock$target with latency_ms {LATENCY_MS}",
                          "settings": "defaults (EVALFLEET_VISIBILITY_TIMEOUT 30 s, heartbeat every 5 s)",
                          "method": "kill one worker (SIGKILL) once 10% of the samples are done; the samples it "
                          "held are read from its last heartbeat (those not yet recorded at the kill); time "
                          "until the first and the last of them are recorded by the survivor"})
    first = Check("SIGKILL -> the dead worker's samples running again (first recorded)", f"<= {TARGET_S:.0f} s", "s")
    last = Check("SIGKILL -> all of the dead worker's samples recorded", f"<= {TARGET_S + 15:.0f} s", "s")
    result.checks += [first, last]
    deadline = Deadline(ctx.budget(120 + ctx.repeats * 180), "scenario 8")
    for repeat in range(1, ctx.repeats + 1):
        place = Place.fresh(WORK / f"s8-r{repeat}", ctx.redis.url)
        ctx.redis.flush()
        database = place.root / "evalfleet.db"
        model = {"key": "slow", "provider": "mock", "name": "target", "latency_ms": LATENCY_MS}
        run_file = workload.run_file(place.root, f"s8-r{repeat}", workload.dataset(samples), model_key="slow",
                                     models=[model])
        with Workers(place, WORKERS, CONCURRENCY, deadline, prefix=f"r{repeat}w") as workers:
            quiet = quiet_before_measuring(ctx)
            run_id = run_driver(place, "submit", str(run_file), name=f"s8-r{repeat}-submit",
                             timeout=min(deadline.remaining(), 120))["run_id"]
            (task_result_id,) = _query(database, "SELECT id FROM task_results WHERE run_id = ?", run_id)[0]
            victim = workers.workers[0]
            # Kill once a tenth is done and the victim's heartbeat (every 5 s) has reported what it holds.
            while True:
                deadline.remaining()
                done = _query(database, "SELECT done FROM task_results WHERE id = ?", task_result_id)[0][0]
                held = _held_by(database, victim.name).get(task_result_id, set())
                if done >= samples // 10 and held:
                    break
                time.sleep(0.05)
            os.killpg(victim.child.pid, signal.SIGKILL)
            killed = time.monotonic()
            held -= _recorded(database, task_result_id, held) if held else set()
            if not held:
                raise RuntimeError("the killed worker held no unrecorded sample: kill it earlier")
            first_at = all_at = None
            while all_at is None:
                deadline.remaining()
                back = _recorded(database, task_result_id, held)
                if back and first_at is None:
                    first_at = time.monotonic() - killed
                if back == held:
                    all_at = time.monotonic() - killed
                time.sleep(0.1)
            while True:
                deadline.remaining()
                done, total, status = _query(database, "SELECT done, total, status FROM task_results WHERE id = ?",
                                             task_result_id)[0]
                if status in ("success", "error", "cancelled"):
                    break
                time.sleep(0.2)
            count, distinct = _query(database, "SELECT count(*), count(DISTINCT sample_id) FROM sample_results "
                                               "WHERE task_result_id = ?", task_result_id)[0]
            if status != "success" or count != samples or distinct != samples:
                raise RuntimeError(f"after the kill: status {status}, {count} rows, {distinct} distinct samples")
        run = {"repeat": repeat, "run_id": run_id, "held_by_killed_worker": len(held),
               "first_back_s": round(first_at, 2), "all_back_s": round(all_at, 2), "quiet_wait": quiet}
        result.runs.append(run)
        first.runs.append(run["first_back_s"])
        last.runs.append(run["all_back_s"])
        log(f"    s8-r{repeat}: killed worker held {len(held)} samples; first back after {first_at:.1f} s, "
            f"all after {all_at:.1f} s; run complete, every sample once")
    first.note = f"{median([r['held_by_killed_worker'] for r in result.runs]):.0f} samples held at the kill (median)"
    first.settle(lambda v: v <= TARGET_S)
    last.settle(lambda v: v <= TARGET_S + 15)


SCENARIOS = {
    "8": ("Recovery from a SIGKILLed worker at default settings (Redis)", "dead worker's samples back within 60 s",
          scenario_8),
}
