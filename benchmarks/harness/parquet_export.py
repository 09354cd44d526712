"""Scenario 11: Parquet export of a 1,000,000-sample run (100,000 with --quick) from PostgreSQL,
`evalfleet export parquet --all` in its own process (time, peak RSS), then `evalfleet query`
aggregating the exported tables with DuckDB (time)."""

from __future__ import annotations

import json
import shutil

from benchmarks.harness.api_paging import _fresh_database, _load
from benchmarks.harness.cluster import Place, evalfleet_command
from benchmarks.harness.measurement import Check, Context, Result, quiet_before_measuring
from benchmarks.harness.system import WORK, Deadline, log, run_process

QUERY = ("SELECT model_key, count(*) AS scored, avg(CAST(passed AS DOUBLE)) AS pass_rate, "
         "sum(CAST(passed AS INT)) AS passed FROM scores GROUP BY 1")


def scenario_11(ctx: Context, result: Result) -> None:
    samples = ctx.size(1_000_000, 100_000)
    result.config.update({"samples": samples, "database": "PostgreSQL (local)", "query": QUERY,
                          "method": "each command a fresh `evalfleet` process; peak RSS sampled every 0.2 s"})
    export_time = Check(f"export parquet, {samples:,} samples", "< 60 s", "s")
    export_memory = Check("export peak RSS", "< 300 MB", "MB")
    query_time = Check("query aggregating the scores table (whole command)", "reported", "s")
    result.checks += [export_time, export_memory, query_time]
    deadline = Deadline(ctx.budget(900 + samples / 1000), "scenario 11")
    database = _fresh_database()
    _load(database, samples)
    place = Place.fresh(WORK / "s11", None, EVALFLEET_DATABASE_URL=database)
    out = place.root / "parquet"
    for repeat in range(1, ctx.repeats + 1):
        shutil.rmtree(out, ignore_errors=True)
        quiet = quiet_before_measuring(ctx)
        done = run_process(evalfleet_command() + ["export", "parquet", "--all", "-o", str(out), "--json"],
                           env=place.env(), cwd=place.root, timeout=deadline.remaining(), name=f"s11-export-r{repeat}",
                           sample_rss=True)
        if done.returncode != 0:
            raise RuntimeError(f"export failed: {done.stderr[-2000:]}")
        counts = json.loads(done.stdout)
        if counts["samples"] != samples:
            raise RuntimeError(f"exported {counts['samples']} samples of {samples}")
        export_time.runs.append(round(done.wall_s, 1))
        export_memory.runs.append(round((done.peak_rss_kb or 0) / 1024, 1))
        answer = run_process(evalfleet_command() + ["query", QUERY, "--parquet", str(out), "--format", "json"],
                             env=place.env(), cwd=place.root, timeout=deadline.remaining(), name=f"s11-query-r{repeat}")
        if answer.returncode != 0:
            raise RuntimeError(f"query failed: {answer.stderr[-2000:]}")
        rows = json.loads(answer.stdout)
        query_time.runs.append(round(answer.wall_s, 2))
        result.runs.append({"repeat": repeat, "export_s": done.wall_s, "export_peak_rss_kb": done.peak_rss_kb,
                            "counts": counts, "query_s": answer.wall_s, "query_rows": rows, "quiet_wait": quiet})
        log(f"    s11-r{repeat}: exported {samples:,} samples in {done.wall_s:.1f} s (peak RSS "
            f"{(done.peak_rss_kb or 0) / 1024:.0f} MB); query {answer.wall_s:.2f} s -> {rows}")
    export_time.settle(lambda v: v < 60)
    export_memory.settle(lambda v: v < 300, max(export_memory.runs))
    export_memory.note = "worst repeat"
    query_time.settle(lambda v: True)


SCENARIOS = {
    "11": ("Parquet export and SQL (1,000,000 samples; 100,000 with --quick)",
           "export < 60 s under 300 MB; query time reported", scenario_11),
}
