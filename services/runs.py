"""Runs as users see them: the report that `run --json` and `status --json` print, progress,
waiting for a run to finish, and the list of runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select

from shared.db import FINAL_STATUSES, get_engine, runs, task_results
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


def wait_for_run(run_id: str, on_progress: Callable[[RunReport], None] | None = None,
                 poll_s: float = 0.25, timeout_s: float | None = None) -> RunReport:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        report = run_report(run_id)
        if on_progress is not None:
            on_progress(report)
        if report.finished:
            return report
        if deadline is not None and time.monotonic() > deadline:
            return report
        time.sleep(poll_s)


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
