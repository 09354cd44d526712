"""What the log-tooling scenario measures, run in a fresh process each time (imports done before
the clock starts): `python -m benchmarks.harness.log_driver COMMAND ...` prints one JSON line.

    generate N PATH          write a synthetic N-sample task result log (qa, mock$target)
    logs COUNT SAMPLES DIR   write COUNT small logs under DIR
    header LOCATION          time read_log_header (path or s3:// URL)
    iterate LOCATION         time a full pass of iter_samples; peak RSS
    list DIR                 time list_logs over a directory
    convert LOCATION OUT     time convert_to_inspect (.eval); peak RSS"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from shared.log import (
    EvaluationHeader,
    LogHeader,
    LogStats,
    SampleRecord,
    SampleSpool,
    Score,
    ScorerResult,
    TokenUsage,
    write_task_result_log,
)
from shared.log.reader import iter_samples, list_logs, read_log_header
from shared.plan import ResolvedDataset, ResolvedModel, ResolvedTask, ResolvedTaskSpec


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _header(samples: int, run_id: str, key: str) -> LogHeader:
    now = datetime.now(UTC)
    spec = ResolvedTaskSpec(
        key=f"{key}-qa", display_name=key,
        task=ResolvedTask(key="qa", template="qa", config={"prompt_template": "{input}",
                                                          "scorers": [{"name": "includes"}]}),
        model=ResolvedModel(key="mock$target", provider="mock", name="target"),
        dataset=ResolvedDataset(key=f"{key}-data", path=f"/data/{key}.jsonl"))
    return LogHeader(
        status="success", run_id=run_id, evaluation=EvaluationHeader(key=key, display_name=key),
        task_specification=spec, sample_count=samples, subsampling="head",
        results={"includes": ScorerResult(metrics={"accuracy": 1.0, "stderr": 0.0}, scored=samples, errors=0)},
        stats=LogStats(started_at=now, completed_at=now, duration_s=1.0, model_calls=samples, attempts=samples))


def _write(path: Path, samples: int, run_id: str, key: str) -> None:
    now = datetime.now(UTC)
    with SampleSpool() as spool:
        for i in range(samples):
            record = SampleRecord(
                id=f"s{i:07d}", position=i, input=f"Repeat exactly: answer-{i}", target=f"answer-{i}",
                output=f"answer-{i}", scores={"includes": Score(value=1.0, answer=f"answer-{i}")},
                usage=TokenUsage(input_tokens=3, output_tokens=1), latency_ms=0.5, model_calls=1, attempts=1,
                worker="bench@host", started_at=now, completed_at=now)
            spool.add(record.id, record.model_dump_json())
        write_task_result_log(str(path.parent), path.name, _header(samples, run_id, key), spool)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out: dict = {}
    if args.command == "generate":
        count, path = int(args.args[0]), Path(args.args[1])
        _write(path, count, "b" * 32, "big")
        out = {"samples": count, "bytes": path.stat().st_size}
    elif args.command == "logs":
        count, samples, directory = int(args.args[0]), int(args.args[1]), Path(args.args[2])
        for number in range(count):
            run_id = f"{number:032x}"
            _write(directory / f"eval-{number % 10}" / run_id / f"spec-{number}.json", samples, run_id,
                   f"eval-{number % 10}")
        out = {"logs": count}
    elif args.command == "header":
        header = read_log_header(args.args[0])
        out = {"sample_count": header.sample_count}
    elif args.command == "iterate":
        count = sum(1 for _ in iter_samples(args.args[0]))
        out = {"samples": count}
    elif args.command == "list":
        out = {"logs": len(list_logs(args.args[0]))}
    elif args.command == "convert":
        from shared.interop.inspect import convert_to_inspect

        out = {"path": str(convert_to_inspect(args.args[0], args.args[1], "eval"))}
    else:
        parser.error(f"unknown command {args.command!r}")
    out.update(seconds=time.perf_counter() - started, peak_rss_kb=_peak_rss_kb())
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
