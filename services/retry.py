"""Retrying: a new run that keeps every sample that completed successfully (copied over, no model
call) and runs only the failed or missing ones. The originals stay as they were; the new logs
keep the task identity and name the run they retried.

A run id retries every task specification of that run, from the database. A log (a path or an
s3:// URL) retries only that log's task specification, from the log itself: the database that
produced it is not needed, only the dataset its specification names."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import select

from services.overrides import Overrides
from services.resolver import ResolvedSpec, select_for
from services.submitter import ProgressCallback, create_run, enqueue_samples, fail_submission, feeder_name
from shared.db import get_engine, runs, sample_results, task_results
from shared.errors import RunNotFound
from shared.log import SampleRecord
from shared.log.reader import iter_samples, read_log_header
from shared.plan import ResolvedEvaluation
from shared.samples import Sample
from workers.app import dispatch_aggregation
from workers.results import PendingResult, record_results
from workers.tasks import load_task

COPY_BATCH = 500


def is_log_location(source: str) -> bool:
    return source.startswith("s3://") or "/" in source or source.endswith(".json")


def retry_run(source: str, on_progress: ProgressCallback | None = None,
              on_created: Callable[[str], None] | None = None, overrides: Overrides | None = None,
              stop: threading.Event | None = None) -> str:
    """Start the retry of a run (by id) or of one log (by path or URL); returns the new run's id.
    `overrides`: execution changes (--max-connections) for the retry."""
    if is_log_location(source):
        return _retry_log(source, on_progress, on_created, overrides, stop)
    return _retry_run(source, on_progress, on_created, overrides, stop)


def _retry_run(old_run_id: str, on_progress: ProgressCallback | None, on_created: Callable[[str], None] | None,
               overrides: Overrides | None, stop: threading.Event | None) -> str:
    with get_engine().connect() as connection:
        plan = connection.execute(select(runs.c.plan).where(runs.c.id == old_run_id)).scalar_one_or_none()
        if plan is None:
            raise RunNotFound(old_run_id)
        old_ids = dict(connection.execute(select(task_results.c.spec_key, task_results.c.id)
                                          .where(task_results.c.run_id == old_run_id)).all())
    evaluation = ResolvedEvaluation.model_validate_json(plan)
    specs = [select_for(spec) for spec in evaluation.task_specifications]
    sources = {item.spec.key: _successful_rows(old_ids[item.spec.key]) for item in specs if item.spec.key in old_ids}
    return _start(evaluation, specs, old_run_id, sources, on_progress, on_created, overrides, stop)


def _retry_log(location: str, on_progress: ProgressCallback | None,
               on_created: Callable[[str], None] | None, overrides: Overrides | None,
               stop: threading.Event | None) -> str:
    header = read_log_header(location)
    spec = header.task_specification
    evaluation = ResolvedEvaluation(
        key=header.evaluation.key, display_name=header.evaluation.display_name,
        description=header.evaluation.description, tags=header.evaluation.tags,
        cache_policy=header.evaluation.cache_policy, log_prompts=header.evaluation.log_prompts,
        **({"fail_on_error": header.evaluation.fail_on_error} if header.evaluation.fail_on_error is not None else {}),
        task_specifications=[spec],
    )
    item = select_for(spec)
    task = load_task(spec.task, spec.dataset)

    def group(record: SampleRecord) -> str | None:
        if not task.scores_population:
            return None
        return task.group_key(Sample(id=record.id, input=record.input, target=record.target, metadata=record.metadata))

    successful = ([(sample, group(sample))] for sample in iter_samples(location) if sample.error is None)
    return _start(evaluation, [item], header.run_id, {spec.key: _batches(successful)}, on_progress, on_created,
                  overrides, stop)


def _start(evaluation: ResolvedEvaluation, specs: list[ResolvedSpec], retry_of: str,
           sources: dict[str, Iterable[list[tuple[SampleRecord, str | None]]]],
           on_progress: ProgressCallback | None, on_created: Callable[[str], None] | None,
           overrides: Overrides | None = None, stop: threading.Event | None = None) -> str:
    if overrides is not None:
        specs = overrides.apply_resolved(specs)
        evaluation = evaluation.model_copy(update={"task_specifications": [s.spec for s in specs]})
    run_id, new_ids = create_run(evaluation, specs, retry_of=retry_of, feeder=feeder_name())
    if on_created is not None:
        on_created(run_id)
    for item, new_id in zip(specs, new_ids, strict=True):
        for batch in sources.get(item.spec.key, ()):
            pending = [PendingResult(new_id, record.model_copy(update={"model_calls": 0, "attempts": 0,
                                                                       "cached": True}), group)
                       for record, group in batch]
            for claimed in record_results(get_engine(), pending):
                dispatch_aggregation(claimed, item.spec)
    try:
        enqueue_samples(run_id, specs, new_ids, evaluation.cache_policy, on_progress, skip_recorded=True, stop=stop)
    except Exception as exc:  # noqa: BLE001 - kombu's broker errors
        fail_submission(run_id, exc)
    return run_id


def _batches(items: Iterator[list[tuple[SampleRecord, str | None]]]) -> Iterator[list[tuple[SampleRecord, str | None]]]:
    batch: list[tuple[SampleRecord, str | None]] = []
    for single in items:
        batch += single
        if len(batch) >= COPY_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _successful_rows(task_result_id: int) -> Iterator[list[tuple[SampleRecord, str | None]]]:
    sr = sample_results.c
    with get_engine().connect() as connection:
        result = connection.execution_options(yield_per=COPY_BATCH).execute(
            select(sr.body, sr.group_key).where(sr.task_result_id == task_result_id, sr.is_error.is_(False))
            .order_by(sr.position))
        for partition in result.partitions():
            yield [(SampleRecord.model_validate_json(body), group) for body, group in partition]
