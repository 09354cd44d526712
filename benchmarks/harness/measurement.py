"""What every scenario measures with: the result types (checks, medians, a scenario's result),
the run context, and an evalfleet run driven in a subprocess with its throughput, CPU and log
counts."""

from __future__ import annotations

import json
import statistics
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.cluster import FakeOpenAI, Place, RedisDb
from benchmarks.harness.system import WORK, CpuMeter, log, run_process, wait_for_quiet

# -- results ---------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    target: str
    unit: str
    runs: list[float] = field(default_factory=list)
    median: float | None = None
    passed: bool | None = None
    note: str = ""

    def settle(self, predicate: Callable[[float], bool], value: float | None = None) -> Check:
        if value is None and self.runs:
            value = statistics.median(self.runs)
        self.median = value
        self.passed = None if value is None else bool(predicate(value))
        return self


@dataclass
class Result:
    id: str
    title: str
    targets: str
    config: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    measured_at: str = ""
    evalfleet_git: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if not self.checks:
            return "info"
        if any(c.passed is None for c in self.checks):
            return "incomplete"
        return "pass" if all(c.passed for c in self.checks) else "fail"

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["status"] = self.status
        return document


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Context:
    repeats: int
    quick: bool
    redis: RedisDb
    quiet_wait_s: float
    timeout_scale: float
    inspect_install: bool = True
    inspect: Result | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def budget(self, seconds: float) -> float:
        return seconds * self.timeout_scale


def quiet_before_measuring(ctx: Context) -> dict[str, Any]:
    if ctx.quiet_wait_s <= 0:
        return {}
    return wait_for_quiet(ctx.quiet_wait_s)


def mock_budget(samples: int) -> float:
    """A generous bound for a zero-latency run: 60 s plus 25 samples/s."""
    return 60 + samples / 25


# -- evalfleet runs --------------------------------------------------------------------------------


def run_driver(place: Place, *args: str, timeout: float, name: str) -> dict[str, Any]:
    completed = run_process([sys.executable, "-m", "benchmarks.harness.driver", *args], env=place.env(),
                            cwd=place.root, timeout=timeout, name=name)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} exited {completed.returncode}:\n{completed.stderr[-3000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    result["process_wall_s"] = completed.wall_s
    return result


def log_stats(path: str) -> dict[str, Any]:
    """Counts and stats of a task result log (parsed whole: the harness is not what is measured)."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    samples = document["samples"]
    errors = [s["error"] for s in samples if s.get("error")]
    first = f"{errors[0]['type']}: {errors[0]['message'].splitlines()[0][:200]}" if errors else None
    return {"status": document["status"], "samples": len(samples), "errors": len(errors), "first_error": first,
            "stats": document["stats"], "size_mb": round(Path(path).stat().st_size / 1e6, 1)}


def evalfleet_run(place: Place, run_file: Path, samples: int, *, timeout: float, name: str,
                  concurrency: int | None = None) -> dict[str, Any]:
    """`evalfleet run --json` in a driver process; throughput from submit to the last log written."""
    args = ["run", str(run_file)] + (["--concurrency", str(concurrency)] if concurrency else [])
    meter = CpuMeter()
    result = run_driver(place, *args, timeout=timeout, name=name)
    cpu = meter.stop()
    report = result["report"]
    (task_result,) = report["task_results"]
    if report["status"] != "success" or task_result["done"] != samples:
        raise RuntimeError(f"{name}: run {report['status']}, {task_result['done']}/{samples} done, "
                           f"error {report.get('error') or task_result.get('error')}")
    log_path = task_result["log_path"]
    to_last_log = Path(log_path).stat().st_mtime - result["started_epoch"]
    stats = log_stats(log_path)
    if stats["samples"] != samples:
        raise RuntimeError(f"{name}: the log holds {stats['samples']} samples, expected {samples}")
    run = {
        "samples": samples,
        "submit_to_last_log_s": round(to_last_log, 3),
        "cli_wall_s": round(result["wall_s"], 3),
        "process_wall_s": round(result["process_wall_s"], 3),
        "log_duration_s": round(stats["stats"]["duration_s"], 3),
        "throughput_sps": round(samples / to_last_log, 1),
        "errors": task_result["errors"],
        "first_error": stats["first_error"],
        "model_calls": task_result["model_calls"],
        "cache_hits": task_result["cache_hits"],
        "log_size_mb": stats["size_mb"],
        "run_id": report["run_id"],
        "log_path": log_path,
        "driver_peak_rss_mb": round(result["peak_rss_kb"] / 1024, 1),
        "cpu": cpu,
    }
    log(f"    {name}: {samples} samples in {to_last_log:.2f} s = {run['throughput_sps']:.0f} samples/s "
        f"(model calls {run['model_calls']}, cache hits {run['cache_hits']}, "
        f"other load {cpu['other_share']:.0%})")
    if run["errors"]:
        log(f"    WARNING {name}: {run['errors']} sample(s) failed; first: {run['first_error']}")
    return run


def latency_setup(ctx: Context, name: str, latency_ms: float) -> tuple[Place, FakeOpenAI]:
    place = Place.fresh(WORK / name, ctx.redis.url)
    ctx.redis.flush()
    return place, FakeOpenAI(place, latency_ms)


def latency_budget(samples: int, ideal_sps: float) -> float:
    """A bound for a latency-bound run: 60 s plus four times the ideal duration."""
    return 60 + 4 * samples / ideal_sps


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__, limit=4))}"
