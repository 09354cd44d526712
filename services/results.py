"""Reading results: task results (one task specification of one run) and their samples, paged.
This is the one query layer the HTTP API, the viewer and the CLI share: how a page of samples is
found, how a status is named, what counts as passing, live in this module only.

Samples are paged by position, which is dense (0..total-1) within a task result: a page is one
index range scan whatever its depth, never an OFFSET over a sort."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import and_, func, or_, select, true

from shared.db import CANCELLING, get_engine, runs, sample_results, task_results, utc
from shared.errors import RunNotFound, SpecError
from shared.log import ErrorSummary, SampleRecord, StarMetricResult
from shared.plan import ResolvedEvaluation, ResolvedTaskSpec

# DigitalOcean's names for the states of an evaluation run, in the order a run goes through them.
Phase = Literal["queued", "running", "evaluating_results", "cancelling", "cancelled", "successful",
                "partially_successful", "failed"]
PHASES: tuple[str, ...] = ("queued", "running", "evaluating_results", "cancelling", "cancelled", "successful",
                           "partially_successful", "failed")


def phase_of(status: str, run_status: str, done: int, errors: int) -> Phase:
    """A task result's state as DigitalOcean names it. `success` with sample errors (within the
    evaluation's `fail_on_error`) is partially successful."""
    if status == "cancelled":
        return "cancelled"
    if status == "error":
        return "failed"
    if status == "success":
        return "partially_successful" if errors else "successful"
    if run_status == CANCELLING:
        return "cancelling"
    if status == "aggregating":
        return "evaluating_results"
    return "running" if done else "queued"


def _phase_condition(phase: str):  # noqa: ANN202 - a SQLAlchemy condition
    t, r = task_results.c, runs.c
    active = t.status.in_(("running", "aggregating"))
    return {
        "queued": and_(t.status == "running", t.done == 0, r.status != CANCELLING),
        "running": and_(t.status == "running", t.done > 0, r.status != CANCELLING),
        "evaluating_results": and_(t.status == "aggregating", r.status != CANCELLING),
        "cancelling": and_(active, r.status == CANCELLING),
        "cancelled": t.status == "cancelled",
        "successful": and_(t.status == "success", t.errors == 0),
        "partially_successful": and_(t.status == "success", t.errors > 0),
        "failed": t.status == "error",
    }[phase]


class TaskResultView(BaseModel):
    """Everything about one task result that a reader needs, without its samples."""

    id: int
    uuid: str
    run_id: str
    run_status: str
    position: int
    spec: ResolvedTaskSpec
    evaluation_key: str
    evaluation_display_name: str
    evaluation_description: str | None
    tags: list[str]
    status: str
    phase: Phase
    total: int
    done: int
    errors: int
    model_calls: int
    attempts: int
    cache_hits: int
    metrics: dict[str, dict[str, float | None]]
    error: str | None
    error_summary: ErrorSummary | None
    star_metric: StarMetricResult | None
    log_path: str | None
    queued_at: datetime
    started_at: datetime
    finished_at: datetime | None
    retry_of: str | None

    @property
    def pass_status(self) -> bool | None:
        return None if self.star_metric is None else self.star_metric.pass_status

    @property
    def error_description(self) -> str | None:
        """One line on why it failed: its own error, else its most frequent sample error."""
        if self.error:
            return self.error.splitlines()[0]
        if self.error_summary and self.error_summary.most_frequent:
            top = self.error_summary.most_frequent[0]
            return f"{self.errors} of {self.total} samples failed; most often ({top.count}x) {top.type}: {top.message}"
        return None


def _view(row) -> TaskResultView:  # noqa: ANN001 - a row of _SELECT
    from services.aggregator import star_metric_result

    spec = ResolvedTaskSpec.model_validate_json(row.plan)
    evaluation = ResolvedEvaluation.model_validate_json(row.run_plan)
    metrics = json.loads(row.metrics) if row.metrics else {}
    final = row.status in ("success", "error", "cancelled")
    return TaskResultView(
        id=row.id, uuid=row.uuid, run_id=row.run_id, run_status=row.run_status, position=row.position, spec=spec,
        evaluation_key=evaluation.key, evaluation_display_name=evaluation.display_name,
        evaluation_description=evaluation.description, tags=evaluation.tags, status=row.status,
        phase=phase_of(row.status, row.run_status, row.done, row.errors), total=row.total, done=row.done,
        errors=row.errors, model_calls=row.model_calls, attempts=row.attempts, cache_hits=row.cache_hits,
        metrics=metrics, error=row.error,
        error_summary=ErrorSummary.model_validate_json(row.error_summary) if row.error_summary else None,
        star_metric=star_metric_result(spec, metrics) if final else None, log_path=row.log_path,
        queued_at=utc(row.created_at), started_at=utc(row.started_at), finished_at=utc(row.completed_at),
        retry_of=row.retry_of,
    )


