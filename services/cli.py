"""The `evalfleet` command: each subcommand is a few lines over the library.

Exit codes: 0 the run succeeded; 1 it finished with status error or cancelled, or a service
failed; 2 bad input (the run file, a dataset, an option); nothing is registered or submitted then."""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import ExitStack

import click
from rich.console import Console
from rich.table import Table

from shared.errors import EvalfleetError, SpecError
from shared.settings import configure, get_settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
err = Console(stderr=True)


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def _settings_options(command):
    """Options every command shares; they override EVALFLEET_* variables and `.env`."""
    command = click.option("--database-url", envvar=None, help="SQLAlchemy database URL [EVALFLEET_DATABASE_URL].")(command)
    command = click.option("--log-dir", help="Log directory or s3://bucket/prefix [EVALFLEET_LOG_DIR].")(command)
    return command


def _apply(database_url: str | None = None, log_dir: str | None = None, **other: object) -> None:
    configure(database_url=database_url, log_dir=log_dir, **other)
    from workers.app import configure_app

    configure_app(get_settings())


def _fail(exc: Exception) -> None:
    if isinstance(exc, SpecError):
        raise BadInput(str(exc))
    raise click.ClickException(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalfleet")
def main() -> None:
    """Evaluate language models and datasets, from a laptop to a cluster.

    With no configuration everything runs in this process (SQLite under ./.evalfleet, logs under
    ./logs). Set EVALFLEET_BROKER_URL (redis:// or amqp://) to submit to `evalfleet worker`s.
    """
    warnings.simplefilter("default", DeprecationWarning)
    warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {message}")


@main.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False), help="The run file (YAML).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--detach", is_flag=True, help="Return after submitting and print the run id (needs a broker).")
@click.option("--concurrency", type=click.IntRange(1), help="Samples in flight in the embedded worker.")
@_settings_options
def run(path: str, as_json: bool, detach: bool, concurrency: int | None, **options: str | None) -> None:
    """Validate, submit and run an evaluation; wait for its task result logs."""
    from services.submitter import submit_resolved, validate_run_file

    _apply(concurrency=concurrency, **options)
    if detach and get_settings().embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    try:
        resolved = validate_run_file(path)  # bad input fails here, before any worker starts
    except EvalfleetError as exc:
        _fail(exc)
    _submit_and_wait(lambda on_enqueued: submit_resolved(resolved, on_enqueued), as_json=as_json, detach=detach,
                     total=sum(s.selection.total for s in resolved.specs if s.uploaded_log is None),
                     label=resolved.evaluation.key)


def _submit_and_wait(start, *, as_json: bool, detach: bool, total: int | None = None,  # noqa: ANN001
                     label: str = "run") -> None:
    """Start a run (in-process worker on the embedded default), then wait with a progress bar.
    `start(on_enqueued)` submits and returns the run id."""
    from services.progress import RunProgress
    from services.runs import wait_for_run

    settings = get_settings()
    if detach and settings.embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    with ExitStack() as stack:
        if settings.embedded:
            from services.embedded import embedded_worker

            stack.enter_context(embedded_worker(settings.concurrency))
        with RunProgress(err, enabled=not as_json and not detach, total=total, label=label) as progress:
            try:
                run_id = start(progress.enqueued)
            except EvalfleetError as exc:
                _fail(exc)
            if detach:
                click.echo(run_id)
                return
            report = wait_for_run(run_id, on_progress=progress.update)
    _finish(report, as_json)


@main.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--detach", is_flag=True, help="Return after submitting and print the run id (needs a broker).")
@click.option("--concurrency", type=click.IntRange(1), help="Samples in flight in the embedded worker.")
@_settings_options
def retry(source: str, as_json: bool, detach: bool, concurrency: int | None, **options: str | None) -> None:
    """Re-run only the failed or missing samples of a run.

    SOURCE is a run id, or the path or s3:// URL of one of its task result logs. Samples that
    succeeded are reused without model calls; the original logs are left untouched.
    """
    from services.retry import retry_run

    _apply(concurrency=concurrency, **options)
    _submit_and_wait(lambda on_enqueued: retry_run(source, on_enqueued), as_json=as_json, detach=detach)


