"""The aggregator: once the last sample of a task specification is recorded, stream its sample
results out of the database (ordered, in batches) into the task result log, folding scores into
metrics on the way, then settle the task result and, when it was the last, the run."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select, update

from shared.db import CANCELLING, FINAL_STATUSES, get_engine, now, runs, sample_results, task_results
from shared.log import (
    LOG_VERSION,
    EvaluationHeader,
    LogError,
    LogStats,
    ModelUsage,
    SampleRecord,
    ScorerResult,
    finite_or_none,
    log_relpath,
    write_task_result_log,
)
from shared.metrics import MeanAccumulator
from shared.plan import ResolvedEvaluation, ResolvedTaskSpec
from shared.settings import get_settings
from workers.app import AGGREGATE_TASK, app
from workers.tasks import load_task

logger = logging.getLogger(__name__)
STREAM_BATCH = 500


@app.task(name=AGGREGATE_TASK, ignore_result=True)
def aggregate_task(task_result_id: int) -> None:
    assemble_task_result_log(task_result_id)


def errors_exceed_budget(errors: int, total: int, fail_on_error: bool | float) -> bool:
    """Inspect's rule: true fails on any error, false never; below 1 a share, from 1 a count."""
    if fail_on_error is True:
        return errors > 0
    if fail_on_error is False:
        return False
    if fail_on_error < 1:
        return total > 0 and errors / total > fail_on_error
    return errors >= fail_on_error


class _Folder:
    """Metrics, token usage and counts, folded in one sample at a time."""

    def __init__(self, metric_names: dict[str, tuple[str, ...]], spec: ResolvedTaskSpec):
        self.metric_names = metric_names
        self.accumulators = {label: MeanAccumulator() for label in metric_names}
        self.errors = 0
        self.scored = 0
        self.model_calls = 0
        self.cache_hits = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.first_started = None
        self.spec = spec

    def add(self, record: SampleRecord) -> None:
        self.model_calls += record.model_calls
        self.cache_hits += record.cached
        if record.usage is not None:
            self.input_tokens += record.usage.input_tokens
            self.output_tokens += record.usage.output_tokens
        if self.first_started is None or record.started_at < self.first_started:
            self.first_started = record.started_at
        if record.error is not None:
            self.errors += 1
            return
        self.scored += 1
        for label, score in record.scores.items():
            if label in self.accumulators and score.value is not None:
                self.accumulators[label].add(score.value)

    def results(self) -> dict[str, ScorerResult]:
        return {
            label: ScorerResult(metrics=acc.metrics(self.metric_names[label]), scored=acc.count, errors=self.errors)
            for label, acc in self.accumulators.items()
        }

    def model_usage(self) -> dict[str, ModelUsage]:
        model = self.spec.model
        if model is None:
            return {}
        cost = None
        if model.pricing is not None:
            cost = (self.input_tokens * model.pricing.input_per_million
                    + self.output_tokens * model.pricing.output_per_million) / 1_000_000
        return {model.key: ModelUsage(calls=self.model_calls, input_tokens=self.input_tokens,
                                      output_tokens=self.output_tokens, cost_usd=cost)}