_SELECT = (select(task_results, runs.c.status.label("run_status"), runs.c.plan.label("run_plan"), runs.c.created_at,
                  runs.c.retry_of)
           .join(runs, runs.c.id == task_results.c.run_id))


def task_result(uuid: str) -> TaskResultView | None:
    with get_engine().connect() as connection:
        row = connection.execute(_SELECT.where(task_results.c.uuid == uuid)).one_or_none()
    return None if row is None else _view(row)


def task_results_of_run(run_id: str) -> list[TaskResultView]:
    with get_engine().connect() as connection:
        rows = connection.execute(_SELECT.where(task_results.c.run_id == run_id)
                                  .order_by(task_results.c.position)).all()
    return [_view(row) for row in rows]


@dataclass(frozen=True)
class Paging:
    """Page numbers from 1; `pages` is at least 1 (an empty set has one empty page)."""

    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page


def list_task_results(page: int, per_page: int, *, phase: str | None = None, evaluation_key: str | None = None,
                      run_id: str | None = None, model_key: str | None = None,
                      tag: str | None = None) -> tuple[list[TaskResultView], Paging]:
    """Task results, newest first."""
    conditions = []
    if phase is not None:
        conditions.append(_phase_condition(phase))
    if evaluation_key is not None:
        conditions.append(runs.c.evaluation_key == evaluation_key)
    if run_id is not None:
        conditions.append(task_results.c.run_id == run_id)
    if model_key is not None:
        conditions.append(task_results.c.model_key == model_key)
    if tag is not None:
        conditions.append(runs.c.tags.like(f"%,{tag},%"))
    where = and_(*conditions) if conditions else true()
    with get_engine().connect() as connection:
        total = connection.execute(select(func.count()).select_from(
            task_results.join(runs, runs.c.id == task_results.c.run_id)).where(where)).scalar_one()
        paging = Paging(page, per_page, total)
        rows = connection.execute(_SELECT.where(where).order_by(runs.c.created_at.desc(), task_results.c.id.desc())
                                  .limit(per_page).offset(paging.first_index)).all()
    return [_view(row) for row in rows], paging


def sample_page(view: TaskResultView, page: int, per_page: int) -> tuple[list[SampleRecord], Paging]:
    """Samples at positions [(page-1)*per_page, page*per_page) of a task result: one range scan of
    the (task_result_id, position) index at any depth. Positions not recorded yet are absent."""
    paging = Paging(page, per_page, view.total)
    start = paging.first_index
    sr = sample_results.c
    with get_engine().connect() as connection:
        bodies = connection.execute(select(sr.body).where(
            sr.task_result_id == view.id, sr.position >= start, sr.position < start + per_page,
        ).order_by(sr.position)).scalars().all()
    return [SampleRecord.model_validate_json(body) for body in bodies], paging


Outcome = Literal["correct", "incorrect", "error", "cached"]
SampleOrder = Literal["position", "score", "-score", "latency", "-latency"]
OUTCOMES: tuple[str, ...] = ("correct", "incorrect", "error", "cached")
SAMPLE_ORDERS: tuple[str, ...] = ("position", "score", "-score", "latency", "-latency")


def outcome_condition(outcome: str, sr=sample_results.c):  # noqa: ANN001, ANN201 - a SQLAlchemy condition
    """What the viewer's and the API's outcome filters mean: correct is a primary score of at
    least 1 (PASS_VALUE), incorrect is scored below that or not scored, error failed; cached was
    served from the result store."""
    return {
        "correct": and_(sr.is_error.is_(False), sr.score >= PASS_VALUE),
        "incorrect": and_(sr.is_error.is_(False), or_(sr.score < PASS_VALUE, sr.score.is_(None))),
        "error": sr.is_error.is_(True),
        "cached": sr.cached.is_(True),
    }[outcome]


PASS_VALUE = 1.0


