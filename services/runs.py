"""Runs as users see them: the report that `run --json` and `status --json` print, progress,
waiting for a run to finish, and the list of runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select, update

from shared.db import CANCELLING, FINAL_STATUSES, get_engine, runs, task_results
from shared.errors import RunNotFound


class TaskResultReport(BaseModel):
    key: str
    status: str
    log_path: str | None
    samples: int
    done: int
    errors: int
    model_calls: int
    cache_hits: int
    metrics: dict[str, dict[str, float | None]]
    error: str | None = None


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


def run_report(run_id: str) -> RunReport:
    with get_engine().connect() as connection:
        run = connection.execute(select(runs).where(runs.c.id == run_id)).one_or_none()
        if run is None:
            raise RunNotFound(run_id)
        rows = connection.execute(
            select(task_results).where(task_results.c.run_id == run_id).order_by(task_results.c.position)
        ).all()
    return RunReport(
        run_id=run.id, status=run.status, evaluation=run.evaluation_key, display_name=run.display_name,
        created_at=run.created_at, finished_at=run.finished_at, retry_of=run.retry_of, error=run.error,
        task_results=[
            TaskResultReport(
                key=row.spec_key, status=row.status, log_path=row.log_path, samples=row.total, done=row.done,
                errors=row.errors, model_calls=row.model_calls, cache_hits=row.cache_hits,
                metrics=json.loads(row.metrics) if row.metrics else {}, error=row.error,
            )
            for row in rows
        ],
    )


RECOVERY_EVERY_S = 5.0


def wait_for_run(run_id: str, on_progress: Callable[[RunReport], None] | None = None,
                 poll_s: float = 0.25, timeout_s: float | None = None) -> RunReport:
    """Poll until the run finishes. Every few seconds, also finish what a crash interrupted:
    aggregation that never fired, and samples lost by a broker restart."""
    from services.recovery import BrokerWatch, finish_stalled_aggregations, requeue_missing_samples

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    watch = BrokerWatch()
    next_recovery = time.monotonic() + RECOVERY_EVERY_S
    while True:
        report = run_report(run_id)
        if on_progress is not None:
            on_progress(report)
        if report.finished:
            return report
        if deadline is not None and time.monotonic() > deadline:
            return report
        if time.monotonic() >= next_recovery:
            next_recovery = time.monotonic() + RECOVERY_EVERY_S
            if watch.restarted():
                requeue_missing_samples(run_id)
            if any(t.status in ("running", "aggregating") and t.done >= t.samples for t in report.task_results):
                finish_stalled_aggregations(run_id)
        time.sleep(poll_s)


def cancel_run(run_id: str, grace_s: float = 2.0) -> RunReport:
    """Stop a run: workers drop its samples not yet started, those in flight get `grace_s` to
    finish, then every unfinished task result gets its log with status `cancelled`."""
    from services.aggregator import assemble_task_result_log, settle_run
    from workers.results import claim_aggregation

    report = run_report(run_id)
    if report.finished:
        return report
    with get_engine().begin() as connection:
        connection.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running")
                           .values(status=CANCELLING))
    time.sleep(grace_s)
    with get_engine().connect() as connection:
        ids = connection.execute(select(task_results.c.id).where(
            task_results.c.run_id == run_id, task_results.c.status == "running")).scalars().all()
    for task_result_id in ids:
        with get_engine().begin() as connection:
            claimed = claim_aggregation(connection, task_result_id, complete_only=False)
        if claimed:
            assemble_task_result_log(task_result_id, status="cancelled")
    settle_run(run_id)
    return run_report(run_id)


class RunSummary(BaseModel):
    run_id: str
    evaluation: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    samples: int
    done: int
    errors: int


def list_runs(limit: int = 50, evaluation: str | None = None) -> list[RunSummary]:
    """Runs, newest first, with their progress."""
    t = task_results.c
    statement = (
        select(runs.c.id, runs.c.evaluation_key, runs.c.status, runs.c.created_at, runs.c.finished_at,
               func.coalesce(func.sum(t.total), 0), func.coalesce(func.sum(t.done), 0),
               func.coalesce(func.sum(t.errors), 0))
        .select_from(runs.outerjoin(task_results, t.run_id == runs.c.id))
        .group_by(runs.c.id)
        .order_by(runs.c.created_at.desc())
        .limit(limit)
    )
    if evaluation:
        statement = statement.where(runs.c.evaluation_key == evaluation)
    with get_engine().connect() as connection:
        return [
            RunSummary(run_id=r[0], evaluation=r[1], status=r[2], created_at=r[3], finished_at=r[4],
                       samples=r[5], done=r[6], errors=r[7])
            for r in connection.execute(statement)
        ]
