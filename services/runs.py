"""Runs as users see them: the report that `run --json` and `status --json` print, progress,
waiting for a run to finish (riding out outages, recovering what crashes interrupted, saying so
when no worker is there), cancelling, and the list of runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from services.results import Usage, usage_of
from shared.db import CANCELLING, FINAL_STATUSES, get_engine, runs, sample_results, task_results
from shared.errors import EvalfleetError, RunNotFound
from shared.log import ErrorCount, ErrorSummary, StarMetricResult
from shared.outages import OutageBudgetExceeded, is_outage, through_outages
from shared.plan import ResolvedTaskSpec
from shared.settings import get_settings

TOP_ERRORS = 5
# How long a run may wait with no live worker on one of its queues before `run` says so.
NO_WORKER_AFTER_S = 30.0


class TaskResultReport(BaseModel):
    key: str
    uuid: str | None = None
    display_name: str | None = None
    model: str | None = None
    status: str
    log_path: str | None
    samples: int
    done: int
    errors: int
    model_calls: int
    attempts: int = 0
    cache_hits: int
    metrics: dict[str, dict[str, float | None]]
    error: str | None = None
    error_summary: ErrorSummary | None = None
    star_metric: StarMetricResult | None = None
    usage: Usage | None = None

    @property
    def pass_status(self) -> bool | None:
        return None if self.star_metric is None else self.star_metric.pass_status


class RunReport(BaseModel):
    run_id: str
    status: str
    evaluation: str
    display_name: str
    created_at: datetime
    finished_at: datetime | None
    retry_of: str | None = None
    error: str | None = None
    task_results: list[TaskResultReport]

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def done(self) -> int:
        return sum(t.done for t in self.task_results)

    @property
    def total(self) -> int:
        return sum(t.samples for t in self.task_results)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.task_results)


_specs: dict[str, ResolvedTaskSpec] = {}


def spec_of(connection, task_result_id: int, task_result_uuid: str | None) -> ResolvedTaskSpec:  # noqa: ANN001
    """A task result's specification, parsed once per process (by its UUID, unique across
    databases): it never changes, and progress reports ask for it every few hundred
    milliseconds (its prompt template can be megabytes)."""
    spec = _specs.get(task_result_uuid) if task_result_uuid else None
    if spec is None:
        plan = connection.execute(select(task_results.c.plan).where(task_results.c.id == task_result_id)).scalar_one()
        spec = ResolvedTaskSpec.model_validate_json(plan)
        if task_result_uuid:
            if len(_specs) > 256:
                _specs.clear()
            _specs[task_result_uuid] = spec
    return spec


def run_report(run_id: str, *, with_errors: bool = False, with_usage: bool = False) -> RunReport:
    """A run and its task results. `with_errors`: also summarise the sample errors of task results
    still running (finished ones carry their summary). `with_usage`: tokens, cost and latency
    (a pass over the samples' columns: for final reports, not for progress)."""
    with get_engine().connect() as connection:
        # Not the plan: progress asks every few hundred milliseconds, and with a megabyte prompt
        # template each read would be megabytes.
        run = connection.execute(select(*(column for column in runs.c if column.name != "plan"))
                                 .where(runs.c.id == run_id)).one_or_none()
        if run is None:
            raise RunNotFound(run_id)
        rows = connection.execute(
            select(*(column for column in task_results.c if column.name != "plan"))
            .where(task_results.c.run_id == run_id).order_by(task_results.c.position)
        ).all()
        reports = []
        for row in rows:
            summary = ErrorSummary.model_validate_json(row.error_summary) if row.error_summary else None
            if summary is None and with_errors and row.errors:
                summary = live_error_summary(connection, row.id, row.errors)
            if summary is not None and summary.task_error is None and row.status == "error" and row.error and \
                    not summary.most_frequent:
                summary.task_error = row.error.splitlines()[0]
            spec = spec_of(connection, row.id, row.uuid)
            metrics = json.loads(row.metrics) if row.metrics else {}
            reports.append(TaskResultReport(
                key=row.spec_key, uuid=row.uuid, display_name=spec.display_name, status=row.status,
                model=spec.model.key if spec.model else None,
                log_path=row.log_path, samples=row.total, done=row.done, errors=row.errors,
                model_calls=row.model_calls, attempts=row.attempts, cache_hits=row.cache_hits, metrics=metrics,
                error=row.error, error_summary=summary,
                star_metric=star_metric_result(spec, metrics) if row.status in FINAL_STATUSES else None,
                usage=usage_of(row.id, spec) if with_usage else None,
            ))
    return RunReport(
        run_id=run.id, status=run.status, evaluation=run.evaluation_key, display_name=run.display_name,
        created_at=run.created_at, finished_at=run.finished_at, retry_of=run.retry_of, error=run.error,
        task_results=reports,
    )


def star_metric_result(spec: ResolvedTaskSpec, metrics: dict) -> StarMetricResult | None:
    from services.aggregator import star_metric_result as result

    return result(spec, metrics)


def live_error_summary(connection, task_result_id: int, errors: int) -> ErrorSummary:  # noqa: ANN001
    """The most frequent sample errors of a task result, counted in the database."""
    sr = sample_results.c
    top = connection.execute(
        select(sr.error_type, sr.error_message, func.count().label("n"))
        .where(sr.task_result_id == task_result_id, sr.is_error.is_(True))
        .group_by(sr.error_type, sr.error_message).order_by(func.count().desc()).limit(TOP_ERRORS)
    ).all()
    return ErrorSummary(samples_errored=errors, most_frequent=[
        ErrorCount(type=kind or "Error", message=message or "", count=n) for kind, message, n in top])


RECOVERY_EVERY_S = 5.0
Notify = Callable[[str], None]


def wait_for_run(run_id: str, on_progress: Callable[[RunReport], None] | None = None,
                 poll_s: float = 0.25, timeout_s: float | None = None, notify: Notify | None = None) -> RunReport:
    """Poll until the run finishes. Every few seconds, also finish what a crash interrupted
    (aggregation that never fired, samples lost by a broker restart or held by nobody), and say
    once (through `notify`) when no worker consumes one of the run's queues. Database outages are
    waited out up to the outage budget, with a message."""
    from services.recovery import (
        BrokerWatch,
        UnheldSamples,
        finish_stalled_aggregations,
        requeue_missing_samples,
    )

    say = notify or (lambda message: None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    watch = BrokerWatch()
    safety_net = UnheldSamples(run_id)
    idle_queues = IdleQueues(run_id)
    next_recovery = time.monotonic() + RECOVERY_EVERY_S
    outage_notified = False

    def on_outage(exc: BaseException, waited: float) -> None:
        nonlocal outage_notified
        if not outage_notified:
            say(f"the database is unreachable ({str(exc).splitlines()[0][:200]}); waiting for it to come back "
                f"(up to {get_settings().outage_budget:.0f} s)")
            outage_notified = True

    while True:
        try:
            report = through_outages(lambda: run_report(run_id), "following the run", on_wait=on_outage)
        except OutageBudgetExceeded as exc:
            raise EvalfleetError(f"{exc}; the run goes on without this command: follow it with "
                                 f"`evalfleet status {run_id}`") from None
        if outage_notified:
            say("the database is back")
            outage_notified = False
        if on_progress is not None:
            on_progress(report)
        if report.finished:
            return run_report(run_id, with_errors=True, with_usage=True)
        if deadline is not None and time.monotonic() > deadline:
            return report
        if time.monotonic() >= next_recovery:
            next_recovery = time.monotonic() + RECOVERY_EVERY_S
            try:
                if watch.restarted():
                    requeue_missing_samples(run_id)
                if any(t.status in ("running", "aggregating") and t.done >= t.samples for t in report.task_results):
                    finish_stalled_aggregations(run_id)
                safety_net.sweep()
                for message in idle_queues.check():
                    say(message)
            except Exception as exc:  # noqa: BLE001 - recovery is retried on the next pass
                if not is_outage(exc):
                    raise
        time.sleep(poll_s)


class IdleQueues:
    """The run's queues that no live worker consumes, said once per queue after NO_WORKER_AFTER_S."""

    def __init__(self, run_id: str, after_s: float = NO_WORKER_AFTER_S):
        self.run_id = run_id
        self.after_s = after_s
        self.since: dict[str, float] = {}
        self.told: set[str] = set()

    def check(self) -> list[str]:
        if get_settings().embedded:
            return []
        messages = []
        for queue in idle_queues(self.run_id):
            first = self.since.setdefault(queue, time.monotonic())
            if queue not in self.told and time.monotonic() - first >= self.after_s:
                self.told.add(queue)
                messages.append(no_worker_message(queue, time.monotonic() - first))
        return messages


def run_queues(run_id: str) -> list[str]:
    from workers.app import queue_for

    with get_engine().connect() as connection:
        plans = connection.execute(select(task_results.c.plan).where(
            task_results.c.run_id == run_id, task_results.c.status.in_(("running", "aggregating")))).scalars().all()
    return sorted({queue_for(ResolvedTaskSpec.model_validate_json(plan)) for plan in plans})


def idle_queues(run_id: str) -> list[str]:
    """The queues of the run's unfinished task results that no live worker consumes."""
    from workers.heartbeat import live_workers

    if get_settings().embedded:
        return []
    consumed = {queue for worker in live_workers() for queue in worker["queues"]}
    return [queue for queue in run_queues(run_id) if queue not in consumed]


def no_worker_message(queue: str, waited_s: float | None = None) -> str:
    from workers.app import broker_address

    broker = broker_address()
    waited = f" for {waited_s:.0f} s" if waited_s is not None else ""
    return (f"no worker has consumed queue {queue!r} on {broker}{waited}; the run waits. Start one with: "
            f"EVALFLEET_BROKER_URL={broker} evalfleet worker -Q {queue}")


CANCEL_GRACE_S = 2.0


def begin_cancel(run_id: str) -> bool:
    """Mark a running run as being cancelled (workers drop its samples not yet started); true if
    this call did it."""
    with get_engine().begin() as connection:
        return connection.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running")
                                  .values(status=CANCELLING)).rowcount == 1


def cancel_run(run_id: str, grace_s: float = CANCEL_GRACE_S) -> RunReport:
    """Stop a run: workers drop its samples not yet started, those in flight get `grace_s` to
    finish, then every unfinished task result gets its log with status `cancelled`. With no live
    worker on the run's queues, nothing is in flight: it completes at once, here."""
    from services.aggregator import assemble_task_result_log, settle_run
    from workers.app import queue_for
    from workers.results import claim_aggregation

    report = run_report(run_id)
    if report.finished:
        return report
    begin_cancel(run_id)
    unattended = set(idle_queues(run_id))
    if not unattended or unattended != set(run_queues(run_id)):
        time.sleep(grace_s)
    with get_engine().connect() as connection:
        rows = connection.execute(select(task_results.c.id, task_results.c.status, task_results.c.plan).where(
            task_results.c.run_id == run_id, task_results.c.status.in_(("running", "aggregating")))).all()
    for task_result_id, status, plan in rows:
        if status == "running":
            with get_engine().begin() as connection:
                claimed = claim_aggregation(connection, task_result_id, complete_only=False)
            if claimed:
                assemble_task_result_log(task_result_id, status="cancelled")
        elif queue_for(ResolvedTaskSpec.model_validate_json(plan)) in unattended:
            # Claimed, but its aggregation waits in a queue nobody consumes: write the log here.
            assemble_task_result_log(task_result_id, stale_after_s=0)
    settle_run(run_id)
    return run_report(run_id, with_errors=True, with_usage=True)


class RunSummary(BaseModel):
    run_id: str
    evaluation: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    duration_s: float | None = None
    models: list[str] = []
    samples: int
    done: int
    errors: int
    cost_usd: float | None = None
    passed: int | None = Field(None, description="Task results whose star metric passed (None: no star metric).")
    starred: int = 0


def _run_conditions(evaluation: str | None, status: str | None, tag: str | None, model: str | None) -> list:
    conditions = []
    if evaluation:
        conditions.append(runs.c.evaluation_key == evaluation)
    if status:
        conditions.append(runs.c.status == status)
    if tag:
        conditions.append(runs.c.tags.like(f"%,{tag},%"))
    if model:
        conditions.append(runs.c.id.in_(select(task_results.c.run_id).where(task_results.c.model_key == model)))
    return conditions


def count_runs(evaluation: str | None = None, status: str | None = None, tag: str | None = None,
               model: str | None = None) -> int:
    with get_engine().connect() as connection:
        return connection.execute(select(func.count()).select_from(runs).where(
            *_run_conditions(evaluation, status, tag, model))).scalar_one()


def list_runs(limit: int = 50, evaluation: str | None = None, status: str | None = None, *, offset: int = 0,
              tag: str | None = None, model: str | None = None) -> list[RunSummary]:
    """Runs, newest first, with their progress, models, duration, cost and star metrics."""
    from services.results import task_results_of_run, usage_of
    from shared.db import utc

    statement = (select(runs.c.id).where(*_run_conditions(evaluation, status, tag, model))
                 .order_by(runs.c.created_at.desc()).limit(limit).offset(offset))
    with get_engine().connect() as connection:
        ids = connection.execute(statement).scalars().all()
        rows = {row.id: row for row in connection.execute(select(runs).where(runs.c.id.in_(ids)))}
    summaries = []
    for run_id in ids:
        run = rows[run_id]
        views = task_results_of_run(run_id)
        costs = [usage_of(v.id, v.spec).cost_usd for v in views if v.spec.model is not None]
        starred = [v for v in views if v.star_metric is not None]
        created, finished = utc(run.created_at), utc(run.finished_at)
        summaries.append(RunSummary(
            run_id=run_id, evaluation=run.evaluation_key, status=run.status, created_at=created, finished_at=finished,
            duration_s=(finished - created).total_seconds() if finished else None,
            models=sorted({v.spec.model.key for v in views if v.spec.model}), samples=sum(v.total for v in views),
            done=sum(v.done for v in views), errors=sum(v.errors for v in views),
            cost_usd=sum(costs) if costs and all(c is not None for c in costs) else None,
            passed=sum(bool(v.pass_status) for v in starred) if starred else None, starred=len(starred)))
    return summaries
