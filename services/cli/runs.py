"""Commands that start, follow and stop runs: run, retry, status, cancel, resume, list."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import ExitStack

import click

from services.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInput,
    EvalfleetError,
    apply_settings,
    err,
    fail,
    say,
    settings_options,
)
from services.cli.output import emit_table, finish, report_json
from shared.settings import get_settings

# Seconds in-flight samples get when Ctrl+C cancels an embedded run.
INTERRUPT_GRACE_S = 2.0


@click.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False), help="The run file (YAML).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--detach", is_flag=True, help="Return after submitting and print the run id (needs a broker).")
@click.option("--concurrency", type=click.IntRange(1), help="Samples in flight in the embedded worker.")
@click.option("--fail-under", "gate", is_flag=False, flag_value="star", default=None, metavar="[THRESHOLD]",
              help="Exit 1 when a task result's star metric is below its success threshold (or below "
              "THRESHOLD, when given): a CI gate.")
@settings_options
def run(path: str, as_json: bool, detach: bool, concurrency: int | None, gate: str | None,
        **options: str | None) -> None:
    """Validate, submit and run an evaluation; wait for its task result logs.

    Ctrl+C: on the embedded default, cancels the run (in-flight samples finish, logs are written
    with status cancelled, exit 130); with a broker, stops waiting and leaves the run going."""
    from services.submitter import submit_resolved, validate_run_file

    apply_settings(concurrency=concurrency, **options)
    if detach and get_settings().embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    threshold = parse_gate(gate)
    try:
        resolved = validate_run_file(path)  # bad input fails here, before any worker starts
    except EvalfleetError as exc:
        fail(exc)
    if gate is not None and not any(item.spec.star_metric for item in resolved.specs):
        raise BadInput(f"{path}: --fail-under needs a `star_metric` (on the evaluation or a task specification)")
    submit_and_wait(lambda on_enqueued, on_created: submit_resolved(resolved, on_enqueued, on_created),
                    as_json=as_json, detach=detach, label=resolved.evaluation.key,
                    total=sum(s.selection.total for s in resolved.specs if s.uploaded_log is None),
                    gate=threshold if gate is not None else None)


def parse_gate(gate: str | None) -> float | str | None:
    """`--fail-under`: "star" (each star metric's own threshold), or a number."""
    if gate is None or gate == "star":
        return gate
    try:
        return float(gate.rstrip("%")) / (100 if gate.endswith("%") else 1)
    except ValueError:
        raise BadInput(f"--fail-under: {gate!r} is not a number (e.g. 0.8 or 80%)") from None


def submit_and_wait(start: Callable, *, as_json: bool, detach: bool, total: int | None = None,
                    label: str = "run", gate: float | str | None = None) -> None:
    """Start a run (in-process worker on the embedded default), then wait with a progress bar.
    `start(on_enqueued, on_created)` submits and returns the run id."""
    from services.progress import RunProgress
    from services.runs import wait_for_run

    settings = get_settings()
    created: list[str] = []
    with ExitStack() as stack:
        if settings.embedded:
            from services.embedded import embedded_worker

            stack.enter_context(embedded_worker(settings.concurrency))
        progress = stack.enter_context(RunProgress(err, enabled=not as_json and not detach, total=total,
                                                   label=label))
        try:
            try:
                run_id = start(progress.enqueued, created.append)
            except EvalfleetError as exc:
                fail(exc)
            if detach:
                click.echo(run_id)
                return
            report = wait_for_run(run_id, on_progress=progress.update, notify=progress.say)
        except KeyboardInterrupt:
            progress.stop()
            _interrupted(created[0] if created else None, submitted="run_id" in locals(), as_json=as_json)
    finish(report, as_json, exit_code=gated_exit(report, gate))


def gated_exit(report, gate: float | str | None) -> int | None:  # noqa: ANN001
    """Exit 1 when the gate is set and a star metric misses its threshold (or the given one)."""
    if gate is None:
        return None
    for task_result in report.task_results:
        star = task_result.star_metric
        if star is None:
            continue
        threshold = star.threshold if gate == "star" else gate
        if star.value is None or star.value < threshold:
            say(f"--fail-under: {task_result.key}: {star.metric} = {star.value} is below {threshold:g}")
            return EXIT_FAILED
    return None


def _interrupted(run_id: str | None, *, submitted: bool, as_json: bool) -> None:
    """Ctrl+C: an embedded run (or one still being submitted) is cancelled with its logs written;
    a submitted cluster run goes on, and the user is told how to follow or stop it."""
    from services.runs import cancel_run

    if run_id is None:
        say("interrupted before the run was registered: nothing was submitted")
        sys.exit(EXIT_INTERRUPTED)
    if submitted and not get_settings().embedded:
        say(f"detached: run {run_id} goes on in the cluster. Follow it with `evalfleet status {run_id}`, "
            f"stop it with `evalfleet cancel {run_id}`.")
        sys.exit(EXIT_INTERRUPTED)
    why = "cancelling the run" if submitted else "submission interrupted: cancelling the partly submitted run"
    say(f"{why} {run_id}: samples in flight get {INTERRUPT_GRACE_S:g} s, then the logs are written "
        "(Ctrl+C again to stop at once)")
    try:
        report = cancel_run(run_id, grace_s=INTERRUPT_GRACE_S)
    except KeyboardInterrupt:
        say(f"stopped; run {run_id} is left cancelling: `evalfleet cancel {run_id}` finishes it")
        sys.exit(EXIT_INTERRUPTED)
    finish(report, as_json, exit_code=EXIT_INTERRUPTED)


@click.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--detach", is_flag=True, help="Return after submitting and print the run id (needs a broker).")
@click.option("--concurrency", type=click.IntRange(1), help="Samples in flight in the embedded worker.")
@settings_options
def retry(source: str, as_json: bool, detach: bool, concurrency: int | None, **options: str | None) -> None:
    """Re-run only the failed or missing samples of a run.

    SOURCE is a run id, or the path or s3:// URL of one of its task result logs. Samples that
    succeeded are reused without model calls; the original logs are left untouched.
    """
    from services.retry import retry_run

    apply_settings(concurrency=concurrency, **options)
    if detach and get_settings().embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    submit_and_wait(lambda on_enqueued, on_created: retry_run(source, on_enqueued, on_created),
                    as_json=as_json, detach=detach)


@click.command()
@click.argument("run_id")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds in-flight samples get to finish before the logs are written.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's JSON document.")
@settings_options
def cancel(run_id: str, grace: float, as_json: bool, **options: str | None) -> None:
    """Cancel a run: drop its pending samples and write its logs with status cancelled."""
    from services.runs import cancel_run

    apply_settings(**options)
    try:
        report = cancel_run(run_id, grace_s=grace)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    finish(report, as_json)


@click.command()
@click.argument("run_id")
@settings_options
def resume(run_id: str, **options: str | None) -> None:
    """Enqueue again the samples of a run that have no result, and write logs nobody is writing
    (after a broker lost its queue, or a log upload failed)."""
    from services.recovery import finish_stalled_aggregations, requeue_missing_samples
    from services.runs import run_report

    apply_settings(**options)
    try:
        run_report(run_id)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    if get_settings().embedded:
        raise BadInput("resume needs a broker and workers: set EVALFLEET_BROKER_URL")
    say(f"enqueued {requeue_missing_samples(run_id)} samples; "
        f"finished {finish_stalled_aggregations(run_id)} stalled aggregations")


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's JSON document.")
@settings_options
def status(run_id: str, as_json: bool, **options: str | None) -> None:
    """Progress of a run, and its results once finished.

    A run whose samples are all done but whose logs were never written (the process that should
    have aggregated died, or a log upload failed) is finished here."""
    from services.recovery import finish_stalled_aggregations
    from services.runs import idle_queues, no_worker_message, run_report

    apply_settings(**options)
    try:
        report = run_report(run_id)
        if not report.finished and any(t.done >= t.samples and t.status in ("running", "aggregating")
                                       for t in report.task_results):
            finish_stalled_aggregations(run_id)
        report = run_report(run_id, with_errors=True)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    if report.finished:
        finish(report, as_json)
    idle = idle_queues(run_id)
    if as_json:
        click.echo(report_json(report, idle_queues=idle))
        return
    say(f"run {report.run_id} ({report.evaluation}): {report.status}, {report.done}/{report.total} samples done, "
        f"{report.errors} errors")
    for queue in idle:
        say(no_worker_message(queue))


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="How many runs.")
@click.option("--evaluation", help="Only runs of this evaluation key.")
@settings_options
def list_runs(as_json: bool, limit: int, evaluation: str | None, **options: str | None) -> None:
    """Runs, newest first, with status and progress."""
    from services.runs import list_runs as runs_list

    apply_settings(**options)
    summaries = runs_list(limit=limit, evaluation=evaluation)
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    emit_table(["evaluation", "status", "progress", "errors", "created", "run id"],
               [[s.evaluation, s.status, f"{s.done}/{s.samples}", str(s.errors), s.created_at.strftime("%Y-%m-%d %H:%M"),
                 s.run_id] for s in summaries])


COMMANDS = [run, retry, cancel, resume, status, list_runs]