@main.command()
@click.argument("run_id")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds in-flight samples get to finish before the logs are written.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's JSON document.")
@_settings_options
def cancel(run_id: str, grace: float, as_json: bool, **options: str | None) -> None:
    """Cancel a run: drop its pending samples and write its logs with status cancelled."""
    from services.runs import cancel_run

    _apply(**options)
    try:
        report = cancel_run(run_id, grace_s=grace)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    _finish(report, as_json)


@main.command()
@click.argument("run_id")
@_settings_options
def resume(run_id: str, **options: str | None) -> None:
    """Enqueue again the samples of a run that have no result (after a broker lost its queue)."""
    from services.recovery import finish_stalled_aggregations, requeue_missing_samples
    from services.runs import run_report

    _apply(**options)
    try:
        run_report(run_id)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    if get_settings().embedded:
        raise BadInput("resume needs a broker and workers: set EVALFLEET_BROKER_URL")
    err.print(f"enqueued {requeue_missing_samples(run_id)} samples; "
              f"finished {finish_stalled_aggregations(run_id)} stalled aggregations")


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's JSON document.")
@_settings_options
def status(run_id: str, as_json: bool, **options: str | None) -> None:
    """Progress of a run, and its results once finished.

    A run whose samples are all done but whose logs were never written (the process that should
    have aggregated died) is finished here."""
    from services.recovery import finish_stalled_aggregations
    from services.runs import run_report

    _apply(**options)
    try:
        report = run_report(run_id)
        if not report.finished and any(t.done >= t.samples and t.status in ("running", "aggregating")
                                       for t in report.task_results):
            finish_stalled_aggregations(run_id)
            report = run_report(run_id)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    if report.finished:
        _finish(report, as_json)
    elif as_json:
        click.echo(_report_json(report))
    else:
        err.print(f"run {report.run_id} ({report.evaluation}): {report.status}, "
                  f"{report.done}/{report.total} samples done, {report.errors} errors")


@main.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False), help="The run file (YAML).")
@_settings_options
def add(path: str, **options: str | None) -> None:
    """Validate a run file and register its datasets, models and tasks without running anything."""
    from services.submitter import add_entities

    _apply(**options)
    try:
        resolved = add_entities(path)
    except EvalfleetError as exc:
        _fail(exc)
    registered = resolved.entities_to_register()
    err.print(f"valid: {len(resolved.specs)} task specifications, "
              f"{sum(s.selection.total for s in resolved.specs)} samples; registered {len(registered)} entities")
    for kind, entity in registered:
        click.echo(f"{kind}\t{entity.key}")  # type: ignore[attr-defined]


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="How many runs.")
@click.option("--evaluation", help="Only runs of this evaluation key.")
@_settings_options
def list_command(as_json: bool, limit: int, evaluation: str | None, **options: str | None) -> None:
    """Runs, newest first, with status and progress."""
    from services.runs import list_runs

    _apply(**options)
    summaries = list_runs(limit=limit, evaluation=evaluation)
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    table = Table("evaluation", "status", "progress", "errors", "created")
    table.add_column("run id", no_wrap=True)
    for s in summaries:
        table.add_row(s.evaluation, s.status, f"{s.done}/{s.samples}", str(s.errors),
                      s.created_at.strftime("%Y-%m-%d %H:%M"), s.run_id)
    Console().print(table)


