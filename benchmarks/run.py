"""The benchmark harness: `python -m benchmarks.run` (from the repository root).

    python -m benchmarks.run                      all scenarios, 3 repeats each
    python -m benchmarks.run --scenarios 1,3      some of them
    python -m benchmarks.run --repeats 5
    python -m benchmarks.run --quick              smaller sizes and 1 repeat: a smoke check

Writes benchmarks/results/latest.json and latest.md. Starts what it needs (evalfleet workers on a
Redis database of its own, flushed; the fake OpenAI server; Inspect AI in its own virtual
environment) and stops all of it, whatever happens. Scratch files go to benchmarks/.work/."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import UTC, datetime

from benchmarks.harness import report, scenarios
from benchmarks.harness.cluster import RedisDb, redis_server_version
from benchmarks.harness.system import CHILDREN, WORK, git_commit, log, machine_info, versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(scenarios.SCENARIOS),
                        help="Comma-separated scenario numbers (default: all of them, 1-17).")
    parser.add_argument("--repeats", type=int, help="Measurements per figure; medians are reported "
                        "(default 3; 1 with --quick).")
    parser.add_argument("--quick", action="store_true", help="Smaller sizes: a smoke check, not the figures.")
    parser.add_argument("--redis-db", type=int, help="Redis database number to use and flush "
                        f"(default: the first free, empty one of {', '.join(map(str, (3, 4, 2, 1, 7)))}).")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="Before each measurement, wait up to this many seconds for other programs to "
                        "leave the CPU (default 10; 0 with --quick).")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="Multiply every time budget.")
    parser.add_argument("--no-inspect-install", action="store_true",
                        help="Do not create benchmarks/.work/inspect-venv when it is missing.")
    parser.add_argument("--output-dir", help="Where to write latest.json and latest.md (default benchmarks/results).")
    parser.add_argument("--merge", action="store_true",
                        help="Keep the scenarios of the existing latest.json that this run does not measure "
                        "(each scenario records when and on which commit it was measured).")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in scenarios.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(scenarios.SCENARIOS)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.keys = keys
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 10.0
    return args


def _terminate(signum: int, frame: object) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    command = "python -m benchmarks.run" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "harness": {"command": command, "quick": args.quick, "repeats": args.repeats, "scenarios": args.keys,
                    "quiet_wait_s": args.quiet_wait, "timeout_scale": args.timeout_scale},
        "machine": machine_info(),
        "versions": versions(redis_server_version(), scenarios.inspect_version()),
        "inspect_reference": None,
        "scenarios": [],
    }
    log(f"evalfleet benchmarks: scenarios {','.join(args.keys)}, {args.repeats} repeat(s)"
        f"{', quick' if args.quick else ''}; scratch {WORK}")
    results = []
    interrupted = False
    try:
        with RedisDb(args.redis_db) as redis:
            ctx = scenarios.Context(repeats=args.repeats, quick=args.quick, redis=redis, quiet_wait_s=args.quiet_wait,
                                    timeout_scale=args.timeout_scale, inspect_install=not args.no_inspect_install)
            document["harness"]["redis_db"] = redis.db
            for key in args.keys:
                results.append(scenarios.run_scenario(ctx, key))
                document["scenarios"] = [r.to_json() for r in results]
                document["inspect_reference"] = ctx.inspect.to_json() if ctx.inspect else None
                _write(document, args, started, partial=True)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything the harness started")
    finally:
        CHILDREN.stop_all()
    # Versions as measured: taken at the start; inspect-ai may have been installed since, and the
    # code under test may have been committed to or edited during the run (an editable install).
    document["versions"]["inspect_ai"] = scenarios.inspect_version()
    document["versions"]["evalfleet_git_at_end"] = git_commit()
    document["scenarios"] = [r.to_json() for r in results]
    json_path, md_path = _write(document, args, started, partial=interrupted)
    print()
    print(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
    return 130 if interrupted else 0


def _write(document: dict, args: argparse.Namespace, started: float, partial: bool):  # noqa: ANN202
    from pathlib import Path

    document["harness"]["duration_s"] = round(time.monotonic() - started, 1)
    document["harness"]["complete"] = not partial
    document["machine"]["loadavg_at_end"] = list(os.getloadavg())
    directory = Path(args.output_dir) if args.output_dir else report.RESULTS
    if args.merge:
        document = _merged(document, directory / "latest.json")
    return report.write(document, directory)


def _merged(document: dict, previous_path) -> dict:  # noqa: ANN001
    """This run's scenarios over those of the previous latest.json."""
    import json

    if not previous_path.exists():
        return document
    previous = json.loads(previous_path.read_text())
    if previous.get("merged_runs"):
        runs = previous["merged_runs"]
    else:
        runs = [{"date": previous["date"], "command": previous["harness"]["command"],
                 "evalfleet_git_at_start": previous["versions"].get("evalfleet_git"),
                 "evalfleet_git_at_end": previous["versions"].get("evalfleet_git_at_end")}]
    measured = {s["id"] for s in document["scenarios"]}
    kept = []
    for scenario in previous["scenarios"]:
        if scenario["id"] in measured:
            continue
        if not scenario.get("measured_at"):
            scenario["measured_at"] = previous["date"]
            start = (previous["versions"].get("evalfleet_git") or {}).get("commit", "?")
            end = previous["versions"].get("evalfleet_git_at_end") or {}
            scenario["evalfleet_git"] = {"commit": None, "note": (
                f"not recorded per scenario by that run: it started at {start[:12]} and ended at "
                f"{(end.get('commit') or '?')[:12]}{' with uncommitted changes' if end.get('tracked_changes') else ''}")}
        kept.append(scenario)
    order = list(scenarios.SCENARIOS)
    merged = dict(document)
    merged["scenarios"] = sorted(kept + document["scenarios"], key=lambda s: order.index(s["id"]))
    if merged.get("inspect_reference") is None and previous.get("inspect_reference"):
        merged["inspect_reference"] = previous["inspect_reference"]
        merged["inspect_reference"].setdefault("measured_at", previous["date"])
        if not merged["inspect_reference"]["measured_at"]:
            merged["inspect_reference"]["measured_at"] = previous["date"]
    runs = [run for run in runs if run["date"] != document["date"]]  # rewritten after every scenario
    merged["merged_runs"] = runs + [{"date": document["date"], "command": document["harness"]["command"],
                                     "scenarios": sorted(measured, key=order.index),
                                     "evalfleet_git_at_start": document["versions"].get("evalfleet_git"),
                                     "evalfleet_git_at_end": document["versions"].get("evalfleet_git_at_end")}]
    return merged


if __name__ == "__main__":
    sys.exit(main())
