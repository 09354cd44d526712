"""Scenarios 12-15: million-sample runs.

12  embedded, 100,000 then 1,000,000 samples (`mock$target`, cache policy reuse, so every result
    is also packed into the local result store): samples/s, peak RSS of the one process and its
    growth from 100k to 1M, database and store bytes per sample.
13  cluster, 2 workers on Redis + PostgreSQL, 100,000 then 1,000,000 samples, fresh workers and a
    fresh database for each size: every sample exactly once, peak RSS of the submitter and of
    each worker (growth 100k -> 1M), samples/s, PostgreSQL bytes per sample.
14  result store on S3 (moto server) with the Redis index, 1,000,000 samples: objects written,
    bytes against the entries' JSON, then the cached re-run (0 model calls, time).
15  20 samples over a 5 MB prompt template, prompts logged in full (the default) and by reference.

With --quick every size is divided by 10. One repeat of each size: a 10^6 run takes minutes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import workload
from benchmarks.harness.api_paging import _fresh_database
from benchmarks.harness.cluster import Place, Workers, evalfleet_command
from benchmarks.harness.measurement import Check, Context, Result, mb, quiet_before_measuring, run_driver
from benchmarks.harness.system import WORK, Deadline, RssSampler, log, run_process


def _run(place: Place, run_file: Path, samples: int, *, name: str, timeout: float) -> dict[str, Any]:
    """`evalfleet run` in a driver process; the log is checked from its header (a 10^6-sample log
    is not parsed whole by the harness)."""
    import evalfleet

    result = run_driver(place, "run", str(run_file), timeout=timeout, name=name)
    report = result["report"]
    (task_result,) = report["task_results"]
    header = evalfleet.read_log(task_result["log_path"], header_only=True)
    if report["status"] != "success" or task_result["done"] != samples or header.sample_count != samples:
        raise RuntimeError(f"{name}: run {report['status']}, {task_result['done']}/{samples} done, log "
                           f"{header.sample_count} samples, error {report.get('error') or task_result.get('error')}")
    elapsed = Path(task_result["log_path"]).stat().st_mtime - result["started_epoch"]
    run = {"samples": samples, "submit_to_last_log_s": round(elapsed, 1), "throughput_sps": round(samples / elapsed),
           "model_calls": task_result["model_calls"], "cache_hits": task_result["cache_hits"],
           "errors": task_result["errors"], "log_status": header.status, "run_id": report["run_id"],
           "log_size_mb": round(Path(task_result["log_path"]).stat().st_size / 1e6, 1),
           "driver_peak_rss_mb": mb(result["peak_rss_kb"])}
    log(f"    {name}: {samples:,} samples in {elapsed:.1f} s = {run['throughput_sps']:,} samples/s, peak RSS "
        f"{run['driver_peak_rss_mb']} MB, model calls {run['model_calls']:,}, cache hits {run['cache_hits']:,}")
    return run


def _store_stats(place: Place) -> dict[str, Any]:
    done = run_process(evalfleet_command() + ["store", "stats", "--json"], env=place.env(), cwd=place.root,
                       timeout=300, name="store-stats")
    if done.returncode != 0:
        raise RuntimeError(f"store stats failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _growth(small: float, large: float) -> float:
    return round(100 * (large - small) / small, 1)


def _sizes(ctx: Context) -> tuple[int, int]:
    return ctx.size(100_000, 10_000), ctx.size(1_000_000, 100_000)


def scenario_12(ctx: Context, result: Result) -> None:
    small, large = _sizes(ctx)
    result.config.update({"samples": [small, large], "mode": "embedded", "model": "mock$target", "task": "qa",
                          "cache_policy": "reuse (first run: every sample packed into the store)",
                          "database": "sqlite", "peak_rss": "VmHWM of the one evalfleet process"})
    rate = Check(f"throughput, {large:,} samples", ">= 2,000 samples/s", "samples/s")
    peak = Check(f"peak RSS, {large:,} samples", "< 400 MB", "MB")
    growth = Check(f"peak RSS growth {small:,} -> {large:,} samples", "< 20%", "%")
    footprint = Check("database + result store bytes per sample (SQLite, packs)", "reported", "bytes")
    result.checks += [rate, peak, growth, footprint]
    deadline = Deadline(ctx.budget(600 + (small + large) / 500), "scenario 12")
    runs = {}
    for samples in (small, large):
        place = Place.fresh(WORK / "s12", None)
        run_file = workload.run_file(place.root, "s12", workload.dataset(samples), cache_policy="reuse")
        quiet = quiet_before_measuring(ctx)
        run = _run(place, run_file, samples, name=f"s12-{samples}", timeout=deadline.remaining())
        database = sum(p.stat().st_size for p in place.root.glob("evalfleet.db*"))
        store = _store_stats(place)
        run.update(quiet_wait=quiet, database_bytes=database, store=store,
                   bytes_per_sample={"database": round(database / samples), "store": round(store["bytes"] / samples)})
        runs[samples] = run
        result.runs.append(run)
    rate.settle(lambda v: v >= 2000, runs[large]["throughput_sps"])
    peak.settle(lambda v: v < 400, runs[large]["driver_peak_rss_mb"])
    growth.settle(lambda v: v < 20, _growth(runs[small]["driver_peak_rss_mb"], runs[large]["driver_peak_rss_mb"]))
    growth.note = f"{runs[small]['driver_peak_rss_mb']} -> {runs[large]['driver_peak_rss_mb']} MB"
    per_sample = runs[large]["bytes_per_sample"]
    footprint.settle(lambda v: True, per_sample["database"] + per_sample["store"])
    footprint.note = (f"database {per_sample['database']} B + store {per_sample['store']} B per sample; "
                      f"{runs[large]['store']['packs']:,} packs for {runs[large]['store']['entries']:,} entries")


def scenario_13(ctx: Context, result: Result) -> None:
    small, large = _sizes(ctx)
    concurrency = 32
    result.config.update({"samples": [small, large], "workers": 2, "worker_concurrency": concurrency,
                          "broker": "Redis", "database": "PostgreSQL (local)", "model": "mock$target",
                          "cache_policy": "reuse (first run)", "rss_sampling_s": 0.5,
                          "method": "fresh workers and database per size; exactly once = rows, log samples and "
                          "model calls all equal to the samples"})
    once = Check(f"every sample exactly once, {large:,} samples", "rows = log samples = model calls", "samples")
    rate = Check(f"throughput, {large:,} samples", "(reported)", "samples/s")
    growth = Check(f"peak RSS growth {small:,} -> {large:,}, worst process", "< 20%", "%")
    footprint = Check("PostgreSQL bytes per sample", "reported", "bytes")
    result.checks += [once, rate, growth, footprint]
    deadline = Deadline(ctx.budget(900 + (small + large) / 300), "scenario 13")
    runs = {}
    for samples in (small, large):
        database = _fresh_database()
        place = Place.fresh(WORK / "s13", ctx.redis.url, EVALFLEET_DATABASE_URL=database,
                            EVALFLEET_REDIS_URL=ctx.redis.url)
        ctx.redis.flush()
        run_file = workload.run_file(place.root, "s13", workload.dataset(samples), cache_policy="reuse")
        with Workers(place, 2, concurrency, deadline) as workers:
            sampler = RssSampler(workers.pids, interval_s=0.5)
            try:
                run = _run(place, run_file, samples, name=f"s13-{samples}", timeout=deadline.remaining())
            finally:
                sampler.stop()
            run["worker_peak_rss_mb"] = {name: mb(sampler.peak(name)) for name in workers.pids}
        import psycopg

        with psycopg.connect(database) as connection:
            rows = connection.execute("SELECT count(*), count(DISTINCT sample_id) FROM sample_results").fetchone()
            size = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        run.update(rows=rows[0], distinct_ids=rows[1], database_bytes=size, bytes_per_sample=round(size / samples))
        runs[samples] = run
        result.runs.append(run)
    big = runs[large]
    counts = {big["rows"], big["distinct_ids"], big["model_calls"] + big["cache_hits"], big["samples"]}
    once.settle(lambda v: len(counts) == 1, big["rows"])
    once.note = (f"rows {big['rows']:,}, distinct ids {big['distinct_ids']:,}, model calls {big['model_calls']:,}, "
                 f"cache hits {big['cache_hits']:,}")
    rate.settle(lambda v: True, big["throughput_sps"])
    processes = {"submitter": (runs[small]["driver_peak_rss_mb"], big["driver_peak_rss_mb"])}
    for name in big["worker_peak_rss_mb"]:
        processes[name] = (runs[small]["worker_peak_rss_mb"][name], big["worker_peak_rss_mb"][name])
    growths = {name: _growth(a, b) for name, (a, b) in processes.items()}
    growth.settle(lambda v: v < 20, max(growths.values()))
    growth.note = ", ".join(f"{name}: {a} -> {b} MB" for name, (a, b) in processes.items())
    footprint.settle(lambda v: True, big["bytes_per_sample"])
    footprint.note = f"database {big['database_bytes'] / 1e6:.0f} MB for {large:,} samples"


def _bucket_objects(endpoint: str, bucket: str, prefix: str) -> tuple[int, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
    return count, size


def _entries_json_bytes(place: Place) -> int:
    """The uncompressed size of every packed entry (what one JSON object per entry would hold)."""
    code = ("import json\nfrom shared.result_store import result_store\nfrom shared.packs import entries_of\n"
            "store = result_store()\ntotal = 0\n"
            "for name in store.blobs.list('packs'):\n"
            "    total += sum(len(raw) for _, raw in entries_of(store.blobs.read_bytes(name)).values())\n"
            "print(json.dumps(total))\n")
    done = run_process([sys.executable, "-c", code], env=place.env(), cwd=place.root, timeout=1800,
                       name="entries-json-bytes")
    if done.returncode != 0:
        raise RuntimeError(f"reading the packs failed: {done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def scenario_14(ctx: Context, result: Result) -> None:
    from tests.support.moto import moto_server, s3_environment

    samples = ctx.size(1_000_000, 100_000)
    bucket, prefix = "bench-store", "store"
    result.config.update({"samples": samples, "mode": "embedded", "store": f"s3://{bucket}/{prefix} (moto server)",
                          "index": "Redis (EVALFLEET_REDIS_URL) + packs' durable index in SQLite",
                          "model": "mock$target", "cache_policy": "reuse"})
    objects = Check(f"S3 objects written, {samples:,} samples", "<= 5,000 per 1,000,000", "objects")
    ratio = Check("bytes on S3 / entries' JSON bytes", "<= 2", "x")
    calls = Check(f"cached re-run of {samples:,} samples: model calls", "= 0", "calls")
    cached_time = Check(f"cached re-run of {samples:,} samples: time", "reported", "s")
    result.checks += [objects, ratio, calls, cached_time]
    deadline = Deadline(ctx.budget(900 + samples / 250), "scenario 14")
    root = WORK / "s14"
    place = Place.fresh(root, None, EVALFLEET_STORE_URL=f"s3://{bucket}/{prefix}", EVALFLEET_REDIS_URL=ctx.redis.url)
    ctx.redis.flush()
    with moto_server(root / "moto.log") as endpoint:
        place.extra.update(s3_environment(endpoint, place.home))
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        run_file = workload.run_file(place.root, "s14", workload.dataset(samples), cache_policy="reuse")
        first = _run(place, run_file, samples, name="s14-first", timeout=deadline.remaining())
        time.sleep(3)  # the packer's last batch (it packs at least every 2 s)
        count, size = _bucket_objects(endpoint, bucket, prefix)
        raw = _entries_json_bytes(place)
        cached = _run(place, run_file, samples, name="s14-cached", timeout=deadline.remaining())
    result.runs += [{"kind": "first", **first, "objects": count, "bytes": size, "entries_json_bytes": raw},
                    {"kind": "cached", **cached}]
    objects.settle(lambda v: v <= 5000 * samples / 1_000_000, count)
    objects.note = f"{size / 1e6:.1f} MB on S3"
    ratio.settle(lambda v: v <= 2, round(size / raw, 2))
    ratio.note = f"{size / 1e6:.1f} MB on S3 for {raw / 1e6:.1f} MB of entries"
    calls.settle(lambda v: v == 0, cached["model_calls"])
    calls.note = f"{cached['cache_hits']:,} cache hits"
    cached_time.settle(lambda v: True, cached["submit_to_last_log_s"])
    cached_time.note = f"{cached['throughput_sps']:,} samples/s"


TEMPLATE_BYTES = 5_000_000


def _big_template_run(directory: Path, log_prompts: str) -> Path:
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    shots, size, index = [], 0, 0
    while size < TEMPLATE_BYTES:
        line = f"Example {index}: " + " ".join(words[(index + k) % 8] for k in range(12)) + "\n"
        shots.append(line)
        size += len(line)
        index += 1
    rows = [{"id": f"s{i}", "input": f"question {i}", "target": f"answer {i}"} for i in range(20)]
    data = directory / "big-prompt.jsonl"
    directory.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    document = {"datasets": [{"key": "d", "path": str(data)}], "evaluation": {
        "key": f"s15-{log_prompts}", "log_prompts": log_prompts, "task_specifications": [
            {"key": f"s15-{log_prompts}-qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "d",
             "task_config": {"prompt_template": "".join(shots) + "Question: {input}\nAnswer:",
                             "scorers": ["exact"]}}]}}
    path = directory / f"s15-{log_prompts}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=10**9), encoding="utf-8")
    return path


def scenario_15(ctx: Context, result: Result) -> None:
    result.config.update({"samples": 20, "template_bytes": TEMPLATE_BYTES, "mode": "embedded", "model": "mock$target",
                          "prompt_budget_mb": "default (8)", "peak_rss": "VmHWM of the one evalfleet process"})
    checks = {mode: Check(f"peak RSS, prompts logged {'in full (default)' if mode == 'full' else 'by reference'}",
                          "< 200 MB", "MB") for mode in ("full", "reference")}
    result.checks += checks.values()
    deadline = Deadline(ctx.budget(120 + 60 * ctx.repeats), "scenario 15")
    for repeat in range(1, ctx.repeats + 1):
        for mode, check in checks.items():
            place = Place.fresh(WORK / "s15", None)
            run = _run(place, _big_template_run(place.root, mode), 20, name=f"s15-{mode}-r{repeat}",
                       timeout=deadline.remaining())
            run.update(mode=mode, repeat=repeat,
                       database_mb=round(sum(p.stat().st_size for p in place.root.glob("evalfleet.db*")) / 1e6, 1))
            result.runs.append(run)
            check.runs.append(run["driver_peak_rss_mb"])
    for mode, check in checks.items():
        check.settle(lambda v: v < 200, max(check.runs))
        logged = [r for r in result.runs if r["mode"] == mode][-1]
        check.note = f"worst repeat; log {logged['log_size_mb']} MB, database {logged['database_mb']} MB"


SCENARIOS = {
    "12": ("Million-sample run, embedded (100k and 1M samples; 10k and 100k with --quick)",
           ">= 2,000 samples/s, peak RSS < 400 MB, growth 100k -> 1M < 20%", scenario_12),
    "13": ("Million-sample run, cluster: 2 workers, Redis + PostgreSQL (100k and 1M; 10k and 100k with --quick)",
           "every sample exactly once, every process's RSS growth 100k -> 1M < 20%", scenario_13),
    "14": ("Result store on S3 (moto server), 1,000,000 samples (100,000 with --quick)",
           "<= 5,000 objects per 10^6 samples, bytes <= 2x the entries' JSON, cached re-run 0 calls", scenario_14),
    "15": ("20 samples over a 5 MB prompt template", "peak RSS < 200 MB", scenario_15),
}