@main.command()
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Samples in flight (threads) [EVALFLEET_CONCURRENCY].")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: evalfleet).")
@click.option("-n", "--hostname", help="Worker name, e.g. worker1@%h.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="Logging level.")
@_settings_options
def worker(concurrency: int | None, queues: str | None, hostname: str | None, loglevel: str,
           **options: str | None) -> None:
    """Process samples from the broker; start as many as you like on any host."""
    _apply(concurrency=concurrency, **options)
    settings = get_settings()
    if settings.embedded:
        raise BadInput("a worker needs a broker: set EVALFLEET_BROKER_URL (redis:// or amqp://)")
    from workers.app import app
    from workers.sample import prepare_worker

    prepare_worker()
    argv = ["worker", "--pool=threads", f"--concurrency={settings.concurrency}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle"]
    argv += [f"--queues={queues}"] if queues else [f"--queues={settings.queue}"]
    argv += [f"--hostname={hostname}"] if hostname else []
    app.worker_main(argv)


@main.group()
def export() -> None:
    """Export results so they can be handed over and re-created elsewhere."""


@export.command(name="eval")
@click.option("--id", "run_id", required=True, help="The run to export.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--link-logs", is_flag=True,
              help="Also write each task result log and point the run file at it (re-runs with no inference).")
@_settings_options
def export_eval(run_id: str, output: str, link_logs: bool, **options: str | None) -> None:
    """Write OUTPUT/<evaluation-key>.yaml: a self-contained run file of a run."""
    from services.export import export_evaluation

    _apply(**options)
    try:
        path = export_evaluation(run_id, output, link_logs=link_logs)
    except EvalfleetError as exc:
        _fail(exc)
    click.echo(str(path))


@main.group()
def store() -> None:
    """Maintain the result store (cached model outputs and scores)."""


@store.command()
@_settings_options
def reindex(**options: str | None) -> None:
    """Rebuild the Redis index of the result store from its durable blobs."""
    from shared.result_store import result_store

    _apply(**options)
    cache = result_store(auto_reindex=False)
    if cache.redis is None:
        raise BadInput("no Redis configured (EVALFLEET_REDIS_URL, or a redis:// broker): nothing to index")
    err.print(f"indexed {cache.reindex()} cached results")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the task result log."""
    from shared.log import task_result_log_schema

    click.echo(json.dumps(task_result_log_schema(), indent=2))


def _report_json(report) -> str:  # noqa: ANN001
    document = {
        "run_id": report.run_id,
        "status": report.status,
        "evaluation": report.evaluation,
        "retry_of": report.retry_of,
        "error": report.error,
        "task_results": [
            {"key": t.key, "status": t.status, "log_path": t.log_path, "samples": t.samples, "done": t.done,
             "errors": t.errors, "model_calls": t.model_calls, "cache_hits": t.cache_hits, "metrics": t.metrics,
             "error": t.error}
            for t in report.task_results
        ],
    }
    return json.dumps(document, indent=2)


def _format_metrics(metrics: dict[str, dict[str, float | None]]) -> str:
    lines = []
    for scorer, values in metrics.items():
        value = values.get("accuracy", values.get("mean"))
        stderr = values.get("stderr")
        shown = "n/a" if value is None else f"{value:.3f}"
        if stderr is not None:
            shown += f" ± {stderr:.3f}"
        lines.append(f"{scorer} {shown}")
    return "\n".join(lines)


def _finish(report, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        click.echo(_report_json(report))
    else:
        console = Console()
        table = Table(title=f"{report.display_name}: {report.status}", title_justify="left")
        for column, justify in (("task", "left"), ("status", "left"), ("samples", "right"), ("errors", "right"),
                                ("model calls", "right"), ("cached", "right"), ("metrics", "left")):
            table.add_column(column, justify=justify)
        for t in report.task_results:
            table.add_row(t.key, t.status, str(t.samples), str(t.errors), str(t.model_calls), str(t.cache_hits),
                          _format_metrics(t.metrics))
        console.print(table)
        console.print(f"run {report.run_id}" + (f" (retry of {report.retry_of})" if report.retry_of else ""))
        for t in report.task_results:
            where = t.log_path or (t.error or "no log").splitlines()[0]
            console.print(f"  {t.key}: {where}", soft_wrap=True, highlight=False)
    sys.exit(EXIT_OK if report.status == "success" else EXIT_FAILED)