def assemble_task_result_log(task_result_id: int, status: str | None = None) -> str | None:
    """Write the log of a claimed task result and settle it. Returns the log's URI."""
    engine = get_engine()
    with engine.connect() as connection:
        row = connection.execute(
            select(task_results, runs.c.plan.label("run_plan"), runs.c.retry_of)
            .join(runs, runs.c.id == task_results.c.run_id)
            .where(task_results.c.id == task_result_id)
        ).one()
    evaluation = ResolvedEvaluation.model_validate_json(row.run_plan)
    spec = ResolvedTaskSpec.model_validate_json(row.plan)
    try:
        task = load_task(spec.task, spec.dataset)
        folder = _Folder(task.metrics(), spec)
        duplicated = _duplicated_groups(task_result_id) if task.scores_population else set()

        def samples() -> Iterator[SampleRecord]:
            for body, group_key in _stream(select(sample_results.c.body, sample_results.c.group_key)
                                           .where(sample_results.c.task_result_id == task_result_id)
                                           .order_by(sample_results.c.position)):
                record = SampleRecord.model_validate_json(body)
                if task.scores_population and record.error is None:
                    record.scores = task.score_in_population(record.scores, group_key in duplicated)
                folder.add(record)
                yield record

        def sample_ids() -> Iterator[str]:
            for (sample_id,) in _stream(select(sample_results.c.sample_id)
                                        .where(sample_results.c.task_result_id == task_result_id)
                                        .order_by(sample_results.c.position)):
                yield sample_id

        final_status = status or "success"
        completed = {}

        def footer() -> dict[str, Any]:
            nonlocal final_status
            if status is None and errors_exceed_budget(folder.errors, row.total, evaluation.fail_on_error):
                final_status = "error"
            completed_at = now()
            started_at = row.started_at if row.started_at.tzinfo else row.started_at.replace(
                tzinfo=completed_at.tzinfo)
            completed["results"] = folder.results()
            return {
                "results": completed["results"],
                "stats": LogStats(started_at=started_at, completed_at=completed_at,
                                  duration_s=(completed_at - started_at).total_seconds(),
                                  model_calls=folder.model_calls, cache_hits=folder.cache_hits,
                                  model_usage=folder.model_usage()),
                "status": final_status,
                "samples_errored": folder.errors,
                "error": _budget_error(folder.errors, row.total) if final_status == "error" else None,
            }

        header = {
            "version": LOG_VERSION, "run_id": row.run_id, "retry_of": row.retry_of,
            "evaluation": EvaluationHeader(key=evaluation.key, display_name=evaluation.display_name,
                                           description=evaluation.description, tags=evaluation.tags,
                                           cache_policy=evaluation.cache_policy),
            "task_specification": spec, "sample_count": row.total, "subsampling": spec.subsampling,
        }
        uri = write_task_result_log(get_settings().log_dir, log_relpath(evaluation.key, row.run_id, spec.key),
                                    header, sample_ids(), samples(), footer)
        metrics = finite_or_none({label: r.metrics for label, r in completed["results"].items()})
        _settle(task_result_id, row.run_id, final_status, uri, metrics, None)
        return uri
    except Exception as exc:  # noqa: BLE001 - the run must end with the reason, not hang
        logger.exception("aggregation of task result %s failed", task_result_id)
        _settle(task_result_id, row.run_id, "error", None, None,
                f"aggregation failed: {exc}\n{traceback.format_exc(limit=5)}")
        return None


def _budget_error(errors: int, total: int) -> LogError:
    return LogError(message=f"{errors} of {total} samples failed, more than the evaluation's fail_on_error allows")


def _stream(statement) -> Iterator[Any]:  # noqa: ANN001
    with get_engine().connect() as connection:
        result = connection.execution_options(yield_per=STREAM_BATCH).execute(statement)
        yield from result


def _duplicated_groups(task_result_id: int) -> set[str]:
    sr = sample_results.c
    with get_engine().connect() as connection:
        return set(connection.execute(
            select(sr.group_key).where(sr.task_result_id == task_result_id, sr.group_key.is_not(None))
            .group_by(sr.group_key).having(func.count() > 1)
        ).scalars())


def _settle(task_result_id: int, run_id: str, status: str, log_path: str | None,
            metrics: dict | None, error: str | None) -> None:
    with get_engine().begin() as connection:
        connection.execute(update(task_results).where(task_results.c.id == task_result_id).values(
            status=status, log_path=log_path, completed_at=now(), error=error,
            metrics=None if metrics is None else json.dumps(metrics),
        ))
    settle_run(run_id)


def settle_run(run_id: str) -> None:
    """Mark the run finished once every task result is: error if any failed, cancelled if any was."""
    with get_engine().begin() as connection:
        statuses = connection.execute(
            select(task_results.c.status).where(task_results.c.run_id == run_id)).scalars().all()
        if any(s not in FINAL_STATUSES for s in statuses):
            return
        status = "cancelled" if "cancelled" in statuses else "error" if "error" in statuses else "success"
        connection.execute(update(runs).where(runs.c.id == run_id, runs.c.status.in_(("running", CANCELLING)))
                           .values(status=status, finished_at=now()))
