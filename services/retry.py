"""Retrying a run: a new run of the same evaluation that keeps every sample that completed
successfully (copied over, no model call) and runs only the failed or missing ones. The original
logs stay as they were; the new ones keep the task identity and name the run they retried."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sqlalchemy import select

from services.resolver import select_for
from services.submitter import ProgressCallback, create_run, enqueue_samples, fail_submission
from shared.db import get_engine, runs, sample_results, task_results
from shared.errors import EvalfleetError, RunNotFound
from shared.log import SampleRecord, read_task_result_log
from shared.plan import ResolvedEvaluation
from workers.app import dispatch_aggregation
from workers.results import PendingResult, record_results

COPY_BATCH = 500


def source_run_id(source: str) -> str:
    """A run id, or the run id inside a task result log given by path or URL."""
    if "/" not in source and not source.endswith(".json"):
        return source
    try:
        return read_task_result_log(source).run_id
    except (OSError, ValueError) as exc:
        raise EvalfleetError(f"cannot read task result log {source}: {exc}") from None


def retry_run(source: str, on_progress: ProgressCallback | None = None,
              on_created: Callable[[str], None] | None = None) -> str:
    """Start the retry of a run (by id or by one of its logs); returns the new run's id."""
    old_run_id = source_run_id(source)
    with get_engine().connect() as connection:
        plan = connection.execute(select(runs.c.plan).where(runs.c.id == old_run_id)).scalar_one_or_none()
        if plan is None:
            raise RunNotFound(old_run_id)
        old_ids = dict(connection.execute(select(task_results.c.spec_key, task_results.c.id)
                                          .where(task_results.c.run_id == old_run_id)).all())
    evaluation = ResolvedEvaluation.model_validate_json(plan)
    specs = [select_for(spec) for spec in evaluation.task_specifications]
    run_id, new_ids = create_run(evaluation, specs, retry_of=old_run_id)
    if on_created is not None:
        on_created(run_id)
    reused: list[set[str]] = []
    for item, new_id in zip(specs, new_ids, strict=True):
        kept: set[str] = set()
        old_id = old_ids.get(item.spec.key)
        if old_id is not None:
            for batch in _successful_samples(old_id):
                pending = [PendingResult(new_id, record.model_copy(update={"model_calls": 0, "cached": True}), group)
                           for record, group in batch]
                kept.update(record.id for record, _ in batch)
                for claimed in record_results(get_engine(), pending):
                    dispatch_aggregation(claimed, item.spec)
        reused.append(kept)
    try:
        enqueue_samples(specs, new_ids, evaluation.cache_policy, on_progress, skip=lambda index, sample_id: sample_id in reused[index])
    except Exception as exc:  # noqa: BLE001 - kombu's broker errors
        fail_submission(run_id, exc)
    return run_id


def _successful_samples(task_result_id: int) -> Iterator[list[tuple[SampleRecord, str | None]]]:
    sr = sample_results.c
    with get_engine().connect() as connection:
        result = connection.execution_options(yield_per=COPY_BATCH).execute(
            select(sr.body, sr.group_key).where(sr.task_result_id == task_result_id, sr.is_error.is_(False))
            .order_by(sr.position))
        for partition in result.partitions():
            yield [(SampleRecord.model_validate_json(body), group) for body, group in partition]
