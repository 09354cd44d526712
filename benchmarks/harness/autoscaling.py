"""Scenario 17: autoscaling as KEDA would do it, with real workers. A Redis-brokered run of 20,000
`mock$target` samples at 100 ms (2,000 with --quick); a controller reads the queue's length every
second, asks `services.autoscaling` what KEDA and the HPA would run (`listLength` of a tenth of the
samples per replica, 0-4 replicas, 5 s scale-down window, 10 s cooldown) and starts `evalfleet
worker -c 10` processes or stops the newest with SIGTERM to match, until the deployment is back at
zero. Measured: queue length and replicas over time; for each worker started, the time from its
process start to ready and to its first sample, and from ready to its first sample (the "at
once"); every sample exactly once and none sent to the model twice, however many workers were
stopped mid-run; the total time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import workload
from benchmarks.harness.cluster import QUEUE, Place, Worker, start_worker
from benchmarks.harness.measurement import Check, Context, Result, median, quiet_before_measuring, run_driver
from benchmarks.harness.system import CHILDREN, WORK, CpuMeter, Deadline, log
from services.autoscaling import Autoscaler, ScalingPolicy

SAMPLES, LATENCY_MS, CONCURRENCY, MAX_REPLICAS = 20_000, 100, 10, 4
POLL_S = 1.0
AT_ONCE_S = 2.0
READY_LINE = ": ready;"  # what `evalfleet worker` prints once it consumes


def policy_for(samples: int) -> ScalingPolicy:
    # The submit window (EVALFLEET_SUBMIT_WINDOW, 10,000) caps the queue, so the target is set
    # from the run's size for the deployment to pass through every count from 4 to 0.
    return ScalingPolicy(target=max(1, samples // 10), min_replicas=0, max_replicas=MAX_REPLICAS,
                         cooldown_s=10, scale_down_window_s=5)


class Deployment:
    """The worker processes a controller runs: started, and stopped newest first with SIGTERM
    (as a ReplicaSet picks the newest pod), each one's start, ready and stop noted."""

    def __init__(self, place: Place, prefix: str):
        self.place = place
        self.prefix = prefix
        self.running: list[Worker] = []
        self.stopping: list[Worker] = []
        self.events: dict[str, dict[str, float]] = {}
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._watching = threading.Event()
        self._watcher = threading.Thread(target=self._watch_ready, daemon=True)

    def __enter__(self) -> Deployment:
        self._watching.set()
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watching.clear()
        # Those already told to stop get their grace: a second SIGTERM would cut it short.
        for worker in self.stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.child.process.wait(60)
        for worker in self.running + self.stopping:
            CHILDREN.stop(worker.child, timeout=60)
            self.events[worker.name]["exit_code"] = worker.child.process.returncode

    def scale_to(self, replicas: int) -> None:
        if self.failure:
            raise RuntimeError(self.failure)
        while len(self.running) < replicas:
            name = f"bench-{self.prefix}{len(self.events) + 1}"
            with self._lock:
                self.events[name] = {"started": time.time()}
                self.running.append(start_worker(self.place, name, CONCURRENCY))
        while len(self.running) > replicas:
            with self._lock:
                worker = self.running.pop()
            os.killpg(worker.pid, signal.SIGTERM)
            self.events[worker.name]["sigterm"] = time.time()
            self.stopping.append(worker)

    def _watch_ready(self) -> None:
        # 50 ms apart: the figure measured is in seconds, the controller's tick would blur it.
        while self._watching.is_set():
            with self._lock:
                waiting = [w for w in self.running if "ready" not in self.events[w.name]]
            for worker in waiting:
                if READY_LINE in worker.child.tail(20_000):
                    self.events[worker.name]["ready"] = time.time()
                elif not worker.child.alive():
                    self.failure = f"worker {worker.name} exited before it was ready:\n{worker.child.tail()}"
            time.sleep(0.05)


def _sample_times(log_path: str) -> dict[str, dict[str, Any]]:
    """Per worker (name before `@`): samples done, first sample's start and end (epoch seconds)."""
    per_worker: dict[str, dict[str, Any]] = {}
    document = json.loads(Path(log_path).read_text(encoding="utf-8"))
    for sample in document["samples"]:
        name = (sample.get("worker") or "?").split("@", 1)[0]
        started = datetime.fromisoformat(sample["started_at"]).timestamp()
        completed = datetime.fromisoformat(sample["completed_at"]).timestamp()
        entry = per_worker.setdefault(name, {"samples": 0, "first_started": started, "first_completed": completed})
        entry["samples"] += 1
        entry["first_started"] = min(entry["first_started"], started)
        entry["first_completed"] = min(entry["first_completed"], completed)
    return per_worker


