"""Comparing task results over the same dataset side by side: a per-sample outcome matrix (paged,
filtered to where they disagree, or where one is right and another wrong), and per metric the
difference from the first task result with its standard error, beside cost and latency.

Samples are matched by id and epoch. A sample's outcome is its primary score (the `score`
column: the star metric's scorer, else the task's first), or `error`."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import and_, case, func, or_, select

from services.results import PASS_VALUE, Paging, TaskResultView, usage_of
from shared.db import get_engine, sample_results

CompareFilter = Literal["all", "differ", "first_right", "first_wrong"]
COMPARE_FILTERS: tuple[str, ...] = ("all", "differ", "first_right", "first_wrong")
MAX_COMPARED = 6


class Cell(BaseModel):
    score: float | None
    error: str | None
    cached: bool | None
    latency_ms: float | None


class Row(BaseModel):
    sample_id: str
    epoch: int
    position: int
    cells: list[Cell | None]


class MetricDelta(BaseModel):
    metric: str
    values: list[float | None]
    stderrs: list[float | None]
    deltas: list[float | None]
    delta_stderrs: list[float | None]


class Side(BaseModel):
    uuid: str
    display_name: str
    model: str | None
    cost_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    done: int
    errors: int


class Comparison(BaseModel):
    task_results: list[Side]
    metrics: list[MetricDelta]
    rows: list[Row]
    page: int
    pages: int
    total: int


def _difference_stderr(a: float | None, b: float | None) -> float | None:
    """Of the difference of two independent means: sqrt(se_a^2 + se_b^2)."""
    return None if a is None or b is None else math.sqrt(a * a + b * b)


def metric_deltas(views: list[TaskResultView]) -> list[MetricDelta]:
    first = views[0].metrics
    out = []
    for label, metrics in first.items():
        for name in metrics:
            if name == "stderr":
                continue
            values = [(v.metrics.get(label) or {}).get(name) for v in views]
            stderrs = [(v.metrics.get(label) or {}).get("stderr") for v in views]
            deltas = [None if value is None or values[0] is None else value - values[0] for value in values]
            out.append(MetricDelta(metric=f"{label}/{name}", values=values, stderrs=stderrs, deltas=deltas,
                                   delta_stderrs=[_difference_stderr(stderrs[0], se) for se in stderrs]))
    return out


def compare(views: list[TaskResultView], page: int, per_page: int, which: str = "all") -> Comparison:
    sides = []
    for view in views:
        usage = usage_of(view.id, view.spec)
        sides.append(Side(uuid=view.uuid, display_name=view.spec.display_name,
                          model=view.spec.model.key if view.spec.model else None, cost_usd=usage.cost_usd,
                          latency_p50_ms=usage.latency_p50_ms, latency_p95_ms=usage.latency_p95_ms,
                          done=view.done, errors=view.errors))
    tables = [sample_results.alias(f"s{i}") for i in range(len(views))]
    first = tables[0]
    joined = first
    for table, view in zip(tables[1:], views[1:], strict=True):
        joined = joined.outerjoin(table, and_(table.c.task_result_id == view.id, table.c.sample_id == first.c.sample_id,
                                              table.c.epoch == first.c.epoch))

    def outcome(table):  # noqa: ANN001, ANN202 - comparable: the score; -1 unscored or absent, -2 an error
        return case((table.c.is_error.is_(True), -2.0), else_=func.coalesce(table.c.score, -1.0))

    conditions = [first.c.task_result_id == views[0].id]
    if which == "differ":
        conditions.append(or_(*(outcome(t) != outcome(first) for t in tables[1:])))
    elif which in ("first_right", "first_wrong"):
        right = and_(first.c.is_error.is_(False), first.c.score >= PASS_VALUE)
        wrong = [or_(t.c.is_error.is_(True), t.c.score < PASS_VALUE, t.c.score.is_(None)) for t in tables[1:]]
        rights = [and_(t.c.is_error.is_(False), t.c.score >= PASS_VALUE) for t in tables[1:]]
        conditions.append(and_(right, or_(*wrong)) if which == "first_right" else and_(~right, or_(*rights)))
    columns = [first.c.sample_id, first.c.epoch, first.c.position]
    for table in tables:
        columns += [table.c.score, table.c.is_error, table.c.error_type, table.c.cached, table.c.latency_ms]
    with get_engine().connect() as connection:
        total = connection.execute(select(func.count()).select_from(joined).where(*conditions)).scalar_one()
        paging = Paging(page, per_page, total)
        rows = connection.execute(select(*columns).select_from(joined).where(*conditions)
                                  .order_by(first.c.position).limit(per_page).offset(paging.first_index)).all()
    out = []
    for row in rows:
        cells = []
        for index in range(len(views)):
            score, is_error, error_type, cached, latency = row[3 + 5 * index: 8 + 5 * index]
            cells.append(None if is_error is None else Cell(score=score, error=error_type if is_error else None,
                                                           cached=cached, latency_ms=latency))
        out.append(Row(sample_id=row[0], epoch=row[1], position=row[2], cells=cells))
    return Comparison(task_results=sides, metrics=metric_deltas(views), rows=out, page=paging.page,
                      pages=paging.pages, total=paging.total)
