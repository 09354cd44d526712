"""Commands that start, follow and stop runs: run, retry, status, cancel, resume, list."""

from __future__ import annotations

import json
import sys
import threading
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


def execution_options(command):  # noqa: ANN001, ANN201
    """Options that change how a run file is executed, shared by `run` and `retry`."""
    command = click.option("--max-connections", type=click.IntRange(1),
                           help="Cap every model's in-flight requests at this (cluster-wide).")(command)
    command = click.option("--concurrency", type=click.IntRange(1), help="Samples in flight in the embedded worker.")(
        command)
    return command


@click.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False), help="The run file (YAML).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of a table.")
@click.option("--detach", is_flag=True, help="Return after submitting and print the run id (needs a broker).")
@click.option("--fail-under", "gate", is_flag=False, flag_value="star", default=None, metavar="[THRESHOLD]",
              help="Exit 1 when a task result's star metric is below its success threshold (or below "
              "THRESHOLD, when given): a CI gate.")
@click.option("--num-samples", type=click.IntRange(1), help="Evaluate at most N samples per task specification.")
@click.option("--subsampling", type=click.Choice(["head", "random"]), help="How those N are chosen.")
@click.option("--model", "model", help="Run every specification that uses a model on this one (a key or provider$name).")
@click.option("-T", "--task-config", "task_config", multiple=True, metavar="KEY=VALUE",
              help="Set a task config field (VALUE read as YAML: 0.5, [a, b], text), on every specification "
              "whose task has that field. Repeatable.")
@click.option("--cache-policy", type=click.Choice(["reuse", "update", "no-cache"]), help="Override the file's.")
@click.option("--spec", "specs", multiple=True, metavar="KEY", help="Run only this task specification. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would run (samples, cached, model calls, "
              "estimated cost); register and submit nothing.")
@click.option("--keys", is_flag=True, help="Show task specification keys in the table instead of display names.")
@execution_options
@settings_options
def run(path: str, as_json: bool, detach: bool, gate: str | None, num_samples: int | None, subsampling: str | None,
        model: str | None, task_config: tuple[str, ...], cache_policy: str | None, specs: tuple[str, ...],
        dry_run: bool, keys: bool, concurrency: int | None, max_connections: int | None,
        **options: str | None) -> None:
    """Validate, submit and run an evaluation; wait for its task result logs.

    Ctrl+C: on the embedded default, cancels the run (in-flight samples finish, logs are written
    with status cancelled, exit 130); with a broker, stops waiting and leaves the run going."""
    from services.overrides import Overrides, parse_assignment
    from services.submitter import submit_resolved, validate_run_file

    apply_settings(concurrency=concurrency, **options)
    if detach and get_settings().embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    threshold = parse_gate(gate)
    try:
        overrides = Overrides(num_samples=num_samples, subsampling=subsampling, model=model,
                              task_config=tuple(parse_assignment(item) for item in task_config),
                              cache_policy=cache_policy, max_connections=max_connections, specs=specs)
        resolved = validate_run_file(path, overrides=overrides)  # bad input fails here, before any worker starts
    except EvalfleetError as exc:
        fail(exc)
    if gate is not None and not any(item.spec.star_metric for item in resolved.specs):
        raise BadInput(f"{path}: --fail-under needs a `star_metric` (on the evaluation or a task specification)")
    if dry_run:
        show_plan(resolved, as_json)
        return

    def registered(kind: str, key: str, change: str, version: int) -> None:
        if change == "updated":
            say(f"registered {kind} {key} v{version}: its definition changed (runs that used older versions keep "
                "them; `evalfleet entities show` shows them)")

    submit_and_wait(lambda on_enqueued, on_created, stop: submit_resolved(resolved, on_enqueued, on_created,
                                                                           registered, stop),
                    as_json=as_json, detach=detach, label=resolved.evaluation.key,
                    total=sum(s.selection.total * s.spec.epochs for s in resolved.specs if s.uploaded_log is None),
                    gate=threshold if gate is not None else None, show_keys=keys)


