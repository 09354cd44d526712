"""The reference of scenarios 1 and 2: Inspect AI on the same samples, in its own virtual
environment, run by `inspect_driver.py`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.harness import workload
from benchmarks.harness.measurement import Context, Result, describe_error, median, quiet_before_measuring
from benchmarks.harness.system import WORK, CpuMeter, Deadline, log, run_process

# The Inspect AI venv (its pinned version and place) is the tests' too: one module knows both.
from tests.support.inspect_venv import ensure_inspect_venv
from tests.support.inspect_venv import inspect_version as inspect_version  # read by benchmarks.run

INSPECT_DRIVER = Path(__file__).with_name("inspect_driver.py")


# -- Inspect AI --------------------------------------------------------------------------------------


def inspect_baseline(ctx: Context) -> Result:
    """Inspect AI on the same 20,000 samples with mockllm/model: the reference of scenarios 1 and 2."""
    if ctx.inspect is not None:
        return ctx.inspect
    samples = ctx.size(20_000, 2_000)
    from datetime import UTC, datetime

    result = Result("ref", "Inspect AI reference: same samples, mockllm/model, includes()",
                    "reference for 1 and 2", config={"samples": samples, "model": "mockllm/model",
                                                     "display": "none"},
                    measured_at=datetime.now(UTC).isoformat(timespec="seconds"))
    started = time.monotonic()
    log(f"Inspect AI reference: {samples} samples x {ctx.repeats}")
    try:
        per_run = 60 + samples / 10  # a floor of 10 samples/s
        deadline = Deadline(ctx.budget(1200 + ctx.repeats * per_run), "Inspect AI reference")
        python = ensure_inspect_venv(ctx.inspect_install, log=lambda message: log(f"  {message}"))
        data = workload.dataset(samples)
        rates = []
        for repeat in range(1, ctx.repeats + 1):
            quiet = quiet_before_measuring(ctx)
            log_dir = WORK / "inspect-logs" / f"r{repeat}"
            meter = CpuMeter()
            completed = run_process([str(python), str(INSPECT_DRIVER), str(data), str(log_dir)],
                                    env=_inspect_env(), cwd=WORK,
                                    timeout=min(deadline.remaining(), ctx.budget(per_run)),
                                    name=f"inspect-r{repeat}")
            cpu = meter.stop()
            if completed.returncode != 0:
                raise RuntimeError(f"Inspect AI exited {completed.returncode}:\n{completed.stderr[-3000:]}")
            out = json.loads([line for line in completed.stdout.splitlines() if line.strip()][-1])
            if out["status"] != "success" or out["completed_samples"] != samples:
                raise RuntimeError(f"Inspect AI run {out['status']}: {out}")
            rate = samples / out["wall_s"]
            rates.append(round(rate, 1))
            result.config["inspect_ai"] = out["inspect_ai"]
            result.runs.append({"repeat": repeat, "wall_s": round(out["wall_s"], 3), "throughput_sps": round(rate, 1),
                                "process_wall_s": round(completed.wall_s, 3), "peak_rss_mb":
                                round(out["peak_rss_kb"] / 1024, 1), "log": out["log_location"], "cpu": cpu,
                                "quiet_wait": quiet})
            log(f"    inspect r{repeat}: {samples} samples in {out['wall_s']:.2f} s = {rate:.0f} samples/s "
                f"(other load {cpu['other_share']:.0%})")
        result.figures["throughput_sps"] = {"runs": rates, "median": median(rates)}
    except Exception as exc:  # noqa: BLE001
        result.error = describe_error(exc)
    result.duration_s = round(time.monotonic() - started, 1)
    ctx.inspect = result
    return result


def _inspect_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALFLEET_", "INSPECT_", "OPENAI_"))
           and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"INSPECT_DISPLAY": "none", "PYTHONUNBUFFERED": "1", "TIKTOKEN_CACHE_DIR": str(WORK / "tiktoken")})
    return env


def inspect_rate(ctx: Context) -> float | None:
    reference = inspect_baseline(ctx)
    return reference.figures.get("throughput_sps", {}).get("median")
