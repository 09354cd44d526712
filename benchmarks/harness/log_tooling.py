"""Scenario 9: task result logs at scale. On a generated 1,000,000-sample log (100,000 with
--quick): a header-only read (local, and on S3 through the moto server), a streaming pass over
every sample, and conversion to Inspect AI's `.eval`; `logs list` over 1,000 small logs; and, side
by side in the same run, Inspect AI's own `read_eval_log` against evalfleet's reader on the same
converted data. Every figure is timed in a fresh process (`benchmarks.harness.log_driver`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness.cluster import Place
from benchmarks.harness.measurement import Check, Context, Result, median, quiet_before_measuring
from benchmarks.harness.system import REPO, WORK, Deadline, log, run_process

BIG, BIG_QUICK = 1_000_000, 100_000
# Inspect's reader holds every sample of a log in memory; the side-by-side comparison uses a
# log of this size so it finishes on a 2-core, 24 GiB machine.
COMPARED = 100_000
LISTED, LISTED_SAMPLES = 1_000, 10


def _drive(place: Place, *args: str, timeout: float, name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run_process([sys.executable, "-m", "benchmarks.harness.log_driver", *args], env=place.env(**(env or {})),
                       cwd=REPO, timeout=timeout, name=name)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _inspect_read(python: Path, path: Path, *, header_only: bool, timeout: float, name: str) -> dict[str, Any]:
    script = REPO / "benchmarks" / "harness" / "inspect_log_read.py"
    argv = [str(python), str(script), str(path)] + (["--header-only"] if header_only else [])
    done = run_process(argv, env={"PATH": "/usr/bin:/bin", "HOME": str(WORK)}, cwd=WORK, timeout=timeout, name=name)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenario_9(ctx: Context, result: Result) -> None:
    samples = ctx.size(BIG, BIG_QUICK)
    result.config.update({"samples": samples, "listed_logs": LISTED, "samples_per_listed_log": LISTED_SAMPLES,
                          "inspect_compared_samples": COMPARED, "method": "each figure in a fresh process, "
                          "after imports; page cache warm (the file was just written)"})
    header_local = Check(f"header-only read, {samples:,}-sample log, local", "< 50 ms", "ms")
    header_s3 = Check(f"header-only read, {samples:,}-sample log, S3 (moto server)", "reported", "ms")
    listing = Check(f"logs list over {LISTED:,} local logs", "< 2 s", "s")
    streaming = Check(f"streaming iteration, {samples:,} samples", ">= 50,000 samples/s", "samples/s")
    memory = Check("streaming iteration peak RSS", "< 200 MB", "MB")
    converting = Check(f"conversion to Inspect .eval, {samples:,} samples", "reported", "s")
    versus = Check(f"full read of a {COMPARED:,}-sample log: Inspect read_eval_log / evalfleet iter_samples",
                   "reported", "x")
    result.checks += [header_local, header_s3, listing, streaming, memory, converting, versus]
    deadline = Deadline(ctx.budget(1800 + samples / 500), "scenario 9")
    place = Place.fresh(WORK / "s9", None)
    big = place.root / "big.json"
    made = _drive(place, "generate", str(samples), str(big), timeout=deadline.remaining(), name="s9-generate")
    log(f"  generated {samples:,} samples, {made['bytes'] / 1e6:.0f} MB")
    result.figures["log_size_mb"] = round(made["bytes"] / 1e6, 1)
    for repeat in range(1, ctx.repeats + 1):
        quiet = quiet_before_measuring(ctx)
        head = _drive(place, "header", str(big), timeout=min(deadline.remaining(), 120), name=f"s9-header-r{repeat}")
        walk = _drive(place, "iterate", str(big), timeout=deadline.remaining(), name=f"s9-iterate-r{repeat}")
        header_local.runs.append(round(head["seconds"] * 1000, 2))
        streaming.runs.append(round(walk["samples"] / walk["seconds"]))
        memory.runs.append(round(walk["peak_rss_kb"] / 1024, 1))
        result.runs.append({"repeat": repeat, "quiet_wait": quiet, "header_s": head["seconds"],
                            "iterate_s": walk["seconds"], "iterate_peak_rss_kb": walk["peak_rss_kb"]})
        log(f"    s9-r{repeat}: header {head['seconds'] * 1000:.1f} ms; {walk['samples']:,} samples streamed in "
            f"{walk['seconds']:.1f} s, peak RSS {walk['peak_rss_kb'] / 1024:.0f} MB")
    header_local.settle(lambda v: v < 50)
    streaming.settle(lambda v: v >= 50_000)
    memory.settle(lambda v: v < 200, max(memory.runs))
    memory.note = "worst repeat"

    listed_dir = place.root / "listed"
    _drive(place, "logs", str(LISTED), str(LISTED_SAMPLES), str(listed_dir), timeout=deadline.remaining(),
           name="s9-make-logs")
    for repeat in range(1, ctx.repeats + 1):
        out = _drive(place, "list", str(listed_dir), timeout=min(deadline.remaining(), 120), name=f"s9-list-r{repeat}")
        if out["logs"] != LISTED:
            raise RuntimeError(f"logs list found {out['logs']} logs of {LISTED}")
        listing.runs.append(round(out["seconds"], 3))
    listing.settle(lambda v: v < 2)

    _s3_header(ctx, place, big, header_s3, deadline)

    converted_dir = place.root / "inspect"
    for repeat in range(1, ctx.repeats + 1):
        shutil.rmtree(converted_dir, ignore_errors=True)
        out = _drive(place, "convert", str(big), str(converted_dir), timeout=deadline.remaining(),
                     name=f"s9-convert-r{repeat}")
        converting.runs.append(round(out["seconds"], 1))
        result.runs.append({"repeat": repeat, "convert_s": out["seconds"], "convert_peak_rss_kb": out["peak_rss_kb"],
                            "eval_bytes": Path(out["path"]).stat().st_size})
    converting.note = f"peak RSS {max(r.get('convert_peak_rss_kb', 0) for r in result.runs) / 1024:.0f} MB"
    converting.settle(lambda v: True)
    _side_by_side(ctx, place, versus, deadline)


def _s3_header(ctx: Context, place: Place, big: Path, check: Check, deadline: Deadline) -> None:
    import boto3

    from tests.support.moto import moto_server, s3_environment

    with moto_server(place.root / "moto.log") as endpoint:
        env = s3_environment(endpoint, place.root)
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        client.upload_file(str(big), "bench", "logs/big.json")
        for repeat in range(1, ctx.repeats + 1):
            out = _drive(place, "header", "s3://bench/logs/big.json", env=env, timeout=min(deadline.remaining(), 120),
                         name=f"s9-s3-header-r{repeat}")
            check.runs.append(round(out["seconds"] * 1000, 1))
    check.note = "one ranged GET of the first 64 KB"
    check.settle(lambda v: True)


def _side_by_side(ctx: Context, place: Place, check: Check, deadline: Deadline) -> None:
    from tests.support.inspect_venv import ensure_inspect_venv

    python = ensure_inspect_venv()
    compared = place.root / "compared.json"
    _drive(place, "generate", str(COMPARED), str(compared), timeout=deadline.remaining(), name="s9-generate-compared")
    converted_dir = place.root / "compared-inspect"
    shutil.rmtree(converted_dir, ignore_errors=True)
    eval_path = Path(_drive(place, "convert", str(compared), str(converted_dir), timeout=deadline.remaining(),
                            name="s9-convert-compared")["path"])
    ratios, theirs, ours = [], [], []
    for repeat in range(1, ctx.repeats + 1):
        inspect = _inspect_read(python, eval_path, header_only=False, timeout=deadline.remaining(),
                                name=f"s9-inspect-read-r{repeat}")
        mine = _drive(place, "iterate", str(compared), timeout=deadline.remaining(), name=f"s9-ours-read-r{repeat}")
        theirs.append(inspect["seconds"])
        ours.append(mine["seconds"])
        ratios.append(round(inspect["seconds"] / mine["seconds"], 1))
        log(f"    s9-compare-r{repeat}: Inspect read_eval_log {inspect['seconds']:.1f} s "
            f"(peak RSS {inspect['peak_rss_kb'] / 1024:.0f} MB), evalfleet iter_samples {mine['seconds']:.2f} s "
            f"(peak RSS {mine['peak_rss_kb'] / 1024:.0f} MB)")
    check.runs = ratios
    check.note = (f"Inspect {median(theirs):.1f} s, evalfleet {median(ours):.2f} s (medians), "
                  f"{COMPARED:,} samples, Inspect's own .eval reader on the converted file")
    check.settle(lambda v: True)


SCENARIOS = {
    "9": ("Task result logs at scale (1,000,000 samples; 100,000 with --quick)",
          "header < 50 ms, list 1,000 logs < 2 s, stream >= 50,000 samples/s under 200 MB", scenario_9),
}
