"""`evalfleet logs ...`: task result logs as files, read from a log directory or an S3 prefix
with no database: list, info, samples, schema, and conversion to and from Inspect AI's format."""

from __future__ import annotations

import json
import sys
from itertools import islice

import click
from rich.console import Console

from services.cli.common import EvalfleetError, apply_settings, fail, say
from services.cli.output import emit_table, format_metrics
from shared.settings import get_settings


@click.group()
def logs() -> None:
    """Task result logs as files: list, inspect, page through, convert and import them.

    Every command reads the logs themselves (a directory or an s3:// prefix), not the database
    that produced them, so they work on another machine given only the logs."""


def _guard(call):  # noqa: ANN001, ANN202
    try:
        return call()
    except EvalfleetError as exc:
        fail(exc)


@logs.command(name="list")
@click.option("--log-dir", help="Directory or s3://bucket/prefix to scan [EVALFLEET_LOG_DIR, default ./logs].")
@click.option("--status", type=click.Choice(["success", "error", "cancelled", "started"]), help="Only logs with this status.")
@click.option("--retryable", is_flag=True, help="Only logs whose task failed or has missing samples, with no "
              "successful retry.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan subdirectories.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_logs_command(log_dir: str | None, status: str | None, retryable: bool, recursive: bool, as_json: bool) -> None:
    """List the logs under a log directory, from their headers, oldest first."""
    from shared.log.reader import list_logs
    from shared.log.reader import retryable as only_retryable

    apply_settings(log_dir=log_dir)
    found = _guard(lambda: list_logs(get_settings().log_dir, recursive=recursive, status=status))
    if retryable:
        found = only_retryable(found)
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return
    emit_table(["evaluation", "task", "status", "samples", "errors", "metrics", "started", "run", "log"],
               [[s.evaluation_key, s.spec_key, s.status, str(s.sample_count), str(s.samples_errored),
                 format_metrics(s.metrics), s.started_at.strftime("%Y-%m-%d %H:%M"), s.run_id[:12], s.location]
                for s in found])
    if not found:
        say(f"no task result logs under {get_settings().log_dir}")


@logs.command()
@click.argument("log")
@click.option("--header-only", is_flag=True, help="Read the header only (a byte range on S3), not the samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the log as it is (or its header).")
def info(log: str, header_only: bool, as_json: bool) -> None:
    """What a log holds: evaluation, task, model, status, counts, results, errors.

    LOG is a path or an s3:// URL."""
    from shared.log.reader import read_log_header

    header = _guard(lambda: read_log_header(log))
    if as_json:
        if header_only:
            click.echo(header.model_dump_json(indent=2))
            return
        _copy_to_stdout(log)
        return
    spec = header.task_specification
    console = Console(highlight=False)
    console.print(log, markup=False, soft_wrap=True)
    console.print(f"  evaluation {header.evaluation.key} ({header.evaluation.display_name}); task specification "
                  f"{spec.key}; run {header.run_id}" + (f" (retry of {header.retry_of})" if header.retry_of else ""),
                  markup=False)
    console.print(f"  task {spec.task.key}; model {spec.model.key if spec.model else '-'}; dataset {spec.dataset.key}"
                  f" ({spec.dataset.path})", markup=False, soft_wrap=True)
    console.print(f"  status {header.status}; {header.sample_count} samples, {header.samples_errored} errors; "
                  f"{header.stats.model_calls} model calls, {header.stats.cache_hits} cached; "
                  f"{header.stats.duration_s:.1f} s from {header.stats.started_at:%Y-%m-%d %H:%M:%S}", markup=False)
    for label, result in header.results.items():
        console.print(f"  {format_metrics({label: result.metrics})} (scored {result.scored})", markup=False)
    for model, usage in header.stats.model_usage.items():
        cost = "n/a" if usage.cost_usd is None else f"${usage.cost_usd:.4f}"
        console.print(f"  {model}: {usage.input_tokens} input + {usage.output_tokens} output tokens, cost {cost}",
                      markup=False)
    if header.error is not None:
        console.print(f"  error: {header.error.message}", markup=False, style="red")
    if header.error_summary is not None:
        for item in header.error_summary.most_frequent:
            console.print(f"  {item.count}x {item.type}: {item.message}", markup=False, style="red", soft_wrap=True)


def _copy_to_stdout(location: str) -> None:
    from shared.log.reader import open_log

    with open_log(location) as handle:
        while chunk := handle.read(1024 * 1024):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@logs.command()
@click.argument("log")
@click.option("--errors-only", is_flag=True, help="Only samples that failed.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Skip this many samples first.")
@click.option("--limit", type=click.IntRange(1), help="At most this many samples (default: 50 on a terminal, all "
              "with --json).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per line (JSON lines).")
def samples(log: str, errors_only: bool, offset: int, limit: int | None, as_json: bool) -> None:
    """Page through a log's samples, streamed (memory does not grow with the log)."""
    from shared.log.reader import iter_samples

    def selected():  # noqa: ANN202
        chosen = (s for s in iter_samples(log) if not errors_only or s.error is not None)
        return islice(chosen, offset, None if limit is None and as_json else offset + (limit or 50))

    if as_json:
        _guard(lambda: [click.echo(sample.model_dump_json()) for sample in selected()])
        return
    rows = []
    for sample in _guard(lambda: list(selected())):
        if sample.error is not None:
            result = f"{sample.error.type}: {sample.error.message}"[:80]
        else:
            result = "cached" if sample.cached else "ok"
        scores = ", ".join(f"{k} {v.value:g}" if v.value is not None else f"{k} n/a" for k, v in sample.scores.items())
        rows.append([str(sample.position), sample.id, result, scores, (sample.output or "")[:60]])
    emit_table(["#", "id", "result", "scores", "output"], rows, title=log)
    say(f"{len(rows)} samples shown from {offset}" + (" (errors only)" if errors_only else ""))


@logs.command()
def schema() -> None:
    """Print the JSON Schema of the task result log."""
    from shared.log import task_result_log_schema

    click.echo(json.dumps(task_result_log_schema(), indent=2))


@logs.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--to", "target", type=click.Choice(["inspect"]), required=True, help="The format to write.")
@click.option("--format", "fmt", type=click.Choice(["eval", "json"]), default="eval", show_default=True,
              help="Inspect's zip (.eval) or JSON (.json) log.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def convert(sources: tuple[str, ...], target: str, fmt: str, output: str, as_json: bool) -> None:
    """Convert logs (paths or s3:// URLs) to Inspect AI's log format, streamed."""
    from shared.interop.inspect import convert_to_inspect

    written = [_guard(lambda source=source: convert_to_inspect(source, output, fmt)) for source in sources]
    if as_json:
        click.echo(json.dumps([{"source": s, "path": str(p)} for s, p in zip(sources, written, strict=True)], indent=2))
    else:
        for path in written:
            click.echo(str(path))


@logs.command(name="import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory to write into: one handover directory (run file + log) per source.")
@click.option("--json", "as_json", is_flag=True, help="Print the written run files as JSON.")
def import_logs(sources: tuple[str, ...], output: str, as_json: bool) -> None:
    """Turn Inspect AI logs (.eval or .json) into task result logs, each with a run file that
    uploads it: `evalfleet run -f <run file>` re-creates the results with no model call."""
    from pathlib import Path

    from shared.interop.inspect import import_inspect_log

    if len(sources) > 1:
        targets = [Path(output) / Path(source).stem for source in sources]
    else:
        targets = [Path(output)]
    written = [_guard(lambda s=s, t=t: import_inspect_log(s, str(t))) for s, t in zip(sources, targets, strict=True)]
    if as_json:
        click.echo(json.dumps([{"source": s, "run_file": str(p)} for s, p in zip(sources, written, strict=True)],
                              indent=2))
    else:
        for path in written:
            click.echo(str(path))


COMMANDS = [logs]