def show_plan(resolved, as_json: bool) -> None:  # noqa: ANN001 - a ResolvedRunFile
    from services.dryrun import plan_run

    plans = plan_run(resolved)
    if as_json:
        click.echo(json.dumps({"evaluation": resolved.evaluation.key, "dry_run": True,
                               "task_specifications": [p.model_dump() for p in plans]}, indent=2))
        return
    emit_table(["task", "model", "samples", "cached", "model calls", "est. tokens in/out", "est. cost"],
               [[p.display_name, p.model or "-", str(p.samples), "upload" if p.uploaded else str(p.cached),
                 str(p.model_calls), f"{p.estimated_input_tokens}/{p.estimated_output_tokens}",
                 "n/a" if p.estimated_cost_usd is None else f"${p.estimated_cost_usd:.4f}"] for p in plans],
               title=f"{resolved.evaluation.display_name}: dry run (nothing registered or submitted)")
    sources = sorted({p.output_tokens_from for p in plans if p.model_calls})
    if sources:
        say("output tokens estimated from " + "; ".join(sources))


def parse_gate(gate: str | None) -> float | str | None:
    """`--fail-under`: "star" (each star metric's own threshold), or a number."""
    if gate is None or gate == "star":
        return gate
    try:
        return float(gate.rstrip("%")) / (100 if gate.endswith("%") else 1)
    except ValueError:
        raise BadInput(f"--fail-under: {gate!r} is not a number (e.g. 0.8 or 80%)") from None


