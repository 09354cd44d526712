"""The evalfleet side of a measurement, run by the harness as a subprocess (`python -m
benchmarks.harness.driver COMMAND ...`) with the scenario's EVALFLEET_* environment. Imports and
database migration happen before the clock starts, so a figure measures the work, not the
interpreter. Prints one JSON document on the last line of stdout.

    run FILE [--concurrency N]   `evalfleet run -f FILE --json`, in this process (embedded or cluster)
    submit FILE                  `services.submitter.submit(FILE)` alone (nobody consumes)
    aggregate TASK_RESULT_ID     `services.aggregator.assemble_task_result_log` for a finished task result
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import time


def rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def peak_rss_kb() -> int:
    """Peak RSS of this process image (VmHWM). Not getrusage's ru_maxrss: Linux keeps that across
    execve, so a child forked from a large parent (the harness) would report the parent's size."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """Peak RSS within a window (VmHWM is the peak since the process started)."""

    def __init__(self, interval_s: float = 0.05):
        self.peak = rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.interval_s = interval_s

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kb())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb())
        return self.peak


def _warm() -> None:
    """Import what a run imports and migrate the database, outside the measurement."""
    import services.aggregator  # noqa: F401
    import services.cli  # noqa: F401
    import services.runs  # noqa: F401
    import services.submitter  # noqa: F401
    import workers.sample  # noqa: F401
    from shared.db import get_engine
    from shared.settings import get_settings
    from workers.app import configure_app

    configure_app(get_settings())
    get_engine()
    if get_settings().embedded:
        import services.embedded  # noqa: F401


def command_run(args: argparse.Namespace) -> dict:
    _warm()
    from services.cli import main

    argv = ["run", "-f", args.file, "--json"]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    out = io.StringIO()
    exit_code = 0
    rss_before = rss_kb()
    started_epoch = time.time()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            main.main(args=argv, prog_name="evalfleet", standalone_mode=False)
        except SystemExit as exc:
            exit_code = exc.code if isinstance(exc.code, int) else 1
    wall = time.perf_counter() - started
    report = json.loads(out.getvalue())
    return {"wall_s": wall, "started_epoch": started_epoch, "exit_code": exit_code, "report": report,
            "rss_before_kb": rss_before, "peak_rss_kb": peak_rss_kb()}


def command_submit(args: argparse.Namespace) -> dict:
    _warm()
    from services.submitter import submit

    rss_before = rss_kb()
    sampler = PeakSampler()
    started = time.perf_counter()
    run_id = submit(args.file)
    elapsed = time.perf_counter() - started
    peak_during = sampler.stop()
    return {"submit_s": elapsed, "run_id": run_id, "rss_before_kb": rss_before, "peak_rss_during_kb": peak_during,
            "peak_rss_kb": peak_rss_kb(), "rss_after_kb": rss_kb()}


def command_aggregate(args: argparse.Namespace) -> dict:
    _warm()
    from sqlalchemy import update

    from services.aggregator import assemble_task_result_log
    from shared.db import get_engine, runs, task_results

    with get_engine().begin() as connection:
        run_id = connection.execute(update(task_results).where(task_results.c.id == args.task_result_id)
                                    .values(status="aggregating", log_path=None, completed_at=None)
                                    .returning(task_results.c.run_id)).scalar_one()
        connection.execute(update(runs).where(runs.c.id == run_id).values(status="running", finished_at=None))
    rss_before = rss_kb()
    sampler = PeakSampler()
    started = time.perf_counter()
    uri = assemble_task_result_log(args.task_result_id)
    elapsed = time.perf_counter() - started
    peak_during = sampler.stop()
    return {"aggregate_s": elapsed, "log_path": uri, "rss_before_kb": rss_before, "peak_rss_during_kb": peak_during,
            "peak_rss_kb": peak_rss_kb()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness.driver")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("file")
    run.add_argument("--concurrency", type=int)
    submit = commands.add_parser("submit")
    submit.add_argument("file")
    aggregate = commands.add_parser("aggregate")
    aggregate.add_argument("task_result_id", type=int)
    args = parser.parse_args(argv)
    handler = {"run": command_run, "submit": command_submit, "aggregate": command_aggregate}[args.command]
    result = handler(args)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
