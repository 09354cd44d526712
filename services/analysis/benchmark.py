"""Benchmarks across models in TrainLoop's format (`benchmark_results_<timestamp>.json`): the task
specifications of a run that share a task and a dataset, one per model, compared by score, cost
and latency.

- `cost_analysis`: `total_cost` from the model's `pricing` and the tokens of answered requests
  (outputs served from the cache cost nothing; no pricing: null, never zero), `cost_per_token`,
  `cost_per_score` (cost per percentage point of `overall_score`, as TrainLoop's example computes).
- `performance`: response times in seconds (average, p50, p95) and tokens.
- `comparison`: `best_overall` (highest score; a tie goes to the cheaper), `best_value` (highest
  score per dollar among the priced models within VALUE_TOLERANCE of the best score),
  `cost_savings` (1 - best value's cost / best overall's)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select

from services.analysis.trainloop import fold_suite, iso, results_file_name
from services.results import TaskResultView, run_views
from shared.db import get_engine, sample_results
from shared.errors import EvalfleetError

# A model whose score is within this of the best score counts as "as good" when looking for value.
VALUE_TOLERANCE = 0.05


@dataclass(frozen=True)
class ModelResult:
    key: str
    view: TaskResultView
    metrics: dict[str, dict[str, Any]]
    overall_score: float | None
    total_cost: float | None
    total_tokens: int
    input_tokens: int
    output_tokens: int
    latencies_s: list[float]

    def document(self) -> dict[str, Any]:
        cost = self.total_cost
        return {
            "metrics": self.metrics, "overall_score": self.overall_score,
            "cost_analysis": {
                "total_cost": cost,
                "cost_per_token": cost / self.total_tokens if cost is not None and self.total_tokens else None,
                "cost_per_score": (cost / (100 * self.overall_score)
                                   if cost is not None and self.overall_score else None),
            },
            "performance": {
                "avg_response_time": statistics.fmean(self.latencies_s) if self.latencies_s else None,
                "p50_response_time": percentile(self.latencies_s, 50),
                "p95_response_time": percentile(self.latencies_s, 95),
                "total_tokens": self.total_tokens, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            },
            "samples": self.view.total, "errors": self.view.errors, "evaluation_run_uuid": self.view.uuid,
            "task_specification": self.view.spec.key,
        }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


def groups(views: list[TaskResultView]) -> dict[str, list[TaskResultView]]:
    """Task results that evaluate the same task on the same dataset, by a label of the two."""
    found: dict[str, list[TaskResultView]] = {}
    for view in views:
        if view.spec.model is None:
            continue
        identity = json.dumps([view.spec.task.model_dump(mode="json"), view.spec.dataset.key,
                               view.spec.num_samples, view.spec.subsampling], sort_keys=True)
        found.setdefault(identity, []).append(view)
    return {f"{group[0].spec.task.key}@{group[0].spec.dataset.key}": group for group in found.values()}


def _usage(view: TaskResultView) -> tuple[int, int, list[float]]:
    """Tokens of answered requests (cached outputs excluded) and the sorted response times."""
    sr = sample_results.c
    with get_engine().connect() as connection:
        rows = connection.execute(select(sr.input_tokens, sr.output_tokens, sr.latency_ms).where(
            and_(sr.task_result_id == view.id, sr.is_error.is_(False)))).all()
    input_tokens = sum(r.input_tokens or 0 for r in rows if r.input_tokens is not None)
    output_tokens = sum(r.output_tokens or 0 for r in rows if r.output_tokens is not None)
    latencies = sorted(r.latency_ms / 1000 for r in rows if r.latency_ms is not None)
    return input_tokens, output_tokens, latencies


def _paid_tokens(view: TaskResultView) -> tuple[int, int]:
    sr = sample_results.c
    with get_engine().connect() as connection:
        rows = connection.execute(select(sr.input_tokens, sr.output_tokens).where(
            sr.task_result_id == view.id, sr.is_error.is_(False), sr.cached.is_not(True))).all()
    return sum(r.input_tokens or 0 for r in rows), sum(r.output_tokens or 0 for r in rows)


def model_result(view: TaskResultView) -> ModelResult:
    from contextlib import ExitStack

    with ExitStack() as stack:
        suite = fold_suite(view, "none", stack)
    input_tokens, output_tokens, latencies = _usage(view)
    pricing = view.spec.model.pricing if view.spec.model else None
    cost = None
    if pricing is not None:
        paid_in, paid_out = _paid_tokens(view)
        cost = pricing.cost_usd(paid_in, paid_out)
    return ModelResult(
        key=view.spec.model.key if view.spec.model else view.spec.key, view=view,
        metrics={m.label: {"passed": m.passed, "total": m.total, "score": m.score} for m in suite.metrics},
        overall_score=suite.overall_score, total_cost=cost, total_tokens=input_tokens + output_tokens,
        input_tokens=input_tokens, output_tokens=output_tokens, latencies_s=latencies)


def comparison(models: list[ModelResult], tolerance: float = VALUE_TOLERANCE) -> dict[str, Any]:
    scored = [m for m in models if m.overall_score is not None]
    if not scored:
        return {"best_overall": None, "best_value": None, "cost_savings": None}
    best = max(scored, key=lambda m: (m.overall_score, -(m.total_cost if m.total_cost is not None else math.inf)))
    candidates = [m for m in scored if m.total_cost is not None and m.overall_score >= best.overall_score - tolerance]
    value = None
    if candidates:
        value = max(candidates, key=lambda m: (m.overall_score / m.total_cost if m.total_cost else math.inf,
                                               m.overall_score))
    savings = None
    if value is not None and best.total_cost:
        savings = 1 - value.total_cost / best.total_cost
    return {"best_overall": best.key, "best_value": value.key if value else None, "cost_savings": savings,
            "value_tolerance": tolerance}


def benchmark_documents(run_id: str) -> list[dict[str, Any]]:
    """One benchmark document per group of task results comparing models on the same work."""
    views = run_views(run_id)
    found = {label: group for label, group in groups(views).items() if len({v.spec.model.key for v in group}) > 1}
    if not found:
        raise EvalfleetError(f"run {run_id} is not a benchmark: no task and dataset evaluated with more than one model "
                             "(give a task specification several `model_keys`)")
    documents = []
    for label, group in found.items():
        models = [model_result(view) for view in group]
        documents.append({
            "timestamp": iso(min(v.queued_at for v in group)), "type": "benchmark",
            "providers": [m.key for m in models], "total_samples": max(v.total for v in group),
            "task": label, "run_id": run_id,
            "results": {m.key: m.document() for m in models},
            "comparison": comparison(models),
        })
    return documents


def write_benchmarks(run_id: str, output_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """`<output_dir>/benchmark_results_<timestamp>.json` (one per group; a suffix when several)."""
    documents = benchmark_documents(run_id)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    views = run_views(run_id)
    base = results_file_name(min(v.queued_at for v in views), "benchmark_results")
    for number, document in enumerate(documents):
        name = base if len(documents) == 1 else base.replace(".json", f"_{number + 1}.json")
        target = directory / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(target)
        written.append((target, document))
    return written