def submit_and_wait(start: Callable, *, as_json: bool, detach: bool, total: int | None = None,
                    label: str = "run", gate: float | str | None = None, show_keys: bool = False) -> None:
    """Start a run (in-process worker on the embedded default), then wait with a progress bar.
    `start(on_enqueued, on_created, stop)` submits and returns the run id; it feeds the samples a
    window at a time, so it runs on a thread of its own while this one follows the run."""
    from services.feeding import hand_over_feeding, window_size
    from services.progress import RunProgress
    from services.runs import wait_for_run
    from services.submitter import feeder_name

    settings = get_settings()
    created: list[str] = []
    outcome: dict[str, object] = {}
    fed, stop = threading.Event(), threading.Event()
    with ExitStack() as stack:
        if settings.embedded:
            from services.embedded import embedded_worker

            stack.enter_context(embedded_worker(settings.concurrency))
        progress = stack.enter_context(RunProgress(err, enabled=not as_json and not detach, total=total,
                                                   label=label))

        def feed() -> None:
            try:
                outcome["run_id"] = start(progress.enqueued, created.append, stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = exc
            finally:
                fed.set()

        try:
            threading.Thread(target=feed, name="evalfleet-feeder", daemon=True).start()
            while not created and not fed.wait(0.02):
                pass
            if isinstance(outcome.get("error"), EvalfleetError) and not created:
                fail(outcome["error"])  # type: ignore[arg-type]
            if "error" in outcome and not created:
                raise outcome["error"]  # type: ignore[misc]
            run_id = created[0]
            if detach:
                # The first window goes out from here; the workers feed the rest.
                window = window_size()
                while not fed.wait(0.05):
                    if window is not None and progress.sent >= window:
                        stop.set()
                if isinstance(outcome.get("error"), EvalfleetError):
                    fail(outcome["error"])  # type: ignore[arg-type]
                hand_over_feeding(run_id, feeder_name())
                click.echo(run_id)
                return
            report = wait_for_run(run_id, on_progress=progress.update, notify=progress.say)
            fed.wait(10)
        except KeyboardInterrupt:
            stop.set()
            progress.stop()
            _interrupted(created[0] if created else None, as_json=as_json)
    finish(report, as_json, exit_code=gated_exit(report, gate), show_keys=show_keys)


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


def _interrupted(run_id: str | None, *, as_json: bool) -> None:
    """Ctrl+C: an embedded run is cancelled with its logs written; a cluster run goes on (the
    workers feed the rest of its samples), and the user is told how to follow or stop it."""
    from services.feeding import hand_over_feeding
    from services.runs import cancel_run
    from services.submitter import feeder_name

    if run_id is None:
        say("interrupted before the run was registered: nothing was submitted")
        sys.exit(EXIT_INTERRUPTED)
    if not get_settings().embedded:
        hand_over_feeding(run_id, feeder_name())
        say(f"detached: run {run_id} goes on in the cluster. Follow it with `evalfleet status {run_id}`, "
            f"stop it with `evalfleet cancel {run_id}`.")
        sys.exit(EXIT_INTERRUPTED)
    why = "cancelling the run"
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
@execution_options
@settings_options
def retry(source: str, as_json: bool, detach: bool, concurrency: int | None, max_connections: int | None,
          **options: str | None) -> None:
    """Re-run only the failed or missing samples of a run.

    SOURCE is a run id, or the path or s3:// URL of one of its task result logs. Samples that
    succeeded are reused without model calls; the original logs are left untouched.
    """
    from services.retry import retry_run

    apply_settings(concurrency=concurrency, **options)
    if detach and get_settings().embedded:
        raise BadInput("--detach needs a broker: set EVALFLEET_BROKER_URL and start `evalfleet worker`")
    from services.overrides import Overrides
    from services.results import resolve_run_id
    from services.retry import is_log_location

    if not is_log_location(source):
        try:
            source = resolve_run_id(source)
        except EvalfleetError as exc:
            fail(exc)
    overrides = Overrides(max_connections=max_connections)
    submit_and_wait(lambda on_enqueued, on_created, stop: retry_run(source, on_enqueued, on_created, overrides,
                                                                     stop),
                    as_json=as_json, detach=detach)


@click.command()
@click.argument("run_id")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds in-flight samples get to finish before the logs are written.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's JSON document.")
@settings_options
def cancel(run_id: str, grace: float, as_json: bool, **options: str | None) -> None:
    """Cancel a run: drop its pending samples and write its logs with status cancelled."""
    from services.results import resolve_run_id
    from services.runs import cancel_run

    apply_settings(**options)
    try:
        report = cancel_run(resolve_run_id(run_id), grace_s=grace)
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
    from services.results import resolve_run_id
    from services.runs import run_report

    apply_settings(**options)
    try:
        run_id = resolve_run_id(run_id)
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
    from services.results import resolve_run_id
    from services.runs import idle_queues, no_worker_message, run_report

    apply_settings(**options)
    try:
        run_id = resolve_run_id(run_id)
        report = run_report(run_id)
        if not report.finished and any(t.done >= t.samples and t.status in ("running", "aggregating")
                                       for t in report.task_results):
            finish_stalled_aggregations(run_id)
        report = run_report(run_id, with_errors=True, with_usage=True)
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
@click.option("--status", type=click.Choice(["running", "cancelling", "success", "error", "cancelled"]),
              help="Only runs with this status.")
@settings_options
def list_runs(as_json: bool, limit: int, evaluation: str | None, status: str | None, **options: str | None) -> None:
    """Runs, newest first: evaluation, models, status, progress, duration, cost, star metrics."""
    from services.runs import list_runs as runs_list

    apply_settings(**options)
    summaries = runs_list(limit=limit, evaluation=evaluation, status=status)
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    emit_table(["run id", "evaluation", "models", "status", "progress", "duration", "cost", "star", "created"],
               [[s.run_id, s.evaluation, ", ".join(s.models) or "-", s.status, f"{s.done}/{s.samples}"
                 + (f" ({s.errors} errors)" if s.errors else ""),
                 "-" if s.duration_s is None else f"{s.duration_s:.1f} s",
                 "n/a" if s.cost_usd is None else f"${s.cost_usd:.4f}",
                 "-" if s.passed is None else f"{s.passed}/{s.starred} pass", s.created_at.strftime("%Y-%m-%d %H:%M")]
                for s in summaries])


COMMANDS = [run, retry, cancel, resume, status, list_runs]
