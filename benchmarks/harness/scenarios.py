"""The scenarios. Each one starts what it needs, measures `repeats` times, stops everything in a
finally block, and returns a `Result`: raw figures of every repeat, medians, targets and checks."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import workload
from benchmarks.harness.cluster import Place, Workers
from benchmarks.harness.inspect_reference import inspect_rate
from benchmarks.harness.inspect_reference import inspect_version as inspect_version  # read by benchmarks.run
from benchmarks.harness.measurement import (
    Check,
    Context,
    Result,
    describe_error,
    evalfleet_run,
    latency_budget,
    latency_setup,
    log_stats,
    mb,
    median,
    mock_budget,
    quiet_before_measuring,
    run_driver,
)
from benchmarks.harness.system import (
    WORK,
    CpuMeter,
    Deadline,
    RssSampler,
    ScenarioTimeout,
    log,
)

# -- scenarios -------------------------------------------------------------------------------------


def scenario_1(ctx: Context, result: Result) -> None:
    samples = ctx.size(20_000, 2_000)
    concurrency = 32
    result.config.update({"samples": samples, "workers": 2, "worker_concurrency": concurrency, "model": "mock$target",
                          "task": "qa", "scorer": "includes", "cache_policy": "no-cache", "broker": "redis",
                          "database": "sqlite (shared file)"})
    rate = Check("throughput", ">= 800 samples/s", "samples/s")
    ratio = Check("vs Inspect AI", ">= 7x", "x")
    result.checks += [rate, ratio]
    inspect = inspect_rate(ctx)
    deadline = Deadline(ctx.budget(120 + ctx.repeats * mock_budget(samples)), "scenario 1")
    place = Place.fresh(WORK / "s1", ctx.redis.url)
    ctx.redis.flush()
    run_file = workload.run_file(place.root, "s1", workload.dataset(samples))
    with Workers(place, 2, concurrency, deadline):
        for repeat in range(1, ctx.repeats + 1):
            quiet = quiet_before_measuring(ctx)
            run = evalfleet_run(place, run_file, samples, timeout=min(deadline.remaining(), ctx.budget(mock_budget(samples))),
                                name=f"s1-r{repeat}")
            run.update(repeat=repeat, quiet_wait=quiet)
            result.runs.append(run)
            rate.runs.append(run["throughput_sps"])
    rate.settle(lambda v: v >= 800)
    if inspect:
        ratio.runs = [round(r / inspect, 2) for r in rate.runs]
        ratio.note = f"Inspect AI median {inspect:.1f} samples/s"
        ratio.settle(lambda v: v >= 7, round(rate.median / inspect, 2))


def scenario_2(ctx: Context, result: Result) -> None:
    samples = ctx.size(20_000, 2_000)
    result.config.update({"samples": samples, "mode": "embedded (memory transport, in-process worker)",
                          "concurrency": "default (32)", "model": "mock$target", "task": "qa", "scorer": "includes",
                          "cache_policy": "no-cache", "database": "sqlite"})
    rate = Check("throughput", "(reported)", "samples/s")
    ratio = Check("vs Inspect AI", ">= 10x", "x")
    result.checks.append(ratio)
    inspect = inspect_rate(ctx)
    deadline = Deadline(ctx.budget(60 + ctx.repeats * mock_budget(samples)), "scenario 2")
    for repeat in range(1, ctx.repeats + 1):
        place = Place.fresh(WORK / "s2", None)
        run_file = workload.run_file(place.root, "s2", workload.dataset(samples))
        quiet = quiet_before_measuring(ctx)
        run = evalfleet_run(place, run_file, samples, timeout=min(deadline.remaining(), ctx.budget(mock_budget(samples))),
                            name=f"s2-r{repeat}")
        run.update(repeat=repeat, quiet_wait=quiet)
        result.runs.append(run)
        rate.runs.append(run["throughput_sps"])
    rate.settle(lambda v: True)
    result.figures["throughput"] = {"runs": rate.runs, "median": rate.median, "unit": "samples/s"}
    if inspect:
        ratio.runs = [round(r / inspect, 2) for r in rate.runs]
        ratio.note = f"{rate.median:.0f} samples/s vs Inspect AI {inspect:.1f} samples/s"
        ratio.settle(lambda v: v >= 10, round(rate.median / inspect, 2))




def scenario_3(ctx: Context, result: Result) -> None:
    samples = ctx.size(5_000, 1_000)
    latency_ms, workers, concurrency, max_connections = 500, 2, 100, 200
    ideal = workers * concurrency / (latency_ms / 1000)
    result.config.update({"samples": samples, "latency_ms": latency_ms, "workers": workers,
                          "worker_concurrency": concurrency, "max_connections": max_connections,
                          "cache_policy": "no-cache", "ideal_sps": ideal, "provider": "openai (fake server)"})
    efficiency = Check("efficiency (throughput / ideal 400/s)", ">= 85%", "% of ideal")
    result.checks.append(efficiency)
    rates = []
    deadline = Deadline(ctx.budget(180 + ctx.repeats * latency_budget(samples, ideal)), "scenario 3")
    place, server = latency_setup(ctx, "s3", latency_ms)
    with server:
        run_file = workload.run_file(place.root, "s3", workload.dataset(samples), model_key="fake-openai",
                                     models=[workload.openai_model(server.base_url, max_connections)])
        with Workers(place, workers, concurrency, deadline):
            for repeat in range(1, ctx.repeats + 1):
                quiet = quiet_before_measuring(ctx)
                server.reset()
                run = evalfleet_run(place, run_file, samples, name=f"s3-r{repeat}",
                                    timeout=min(deadline.remaining(), ctx.budget(latency_budget(samples, ideal))))
                stats = server.stats()
                run.update(repeat=repeat, quiet_wait=quiet, server_requests=stats["requests"],
                           server_max_concurrency=stats["max_concurrency"],
                           efficiency_pct=round(100 * run["throughput_sps"] / ideal, 1))
                result.runs.append(run)
                rates.append(run["throughput_sps"])
                efficiency.runs.append(run["efficiency_pct"])
    result.figures["throughput"] = {"runs": rates, "median": median(rates), "unit": "samples/s", "ideal": ideal}
    efficiency.note = f"median {median(rates):.0f} samples/s of ideal {ideal:.0f}"
    efficiency.settle(lambda v: v >= 85)


def scenario_4(ctx: Context, result: Result) -> None:
    latency_ms, concurrency, seconds = 1000, 50, ctx.size(12, 4)
    counts = (1, 2, 4)
    per_worker_ideal = concurrency / (latency_ms / 1000)
    result.config.update({"latency_ms": latency_ms, "worker_concurrency": concurrency, "worker_counts": list(counts),
                          "samples_per_config": {n: int(n * per_worker_ideal * seconds) for n in counts},
                          "max_connections": 1000, "cache_policy": "no-cache", "provider": "openai (fake server)"})
    deadline = Deadline(ctx.budget(300 + len(counts) * (60 + ctx.repeats * (60 + 4 * seconds))), "scenario 4")
    place, server = latency_setup(ctx, "s4", latency_ms)
    rates: dict[int, list[float]] = {}
    with server:
        for n in counts:
            samples = int(n * per_worker_ideal * seconds)
            run_file = workload.run_file(place.root, f"s4-n{n}", workload.dataset(samples), model_key="fake-openai",
                                         models=[workload.openai_model(server.base_url, 1000)])
            log(f"  {n} worker(s), {samples} samples")
            with Workers(place, n, concurrency, deadline, prefix=f"n{n}w"):
                for repeat in range(1, ctx.repeats + 1):
                    quiet = quiet_before_measuring(ctx)
                    server.reset()
                    run = evalfleet_run(place, run_file, samples, name=f"s4-n{n}-r{repeat}",
                                        timeout=min(deadline.remaining(),
                                                    ctx.budget(latency_budget(samples, n * per_worker_ideal))))
                    stats = server.stats()
                    run.update(repeat=repeat, workers=n, quiet_wait=quiet, server_requests=stats["requests"],
                               server_max_concurrency=stats["max_concurrency"],
                               ideal_sps=n * per_worker_ideal)
                    result.runs.append(run)
                    rates.setdefault(n, []).append(run["throughput_sps"])
    base = median(rates[1])
    result.figures["throughput_by_workers"] = {str(n): {"runs": r, "median": median(r),
                                                        "ideal": n * per_worker_ideal} for n, r in rates.items()}
    for n in counts[1:]:
        check = Check(f"scaling to {n} workers: T({n}) / ({n} x T(1))", ">= 0.9", "ratio")
        check.runs = [round(r / (n * base), 3) for r in rates[n]]
        check.note = f"T(1) {base:.1f}, T({n}) {median(rates[n]):.1f} samples/s"
        check.settle(lambda v: v >= 0.9, round(median(rates[n]) / (n * base), 3))
        result.checks.append(check)


def scenario_5(ctx: Context, result: Result) -> None:
    samples = ctx.size(5_000, 1_000)
    latency_ms, workers, concurrency, max_connections = 500, 2, 100, 200
    result.config.update({"samples": samples, "latency_ms": latency_ms, "workers": workers,
                          "worker_concurrency": concurrency, "max_connections": max_connections,
                          "cache_policy": "reuse", "method": "per repeat: a dataset of its own (distinct samples), "
                          "first run on the empty store, then the same run file again"})
    speedup = Check("speed-up of the cached re-run", ">= 20x", "x")
    calls = Check("model calls in the cached re-run (server /stats + run's model_calls)", "= 0", "calls")
    result.checks += [speedup, calls]
    deadline = Deadline(ctx.budget(180 + ctx.repeats * 2 * latency_budget(samples, 400)), "scenario 5")
    place, server = latency_setup(ctx, "s5", latency_ms)
    with server:
        with Workers(place, workers, concurrency, deadline):
            for repeat in range(1, ctx.repeats + 1):
                data = workload.dataset(samples, prefix=f"c{repeat}")
                run_file = workload.run_file(place.root, f"s5-r{repeat}", data, model_key="fake-openai",
                                             models=[workload.openai_model(server.base_url, max_connections)],
                                             cache_policy="reuse")
                quiet = quiet_before_measuring(ctx)
                server.reset()
                first = evalfleet_run(place, run_file, samples, name=f"s5-r{repeat}-first",
                                      timeout=min(deadline.remaining(), ctx.budget(latency_budget(samples, 400))))
                first["server_requests"] = server.stats()["requests"]
                server.reset()
                second = evalfleet_run(place, run_file, samples, name=f"s5-r{repeat}-cached",
                                       timeout=min(deadline.remaining(), ctx.budget(latency_budget(samples, 400))))
                second["server_requests"] = server.stats()["requests"]
                ratio = first["submit_to_last_log_s"] / second["submit_to_last_log_s"]
                result.runs.append({"repeat": repeat, "quiet_wait": quiet, "first": first, "cached": second,
                                    "speedup": round(ratio, 2)})
                speedup.runs.append(round(ratio, 2))
                calls.runs.append(max(second["server_requests"], second["model_calls"]))
                log(f"    s5-r{repeat}: speed-up {ratio:.1f}x, cached run: {second['server_requests']} server requests,"
                    f" {second['model_calls']} model calls, {second['cache_hits']} cache hits")
    speedup.settle(lambda v: v >= 20)
    calls.settle(lambda v: v == 0, max(calls.runs) if calls.runs else None)
    calls.note = "worst repeat"


def scenario_6(ctx: Context, result: Result) -> None:
    sizes = (ctx.size(20_000, 4_000), ctx.size(100_000, 20_000))
    result.config.update({"sizes": list(sizes), "method": "driver process calls services.submitter.submit(file) "
                          "with the Redis broker and no worker; timed around submit() alone (validation, "
                          "registration, enqueue); RSS sampled every 50 ms during submit(); queue length checked",
                          "model": "mock$target", "submit_window": "0 (no limit: everything is enqueued at once)"})
    deadline = Deadline(ctx.budget(120 + ctx.repeats * sum(60 + n / 500 for n in sizes)), "scenario 6")
    # Enqueueing alone is measured: with no worker, a submission window would wait for one forever.
    place = Place.fresh(WORK / "s6", ctx.redis.url, EVALFLEET_SUBMIT_WINDOW="0")
    rate = Check(f"submission rate, {sizes[1]:,} samples", ">= 5,000 samples/s", "samples/s")
    memory = Check(f"submitter peak RSS growth {sizes[0]:,} -> {sizes[1]:,} samples", "<= 10% (flat)", "%")
    result.checks += [rate, memory]
    peaks: dict[int, list[float]] = {}
    rates: dict[int, list[float]] = {}
    for samples in sizes:
        run_file = workload.run_file(place.root, f"s6-{samples}", workload.dataset(samples))
        for repeat in range(1, ctx.repeats + 1):
            ctx.redis.flush()
            quiet = quiet_before_measuring(ctx)
            meter = CpuMeter()
            out = run_driver(place, "submit", str(run_file), name=f"s6-{samples}-r{repeat}",
                          timeout=min(deadline.remaining(), ctx.budget(60 + samples / 250)))
            cpu = meter.stop()
            queued = ctx.redis.queue_length()
            if queued != samples:
                raise RuntimeError(f"{queued} messages queued after submitting {samples} samples")
            sps = samples / out["submit_s"]
            run = {"samples": samples, "repeat": repeat, "submit_s": round(out["submit_s"], 3),
                   "throughput_sps": round(sps, 1), "queued": queued,
                   "rss_before_submit_mb": round(out["rss_before_kb"] / 1024, 1),
                   "peak_rss_during_submit_mb": round(out["peak_rss_during_kb"] / 1024, 1),
                   "peak_rss_process_mb": round(out["peak_rss_kb"] / 1024, 1), "cpu": cpu, "quiet_wait": quiet}
            result.runs.append(run)
            rates.setdefault(samples, []).append(run["throughput_sps"])
            peaks.setdefault(samples, []).append(run["peak_rss_process_mb"])
            log(f"    s6-{samples}-r{repeat}: {sps:.0f} samples/s, peak RSS {run['peak_rss_process_mb']} MB "
                f"(before submit {run['rss_before_submit_mb']} MB), other load {cpu['other_share']:.0%}")
    ctx.redis.flush()
    small, large = sizes
    rate.runs = rates[large]
    rate.note = f"{small:,} samples: median {median(rates[small]):.0f} samples/s"
    rate.settle(lambda v: v >= 5000)
    growth = 100 * (median(peaks[large]) - median(peaks[small])) / median(peaks[small])
    memory.note = (f"peak RSS {median(peaks[small]):.1f} MB at {small:,}, {median(peaks[large]):.1f} MB at {large:,}"
                   f" ({median(peaks[large]) - median(peaks[small]):+.1f} MB)")
    memory.settle(lambda v: v <= 10, round(growth, 1))
    result.figures["peak_rss_mb"] = {str(n): {"runs": p, "median": median(p)} for n, p in peaks.items()}
    result.figures["throughput_sps"] = {str(n): {"runs": r, "median": median(r)} for n, r in rates.items()}


class _Progress(threading.Thread):
    """Watches a task result in the shared SQLite database: when its last sample was recorded
    (aggregation starts) and when it was settled."""

    def __init__(self, database: Path, sampler: RssSampler):
        super().__init__(daemon=True, name="progress-watch")
        self.database = database
        self.sampler = sampler
        self.all_done_at: float | None = None
        self.settled_at: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.25):
            try:
                with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as connection:
                    row = connection.execute("SELECT done, total, status FROM task_results ORDER BY id DESC "
                                             "LIMIT 1").fetchone()
            except sqlite3.Error:
                continue
            if row is None:
                continue
            done, total, status = row
            if self.all_done_at is None and done >= total:
                self.all_done_at = self.sampler.now()
            if self.settled_at is None and status in ("success", "error", "cancelled") and done >= total:
                self.settled_at = self.sampler.now()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def scenario_7(ctx: Context, result: Result) -> None:
    samples = ctx.size(100_000, 10_000)
    warmup = 1_000
    concurrency = 32
    result.config.update({"samples": samples, "workers": 2, "worker_concurrency": concurrency, "warm_up_samples": warmup,
                          "model": "mock$target", "cache_policy": "no-cache", "rss_sampling_s": 0.25,
                          "method": "workers' RSS sampled from /proc during the run; growth = peak during the "
                          "run (aggregation included) minus RSS after a warm-up run; aggregation re-run "
                          "`repeats` times in a fresh process (status reset), peak RSS = the process's VmHWM"})
    worker_growth = Check("worker RSS growth over the run (worst worker)", "<= 50 MB", "MB")
    aggregator = Check(f"aggregator peak RSS, {samples:,}-sample log (separate process)", "<= 300 MB", "MB")
    result.checks += [worker_growth, aggregator]
    deadline = Deadline(ctx.budget(300 + mock_budget(samples) + ctx.repeats * (60 + samples / 500)), "scenario 7")
    place = Place.fresh(WORK / "s7", ctx.redis.url)
    ctx.redis.flush()
    warm_file = workload.run_file(place.root, "s7-warmup", workload.dataset(warmup, prefix="w"))
    run_file = workload.run_file(place.root, "s7", workload.dataset(samples))
    with Workers(place, 2, concurrency, deadline) as workers:
        idle = {name: workers.workers[i].rss_kb() for i, name in enumerate(workers.pids)}
        evalfleet_run(place, warm_file, warmup, name="s7-warmup", timeout=min(deadline.remaining(), 300))
        sampler = RssSampler(workers.pids, interval_s=0.25)
        watch = _Progress(place.root / "evalfleet.db", sampler)
        watch.start()
        try:
            time.sleep(0.5)
            baseline = {name: sampler.at(name, sampler.now()) for name in workers.pids}
            run = evalfleet_run(place, run_file, samples, name="s7-run",
                                timeout=min(deadline.remaining(), ctx.budget(mock_budget(samples))))
            time.sleep(0.5)
        finally:
            watch.stop()
            sampler.stop()
        per_worker = {}
        for name in workers.pids:
            peak = sampler.peak(name)
            agg_peak = sampler.peak(name, since=watch.all_done_at or 0.0) if watch.all_done_at else None
            before_agg = sampler.at(name, watch.all_done_at) if watch.all_done_at else None
            per_worker[name] = {
                "rss_idle_mb": mb(idle[name]), "rss_after_warmup_mb": mb(baseline[name]), "peak_rss_mb": mb(peak),
                "growth_mb": mb(peak - baseline[name]) if peak and baseline[name] else None,
                "rss_before_aggregation_mb": mb(before_agg), "peak_rss_during_aggregation_mb": mb(agg_peak),
                "rss_end_mb": mb(sampler.series[name][-1][1]) if sampler.series[name] else None,
                "series_mb": [(round(t, 1), mb(v)) for t, v in sampler.series[name][:: max(1, len(
                    sampler.series[name]) // 200)]],
            }
        run.update(aggregation_window_s=(round(watch.settled_at - watch.all_done_at, 2)
                                         if watch.all_done_at and watch.settled_at else None),
                   workers=per_worker)
        result.runs.append({"kind": "evaluation", **run})
        worker_growth.runs = [w["growth_mb"] for w in per_worker.values() if w["growth_mb"] is not None]
        worker_growth.note = ", ".join(f"{n}: {w['rss_after_warmup_mb']} -> peak {w['peak_rss_mb']} MB"
                                       for n, w in per_worker.items())
        worker_growth.settle(lambda v: v <= 50, max(worker_growth.runs) if worker_growth.runs else None)
    task_result_id = _task_result_id(place.root / "evalfleet.db", run["run_id"])
    for repeat in range(1, ctx.repeats + 1):
        out = run_driver(place, "aggregate", str(task_result_id), name=f"s7-aggregate-r{repeat}",
                      timeout=min(deadline.remaining(), ctx.budget(120 + samples / 200)))
        stats = log_stats(out["log_path"])
        if stats["samples"] != samples or stats["status"] != "success":
            raise RuntimeError(f"re-aggregated log: {stats['samples']} samples, status {stats['status']}")
        entry = {"kind": "aggregation", "repeat": repeat, "aggregate_s": round(out["aggregate_s"], 2),
                 "peak_rss_process_mb": mb(out["peak_rss_kb"]), "rss_before_mb": mb(out["rss_before_kb"]),
                 "peak_rss_during_mb": mb(out["peak_rss_during_kb"]), "log_size_mb": stats["size_mb"]}
        result.runs.append(entry)
        aggregator.runs.append(entry["peak_rss_process_mb"])
        log(f"    s7-aggregate-r{repeat}: {samples} samples in {out['aggregate_s']:.1f} s, peak RSS "
            f"{entry['peak_rss_process_mb']} MB (before {entry['rss_before_mb']} MB), log {stats['size_mb']} MB")
    aggregator.note = "in-worker aggregation: " + ", ".join(
        f"{n}: {w['rss_before_aggregation_mb']} -> {w['peak_rss_during_aggregation_mb']} MB"
        for n, w in per_worker.items())
    aggregator.settle(lambda v: v <= 300)
    result.figures["throughput_sps"] = run["throughput_sps"]



def _task_result_id(database: Path, run_id: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute("SELECT id FROM task_results WHERE run_id = ?", (run_id,)).fetchone()[0]


SCENARIOS: dict[str, tuple[str, str, Callable[[Context, Result], None]]] = {
    "1": ("Zero-latency throughput, cluster mode (2 workers on Redis)", ">= 800 samples/s and >= 7x Inspect AI",
          scenario_1),
    "2": ("Zero-latency throughput, embedded default (one process)", ">= 10x Inspect AI", scenario_2),
    "3": ("Latency-bound efficiency (500 ms, concurrency 200)", ">= 85% of ideal 400 samples/s", scenario_3),
    "4": ("Horizontal scaling (1, 2, 4 workers x -c 50, 1 s latency)", "T(N) >= 0.9 x N x T(1)", scenario_4),
    "5": ("Cache speed-up (scenario 3 re-run with reuse)", "0 model calls and >= 20x faster", scenario_5),
    "6": ("Submission (enqueue only, no workers)", ">= 5,000 samples/s, submitter memory flat", scenario_6),
    "7": ("Aggregation and worker memory (100k samples; 10k with --quick)", "aggregator peak RSS <= 300 MB, worker growth <= 50 MB",
          scenario_7),
}


def run_scenario(ctx: Context, key: str) -> Result:
    from datetime import UTC, datetime

    from benchmarks.harness.system import git_commit

    title, targets, function = SCENARIOS[key]
    # The code measured is what is on disk when the scenario starts its processes (editable install).
    result = Result(key, title, targets, measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    evalfleet_git=git_commit())
    log(f"Scenario {key}: {title}")
    started = time.monotonic()
    try:
        function(ctx, result)
    except ScenarioTimeout as exc:
        result.error = f"timeout: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded, the next scenario still runs
        result.error = describe_error(exc)
    finally:
        result.duration_s = round(time.monotonic() - started, 1)
        result.notes += _error_notes(result.runs)
    log(f"Scenario {key}: {result.status} in {result.duration_s:.0f} s" + (f" ({result.error.splitlines()[0]})"
                                                                          if result.error else ""))
    return result


def _error_notes(runs: list[dict[str, Any]]) -> list[str]:
    """A note for every measured run in which samples failed (the run still counted as done)."""
    notes = []

    def walk(node: Any, name: str) -> None:
        if isinstance(node, dict):
            if node.get("errors") and node.get("first_error"):
                notes.append(f"{node['errors']} of {node['samples']} samples failed in run {name} "
                             f"({node['run_id'][:8]}): {node['first_error']}")
            for key, value in node.items():
                walk(value, f"{name}/{key}" if key in ("first", "cached") else name)
        elif isinstance(node, list):
            for value in node:
                walk(value, name)

    for index, run in enumerate(runs, start=1):
        label = f"#{index}" + (f" ({run['workers']} workers)" if isinstance(run.get("workers"), int) else "")
        walk(run, label)
    return notes





# Scenarios of later features live in modules of their own, named after what they measure.
from benchmarks.harness import (  # noqa: E402 - they build on the definitions above
    api_paging,
    autoscaling,
    judging,
    log_tooling,
    million_samples,
    parquet_export,
    recovery,
)

for _module in (recovery, log_tooling, api_paging, parquet_export, million_samples, judging, autoscaling):
    SCENARIOS.update(_module.SCENARIOS)