def _rows(database: Path, run_id: str) -> tuple[int, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute(
            "SELECT count(*), count(DISTINCT s.sample_id) FROM sample_results s JOIN task_results t "
            "ON t.id = s.task_result_id WHERE t.run_id = ?", (run_id,)).fetchone()


def _one_run(ctx: Context, repeat: int, samples: int, deadline: Deadline) -> dict[str, Any]:
    place = Place.fresh(WORK / f"s17-r{repeat}", ctx.redis.url)
    ctx.redis.flush()
    model = {"key": "slow", "provider": "mock", "name": "target", "latency_ms": LATENCY_MS}
    run_file = workload.run_file(place.root, f"s17-r{repeat}", workload.dataset(samples), model_key="slow",
                                 models=[model])
    scaler = Autoscaler(policy_for(samples))
    outcome: dict[str, Any] = {}

    def run_it() -> None:
        try:
            outcome["run"] = run_driver(place, "run", str(run_file), name=f"s17-r{repeat}",
                                     timeout=deadline.remaining())
        except BaseException as exc:  # noqa: BLE001 - raised in the controller's thread below
            outcome["error"] = exc

    timeline: list[tuple[float, int, int]] = []
    with Deployment(place, f"r{repeat}w") as deployment:
        runner = threading.Thread(target=run_it, daemon=True)
        meter = CpuMeter()
        began = time.monotonic()
        runner.start()
        while True:
            deadline.remaining()
            depth = ctx.redis.queue_length(QUEUE)
            replicas = scaler.decide(time.monotonic(), depth)
            deployment.scale_to(replicas)
            timeline.append((round(time.monotonic() - began, 1), depth, replicas))
            if not runner.is_alive() and replicas == 0:
                break
            time.sleep(max(0.0, began + len(timeline) * POLL_S - time.monotonic()))
        cpu = meter.stop()
    if "error" in outcome:
        raise outcome["error"]
    report = outcome["run"]["report"]
    (task_result,) = report["task_results"]
    rows, distinct = _rows(place.root / "evalfleet.db", report["run_id"])
    per_worker = _sample_times(task_result["log_path"])
    log_written = Path(task_result["log_path"]).stat().st_mtime
    elapsed = log_written - outcome["run"]["started_epoch"]
    workers = {}
    for name, events in deployment.events.items():
        done = per_worker.get(name, {})
        entry = {"samples": done.get("samples", 0), "exit_code": events.get("exit_code"),
                 "stopped_with_sigterm": "sigterm" in events,
                 "stopped_mid_run": events.get("sigterm", log_written) < log_written,
                 "start_to_ready_s": round(events["ready"] - events["started"], 2) if "ready" in events else None}
        if done and "ready" in events:
            entry["ready_to_first_sample_s"] = round(done["first_started"] - events["ready"], 2)
            entry["start_to_first_sample_recorded_s"] = round(done["first_completed"] - events["started"], 2)
        workers[name] = entry
    return {"repeat": repeat, "run_id": report["run_id"], "status": report["status"], "samples": samples,
            "rows": rows, "distinct_ids": distinct, "log_samples": task_result["done"],
            "model_calls": task_result["model_calls"], "errors": task_result["errors"],
            "submit_to_last_log_s": round(elapsed, 1), "throughput_sps": round(samples / elapsed),
            "workers": workers, "cpu": cpu, "timeline": [{"t_s": t, "queue": q, "replicas": r} for t, q, r in timeline]}


def _changes(timeline: list[dict[str, Any]]) -> str:
    """The replica counts over time, as `t: replicas (queue)` at each change."""
    out, last = [], None
    for point in timeline:
        if point["replicas"] != last:
            out.append(f"{point['t_s']:.0f} s: {point['replicas']} ({point['queue']:,} waiting)")
            last = point["replicas"]
    return "; ".join(out)


def scenario_17(ctx: Context, result: Result) -> None:
    samples = ctx.size(SAMPLES, 2_000)
    policy = policy_for(samples)
    result.config.update({
        "samples": samples, "model": f"mock$target with latency_ms {LATENCY_MS}", "worker_concurrency": CONCURRENCY,
        "broker": "Redis", "database": "sqlite", "poll_s": POLL_S,
        "policy": {"listLength": policy.target, "minReplicaCount": policy.min_replicas,
                   "maxReplicaCount": policy.max_replicas, "cooldownPeriod": policy.cooldown_s,
                   "scaleDown.stabilizationWindowSeconds": policy.scale_down_window_s},
        "method": "a controller reads the queue length (LLEN, as KEDA's Redis scaler) every second, "
                  "services.autoscaling.Autoscaler decides the replicas, workers are started or the newest "
                  "stopped with SIGTERM (EVALFLEET_WORKER_GRACE 30 s); until back at zero replicas"})
    once = Check("every sample exactly once, workers stopped mid-run with SIGTERM",
                 "rows = log samples = model calls", "samples")
    at_once = Check("a started worker: ready -> its first sample started (worst worker)", f"<= {AT_ONCE_S:.0f} s", "s")
    start_up = Check("a started worker: process start -> its first sample recorded (worst worker)", "reported", "s")
    total = Check(f"total time, {samples:,} samples (submission to the last log)", "reported", "s")
    result.checks += [once, at_once, start_up, total]
    deadline = Deadline(ctx.budget(120 + ctx.repeats * (90 + samples / 50)), "scenario 17")
    for repeat in range(1, ctx.repeats + 1):
        quiet = quiet_before_measuring(ctx)
        run = _one_run(ctx, repeat, samples, deadline)
        run["quiet_wait"] = quiet
        result.runs.append(run)
        started = [w for w in run["workers"].values() if "ready_to_first_sample_s" in w]
        stopped = sum(w["stopped_mid_run"] for w in run["workers"].values())
        counts = {run["rows"], run["distinct_ids"], run["log_samples"], run["model_calls"], samples}
        once.runs.append(run["rows"] if len(counts) == 1 else -1)
        at_once.runs.append(max(w["ready_to_first_sample_s"] for w in started))
        start_up.runs.append(max(w["start_to_first_sample_recorded_s"] for w in started))
        total.runs.append(run["submit_to_last_log_s"])
        log(f"    s17-r{repeat}: {samples:,} samples in {run['submit_to_last_log_s']:.1f} s; "
            f"{len(run['workers'])} workers started, {stopped} stopped with SIGTERM mid-run; "
            f"rows {run['rows']:,}, model calls {run['model_calls']:,}; replicas {_changes(run['timeline'])}")
    worst = result.runs[-1]
    mid_run = [w["exit_code"] for r in result.runs for w in r["workers"].values() if w["stopped_mid_run"]]
    once.settle(lambda v: v == samples, min(once.runs))
    once.note = (f"worst repeat: rows {min(r['rows'] for r in result.runs):,}, model calls "
                 f"{max(r['model_calls'] for r in result.runs):,}; "
                 f"{len(mid_run)} workers stopped with SIGTERM before their run ended, over {len(result.runs)} "
                 f"repeat(s), exit codes {sorted(set(mid_run))}")
    at_once.settle(lambda v: v <= AT_ONCE_S)
    # Negative: the first sample began before the ready line reached the log (read every 50 ms).
    at_once.note = ("ready -> first sample per worker, last repeat: "
                    + ", ".join(f"{w['ready_to_first_sample_s']:.2f} s" for w in worst["workers"].values()
                                if "ready_to_first_sample_s" in w))
    start_up.settle(lambda v: True)
    start_up.note = "process start -> ready (median of workers): " + (
        f"{median([w['start_to_ready_s'] for r in result.runs for w in r['workers'].values() if w['start_to_ready_s']]):.1f} s")
    total.settle(lambda v: True)
    total.note = f"replicas over time (last repeat): {_changes(worst['timeline'])}"
    result.figures["timeline_last_repeat"] = worst["timeline"]


SCENARIOS = {
    "17": ("Autoscaling as KEDA decides it: 20,000 samples at 100 ms, 0-4 workers x -c 10 started and "
           "stopped (SIGTERM) by the queue length", "exactly once; a started worker's first sample <= 2 s "
           "after it is ready", scenario_17),
}
