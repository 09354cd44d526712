"""Inspect AI's own reading of a log, timed: run by the interpreter of the Inspect venv
(benchmarks/.work/inspect-venv), never by evalfleet's; standard library and inspect-ai only.

    python inspect_log_read.py PATH [--header-only]

Times `inspect_ai.log.read_eval_log(PATH, header_only=...)` (the import of inspect_ai is not
timed) and prints one JSON line: {"seconds": ..., "samples": ..., "peak_rss_kb": ...}, where
`samples` is the number of samples read (0 for a header-only read) and `peak_rss_kb` the peak
resident memory of this process."""

from __future__ import annotations

import argparse
import json
import time


def _peak_rss_kb() -> int:
    """VmHWM: the peak of this process image (ru_maxrss would include the forking parent's)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="An Inspect log, .eval or .json.")
    parser.add_argument("--header-only", action="store_true", help="Read the header, not the samples.")
    args = parser.parse_args()
    from inspect_ai.log import read_eval_log

    started = time.perf_counter()
    log = read_eval_log(args.path, header_only=args.header_only)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "samples": len(log.samples or []), "peak_rss_kb": _peak_rss_kb()}))


if __name__ == "__main__":
    main()