def find_samples(view: TaskResultView, page: int, per_page: int, *, outcome: str | None = None,
                 search: str | None = None, order: str = "position") -> tuple[list[SampleRecord], Paging]:
    """A page of a task result's samples filtered by outcome, by text (in the id, input or output)
    and sorted. Unfiltered in position order it is `sample_page` (a range scan at any depth);
    otherwise the typed columns answer the filter and the sort, and the page is an offset."""
    if outcome is None and not search and order == "position":
        return sample_page(view, page, per_page)
    sr = sample_results.c
    conditions = [sr.task_result_id == view.id]
    if outcome is not None:
        conditions.append(outcome_condition(outcome))
    if search:
        conditions.append(or_(sr.sample_id.contains(search, autoescape=True),
                              sr.body.contains(search, autoescape=True)))
    column = {"score": sr.score, "latency": sr.latency_ms}.get(order.lstrip("-"), sr.position)
    ordering = [column.desc().nulls_last() if order.startswith("-") else column.asc().nulls_last(), sr.position]
    with get_engine().connect() as connection:
        total = connection.execute(select(func.count()).select_from(sample_results).where(*conditions)).scalar_one()
        paging = Paging(page, per_page, total)
        bodies = connection.execute(select(sr.body).where(*conditions).order_by(*ordering)
                                    .limit(per_page).offset(paging.first_index)).scalars().all()
    return [SampleRecord.model_validate_json(body) for body in bodies], paging


def sample_at(view: TaskResultView, position: int) -> SampleRecord | None:
    sr = sample_results.c
    with get_engine().connect() as connection:
        body = connection.execute(select(sr.body).where(sr.task_result_id == view.id, sr.position == position)
                                  ).scalar_one_or_none()
    return None if body is None else SampleRecord.model_validate_json(body)




STREAM_BATCH = 1000


def iter_samples_of(view: TaskResultView) -> Iterator[SampleRecord]:
    """Every recorded sample of a task result, in position order, streamed in batches."""
    sr = sample_results.c
    with get_engine().connect() as connection:
        result = connection.execution_options(yield_per=STREAM_BATCH).execute(
            select(sr.body).where(sr.task_result_id == view.id).order_by(sr.position))
        for (body,) in result:
            yield SampleRecord.model_validate_json(body)


def run_views(run_id: str) -> list[TaskResultView]:
    """The task results of a run; RunNotFound when there is none."""
    views = task_results_of_run(run_id)
    if not views:
        raise RunNotFound(run_id)
    return views


MIN_PREFIX = 6


class AmbiguousRunId(SpecError):
    def __init__(self, prefix: str, candidates: list[str]):
        super().__init__(None, None, f"run id {prefix!r} is ambiguous: it starts {len(candidates)} runs ("
                         + ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "") + ")")


def resolve_run_id(prefix: str) -> str:
    """A full run id from any unique prefix of at least MIN_PREFIX characters (or the id itself)."""
    prefix = prefix.strip()
    with get_engine().connect() as connection:
        if connection.execute(select(runs.c.id).where(runs.c.id == prefix)).scalar_one_or_none():
            return prefix
        if len(prefix) < MIN_PREFIX or not all(c in "0123456789abcdef" for c in prefix):
            raise RunNotFound(prefix)
        found = connection.execute(select(runs.c.id).where(runs.c.id.like(f"{prefix}%"))
                                   .order_by(runs.c.created_at.desc()).limit(11)).scalars().all()
    if not found:
        raise RunNotFound(prefix)
    if len(found) > 1:
        raise AmbiguousRunId(prefix, list(found))
    return found[0]


class Usage(BaseModel):
    """What a task result consumed: tokens of answered requests (outputs served from the cache are
    not paid for again), their cost from the model's pricing (None without pricing), latency."""

    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def usage_of(task_result_id: int, spec: ResolvedTaskSpec) -> Usage:
    sr = sample_results.c
    with get_engine().connect() as connection:
        tokens_in, tokens_out = connection.execute(select(
            func.coalesce(func.sum(sr.input_tokens), 0), func.coalesce(func.sum(sr.output_tokens), 0),
        ).where(sr.task_result_id == task_result_id, sr.cached.is_not(True))).one()
        judging = connection.execute(select(func.sum(sr.judge_cost_usd)).where(
            sr.task_result_id == task_result_id)).scalar()
        # Nearest-rank percentiles found by the database: a million latencies never come into
        # this process (they would add tens of megabytes at the end of every large run).
        timed = and_(sr.task_result_id == task_result_id, sr.latency_ms.is_not(None))
        count = connection.execute(select(func.count()).select_from(sample_results).where(timed)).scalar_one()

        def rank(q: float) -> float | None:
            if not count:
                return None
            return connection.execute(select(sr.latency_ms).where(timed).order_by(sr.latency_ms)
                                      .limit(1).offset(max(1, math.ceil(q * count)) - 1)).scalar_one()

        p50, p95 = rank(0.5), rank(0.95)
    pricing = spec.model.pricing if spec.model else None
    cost = None if pricing is None else pricing.cost_usd(tokens_in, tokens_out)
    if judging is not None:
        # Cost includes what judging cost (model-graded scorers).
        cost = (cost or 0.0) + judging
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost, latency_p50_ms=p50,
                 latency_p95_ms=p95)
