"""How runs are shown: the results table on a terminal, and the JSON document of `--json`.
Metrics keep full precision in logs and JSON; the table rounds them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from services.cli.common import EXIT_FAILED, EXIT_OK
from services.runs import RunReport


def emit_table(columns: list[str | tuple[str, str]], rows: list[list[str]], *, title: str | None = None,
               console: Console | None = None) -> None:
    """A table on a terminal; elsewhere (a pipe, a file, CI) full-width plain rows, one per line,
    tab-separated, never truncated or wrapped, multi-line cells joined with "; "."""
    console = console or Console()
    names = [c if isinstance(c, str) else c[0] for c in columns]
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for column in columns:
            name, justify = (column, "left") if isinstance(column, str) else column
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    out = console.file
    if title:
        out.write(title + "\n")
    out.write("\t".join(names) + "\n")
    for row in rows:
        out.write("\t".join(cell.replace("\n", "; ").replace("\t", " ") for cell in row) + "\n")
    out.flush()


def report_document(report: RunReport, **extra: object) -> dict:
    return {
        "run_id": report.run_id,
        "status": report.status,
        "evaluation": report.evaluation,
        "retry_of": report.retry_of,
        "error": report.error,
        **extra,
        "task_results": [
            {"key": t.key, "status": t.status, "log_path": t.log_path, "samples": t.samples, "done": t.done,
             "errors": t.errors, "model_calls": t.model_calls, "attempts": t.attempts, "cache_hits": t.cache_hits,
             "metrics": t.metrics, "error": t.error,
             "error_summary": t.error_summary.model_dump(mode="json") if t.error_summary else None,
             "uuid": t.uuid, "display_name": t.display_name, "model": t.model,
             "star_metric": t.star_metric.model_dump(mode="json") if t.star_metric else None,
             "pass_status": t.pass_status, "usage": t.usage.model_dump(mode="json") if t.usage else None}
            for t in report.task_results
        ],
    }


def report_json(report: RunReport, **extra: object) -> str:
    return json.dumps(report_document(report, **extra), indent=2)


def format_metrics(metrics: dict[str, dict[str, float | None]]) -> str:
    lines = []
    for scorer, values in metrics.items():
        value = values.get("accuracy", values.get("mean"))
        stderr = values.get("stderr")
        shown = "n/a" if value is None else f"{value:.3f}"
        if stderr is not None:
            shown += f" ± {stderr:.3f}"
        lines.append(f"{scorer} {shown}")
    return "\n".join(lines)


def format_star(star) -> str:  # noqa: ANN001 - a StarMetricResult or None
    if star is None:
        return "-"
    shown = "n/a" if star.value is None else f"{star.value:.3f}"
    return f"{star.metric} {shown} vs {star.threshold:g}: {'pass' if star.pass_status else 'FAIL'}"


def print_report(report: RunReport, console: Console | None = None, show_keys: bool = False) -> None:
    """The results table, the log locations and, for task results with failed samples, why."""
    console = console or Console()
    columns = [("task", "left"), ("status", "left"), ("samples", "right"), ("errors", "right"),
               ("model calls", "right"), ("tokens", "right"), ("cost", "right"), ("p50 latency", "right"),
               ("metrics", "left")]
    rows = []
    for t in report.task_results:
        usage = t.usage
        rows.append([t.key if show_keys or not t.display_name else t.display_name, t.status, str(t.samples),
                     str(t.errors), f"{t.model_calls}" + (f" ({t.attempts} tries)" if t.attempts > t.model_calls else ""),
                     f"{usage.input_tokens + usage.output_tokens:,}" if usage else "-",
                     ("n/a" if usage.cost_usd is None else f"${usage.cost_usd:.4f}") if usage else "-",
                     f"{usage.latency_p50_ms:.0f} ms" if usage and usage.latency_p50_ms is not None else "-",
                     format_metrics(t.metrics)])
    if any(t.star_metric for t in report.task_results):
        columns.append(("star metric", "left"))
        for row, t in zip(rows, report.task_results, strict=True):
            row.append(format_star(t.star_metric))
    emit_table(columns, rows, title=f"{report.display_name}: {report.status}", console=console)
    console.print(f"run {report.run_id}" + (f" (retry of {report.retry_of})" if report.retry_of else ""),
                  highlight=False)
    for t in report.task_results:
        where = t.log_path or (t.error or "no log").splitlines()[0]
        console.print(f"  {t.key}: {where}", soft_wrap=True, highlight=False, markup=False)
    for line in failure_lines(report):
        console.print(line, soft_wrap=True, highlight=False, markup=False, style="red")


def show_benchmarks(run_id: str) -> None:
    from services.analysis.benchmark import benchmark_documents, groups
    from services.cli.analysis import print_benchmark
    from services.results import task_results_of_run

    if not any(len({v.spec.model.key for v in group}) > 1 for group in groups(task_results_of_run(run_id)).values()):
        return
    for document in benchmark_documents(run_id):
        print_benchmark(document)


def failure_lines(report: RunReport) -> list[str]:
    """Why task results failed, in a line or two each: every sample failing shows its first error."""
    lines = []
    for t in report.task_results:
        summary = t.error_summary
        if summary is None:
            continue
        if summary.task_error and not summary.most_frequent:
            lines.append(f"{t.key}: failed: {summary.task_error}")
            continue
        if not summary.most_frequent:
            continue
        top = summary.most_frequent[0]
        share = "all" if t.errors >= t.samples and t.samples else f"{t.errors} of"
        lines.append(f"{t.key}: {share} {t.samples} samples failed; most often ({top.count}x) "
                     f"{top.type}: {top.message}")
        for other in summary.most_frequent[1:3]:
            lines.append(f"{' ' * len(t.key)}  also ({other.count}x) {other.type}: {other.message}")
    return lines


def finish(report: RunReport, as_json: bool, exit_code: int | None = None, show_keys: bool = False) -> None:
    """Print a finished run (table or JSON) and exit: 0 success, 1 error or cancelled. On a
    terminal, a run that compared models on one task also gets the comparison."""
    if as_json:
        print(report_json(report))
    else:
        print_report(report, show_keys=show_keys)
        if Console().is_terminal:
            show_benchmarks(report.run_id)
    sys.exit(exit_code if exit_code is not None else EXIT_OK if report.status == "success" else EXIT_FAILED)


@contextmanager
def progress_bar(description: str, *, total: int | None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A transient bar on a terminal's stderr for long maintenance work; yields `advance(done)`,
    which does nothing when the bar is off (`--json`, a pipe, CI)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.cli.common import err

    if not (enabled and err.is_terminal):
        yield lambda done: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
