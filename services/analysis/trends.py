"""Trends of an evaluation across its runs: TrainLoop's rolling `evaluation_summary.json`.

Only task results that finished successfully count, and only those of the same task identity as
the latest one (a changed prompt, model or dataset starts a new series). A retry counts as its
original: it takes the original run's place (its date) with its own, completed results.

A task result's score is its star metric's value when it has one, else the mean of its scorers'
main metrics (accuracy or mean); a run's score is the mean over its task results. Per day the
latest run counts. `score_change` is the latest score minus the first in the window; the trend
is `improving` above +TREND_THRESHOLD, `declining` below -TREND_THRESHOLD, `stable` between."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.analysis.trainloop import iso
from services.results import TaskResultView, task_results_of_run
from shared.cache_identity import canonical_hash, model_identity
from shared.db import get_engine, runs, utc
from shared.errors import EvalfleetError

TREND_THRESHOLD = 0.01
MAIN_METRICS = ("accuracy", "mean")


def classify(change: float | None, threshold: float = TREND_THRESHOLD) -> str:
    """improving, declining or stable: a change beyond ±threshold moves the trend."""
    if change is not None and change > threshold:
        return "improving"
    if change is not None and change < -threshold:
        return "declining"
    return "stable"


def task_identity(view: TaskResultView) -> str:
    spec = view.spec
    return canonical_hash({"task": spec.task.model_dump(mode="json"), "dataset": spec.dataset.key,
                           "model": model_identity(spec.model) if spec.model else None,
                           "num_samples": spec.num_samples, "subsampling": spec.subsampling})


def task_score(view: TaskResultView) -> float | None:
    if view.star_metric is not None:
        return view.star_metric.value
    values = [next((metrics[name] for name in MAIN_METRICS if name in metrics), None) for metrics in view.metrics.values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@dataclass
class Point:
    moment: datetime
    run_id: str
    scores: dict[str, float | None] = field(default_factory=dict)  # by task specification key
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # spec key -> "<scorer>/<metric>"

    @property
    def score(self) -> float | None:
        values = [v for v in self.scores.values() if v is not None]
        return sum(values) / len(values) if values else None


def _points(evaluation_key: str) -> tuple[list[Point], list[TaskResultView]]:
    """One point per original run (retries folded into it), oldest first; and the latest run's
    task results (which define the identity a series keeps)."""
    with get_engine().connect() as connection:
        rows = connection.execute(select(runs.c.id, runs.c.created_at, runs.c.retry_of)
                                  .where(runs.c.evaluation_key == evaluation_key)
                                  .order_by(runs.c.created_at)).all()
    if not rows:
        raise EvalfleetError(f"no run of evaluation {evaluation_key!r}")
    parent = {row.id: row.retry_of for row in rows}
    created = {row.id: utc(row.created_at) for row in rows}

    def original(run_id: str) -> str:
        seen = set()
        while parent.get(run_id) in parent and run_id not in seen:
            seen.add(run_id)
            run_id = parent[run_id]
        return run_id

    views_by_run = {row.id: task_results_of_run(row.id) for row in rows}
    latest_views = next((views for _, views in reversed(list(views_by_run.items()))
                         if any(v.status == "success" for v in views)), [])
    identities = {v.spec.key: task_identity(v) for v in latest_views}
    points: dict[str, Point] = {}
    for row in rows:  # oldest first: a retry overwrites what its original recorded
        root = original(row.id)
        point = points.setdefault(root, Point(created[root], root))
        for view in views_by_run[row.id]:
            if view.status != "success" or identities.get(view.spec.key) != task_identity(view):
                continue
            point.scores[view.spec.key] = task_score(view)
            point.metrics[view.spec.key] = {f"{scorer}/{name}": value for scorer, values in view.metrics.items()
                                            for name, value in values.items()}
    found = [p for p in sorted(points.values(), key=lambda p: p.moment) if p.scores]
    return found, latest_views


def summary(evaluation_key: str, days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    """TrainLoop's rolling summary of an evaluation over the last `days` days, with the
    per-specification and per-metric series."""
    points, latest_views = _points(evaluation_key)
    if not points:
        raise EvalfleetError(f"evaluation {evaluation_key!r} has no successfully finished run yet")
    now = now or datetime.now(UTC)
    start = (now - timedelta(days=days - 1)).date()
    daily: dict[str, Point] = {}
    for point in points:
        if point.moment.date() >= start:
            daily[point.moment.date().isoformat()] = point  # the day's latest run
    window = list(daily.items())
    latest = points[-1]
    change = latest.score - window[0][1].score if window and latest.score is not None and \
        window[0][1].score is not None else None
    trend = classify(change)
    stars = sorted({v.star_metric.metric for v in latest_views if v.star_metric is not None})
    metric_names = sorted({name for values in latest.metrics.values() for name in values})
    return {
        "latest_evaluation": iso(latest.moment),
        "total_suites": len(latest.scores),
        "overall_score": latest.score,
        "trending": {
            "score_change": change, "trend": trend, "threshold": TREND_THRESHOLD,
            f"last_{days}_days" if days != 7 else "last_7_days": [
                {"date": date, "score": point.score, "run_id": point.run_id} for date, point in window],
        },
        "metrics_summary": {"total_metrics": len(metric_names), "critical_metrics": stars,
                            "performance_metrics": [m for m in metric_names if m not in stars]},
        "evaluation": evaluation_key,
        "runs_counted": len(points),
        "task_specifications": {
            key: {
                "scores": [{"date": date, "score": point.scores.get(key), "run_id": point.run_id}
                           for date, point in window if key in point.scores],
                "metrics": {name: [{"date": date, "value": point.metrics.get(key, {}).get(name)}
                                   for date, point in window if key in point.metrics]
                            for name in sorted(latest.metrics.get(key, {}))},
            }
            for key in latest.scores
        },
    }


def run_series(evaluation_key: str) -> list[dict[str, Any]]:
    """Every run of the evaluation that finished (retries folded into their original), oldest
    first: its overall score, each task specification's score and metrics. What the viewer charts."""
    points, _ = _points(evaluation_key)
    return [{"run_id": p.run_id, "time": iso(p.moment), "score": p.score, "scores": p.scores, "metrics": p.metrics}
            for p in points]


def evaluation_keys() -> list[str]:
    with get_engine().connect() as connection:
        return list(connection.execute(select(runs.c.evaluation_key).distinct().order_by(runs.c.evaluation_key))
                    .scalars())


def write_summary(document: dict[str, Any], path) -> None:  # noqa: ANN001
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
