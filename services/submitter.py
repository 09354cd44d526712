"""The submitter: resolve and validate the whole run file first (nothing is written before every
check passed), register the run, then stream each dataset once more and enqueue one Celery task
per selected sample."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select

from services.overrides import Overrides
from services.registry import database_lookup, entity_version, register_entity, registered_keys
from services.resolver import ResolvedRunFile, ResolvedSpec, resolve_entities, resolve_run_file
from services.upload import inject_uploaded_log
from shared.db import get_engine, now, runs, sample_results, task_results
from shared.errors import EvalfleetError
from shared.plan import ResolvedEvaluation
from shared.samples import iter_selected
from workers.app import SampleSender, broker_address, dispatch_aggregation, queue_for
from workers.results import PendingResult, record_results
from workers.sample import cached_samples, lookup_execution

ProgressCallback = Callable[[int], None]
LOOKUP_BATCH = 200  # samples looked up in the result store per round trip
PROBE = 200


def validate_run_file(path: str | Path, *, data_roots: list[Path] | None = None,
                      display_name: str | None = None, overrides: Overrides | None = None) -> ResolvedRunFile:
    """Resolve a run file and select its samples; raises SpecError on any problem (see
    `resolve_run_file` for `data_roots`, the places a run file from elsewhere may read)."""
    return resolve_run_file(path, database_lookup, data_roots=data_roots, display_name=display_name,
                            known=registered_keys, overrides=overrides)


def add_entities(path: str | Path) -> list[tuple[str, str, str, int]]:
    """`evalfleet add`: validate everything (a file of entities alone, or a whole run file), then
    register the file's entities in one transaction. Returns (kind, key, change, version) each."""
    checked = resolve_entities(path, database_lookup, known=registered_keys)
    if isinstance(checked, ResolvedRunFile):
        found = checked.entities_to_register()
    else:
        found = ResolvedRunFile(path=Path(path).resolve(), run_file=checked, evaluation=None, specs=[]
                                ).entities_to_register()
    changes = []
    with get_engine().begin() as connection:
        for kind, entity in found:
            change, version = register_entity(connection, kind, entity)  # type: ignore[arg-type]
            changes.append((kind, entity.key, change, version))  # type: ignore[attr-defined]
    return changes


RegistrationNotice = Callable[[str, str, str, int], None]


def create_run(evaluation: ResolvedEvaluation, specs: Sequence[ResolvedSpec],
               entities: Sequence[tuple[str, object]] = (), retry_of: str | None = None,
               on_registered: RegistrationNotice | None = None) -> tuple[str, list[int]]:
    """Register entities, the run and its task results in one transaction. The run records the
    version of every registered entity it uses; `on_registered(kind, key, change, version)` hears
    of each entity the file created or changed."""
    run_id = uuid.uuid4().hex
    started = now()
    with get_engine().begin() as connection:
        versions: dict[str, int] = {}
        for kind, entity in entities:
            change, version = register_entity(connection, kind, entity)  # type: ignore[arg-type]
            versions[f"{kind}:{entity.key}"] = version  # type: ignore[attr-defined]
            if change != "unchanged" and on_registered is not None:
                on_registered(kind, entity.key, change, version)  # type: ignore[attr-defined]
        for spec in evaluation.task_specifications:
            for kind, key in (("task", spec.task.key), ("model", spec.model.key if spec.model else None),
                              ("dataset", spec.dataset.key)):
                if key is not None and f"{kind}:{key}" not in versions:
                    version = entity_version(connection, kind, key)  # type: ignore[arg-type]
                    if version is not None:
                        versions[f"{kind}:{key}"] = version
        evaluation = evaluation.model_copy(update={"entity_versions": versions})
        connection.execute(runs.insert().values(
            id=run_id, evaluation_key=evaluation.key, display_name=evaluation.display_name,
            status="running", plan=evaluation.model_dump_json(), retry_of=retry_of, created_at=started,
            tags="," + ",".join(evaluation.tags) + "," if evaluation.tags else None,
        ))
        ids = []
        for position, item in enumerate(specs):
            ids.append(connection.execute(task_results.insert().values(
                run_id=run_id, position=position, spec_key=item.spec.key, plan=item.spec.model_dump_json(),
                total=item.selection.total, done=0, errors=0, model_calls=0, cache_hits=0, status="running",
                started_at=started, uuid=str(uuid.uuid4()), model_key=item.spec.model.key if item.spec.model else None,
            )).inserted_primary_key[0])
    return run_id, ids


def enqueue_samples(specs: Sequence[ResolvedSpec], task_result_ids: list[int], cache_policy: str,
                    on_progress: ProgressCallback | None = None, skip_recorded: bool = False) -> int:
    """One message per selected sample, published over one broker connection. `skip_recorded`
    leaves out samples that already have a result in their task result (a retry copies the
    successful ones first); it is checked a chunk at a time, so memory stays flat.

    With `reuse`, a sample whose output and scores are both in the result store is recorded here
    and never enqueued: a cache hit then costs one store lookup, not a round trip through the
    broker and a worker. Other policies publish at once, without loading the model's client here.
    Returns how many samples were enqueued or recorded."""
    handled = 0
    with SampleSender() as sender:
        for item, task_result_id in zip(specs, task_result_ids, strict=True):
            if item.uploaded_log is not None:
                continue
            queue = queue_for(item.spec)
            execution = lookup_execution(task_result_id) if cache_policy == "reuse" else None
            looked_up = found = 0
            selected = iter_selected(item.spec.dataset, item.selection, needs_input=item.needs_input,
                                     needs_target=item.needs_target)
            for chunk in _chunks(selected, LOOKUP_BATCH):
                if skip_recorded:
                    recorded = recorded_ids(task_result_id, [sample.id for _, sample in chunk])
                    chunk = [(position, sample) for position, sample in chunk if sample.id not in recorded]
                # A fresh evaluation finds nothing: once the first PROBE lookups all missed, stop
                # asking here (workers still check the store for every sample).
                records = [None] * len(chunk)
                if execution is not None and chunk and (found or looked_up < PROBE):
                    records = cached_samples(execution, chunk)
                    looked_up += len(chunk)
                hits = [PendingResult(task_result_id, record, None) for record in records if record is not None]
                found += len(hits)
                for (position, sample), record in zip(chunk, records, strict=True):
                    if record is None:
                        sender.send(task_result_id, position, sample.model_dump(mode="json"), queue)
                _record_hits(hits, item)
                handled += len(chunk)
                if on_progress is not None:
                    on_progress(handled)
    if on_progress is not None:
        on_progress(handled)
    return handled


def recorded_ids(task_result_id: int, sample_ids: list[str]) -> set[str]:
    """Which of these samples already have a result in the task result."""
    if not sample_ids:
        return set()
    sr = sample_results.c
    with get_engine().connect() as connection:
        return set(connection.execute(select(sr.sample_id).where(
            sr.task_result_id == task_result_id, sr.sample_id.in_(sample_ids))).scalars())


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _record_hits(hits: list[PendingResult], item: ResolvedSpec) -> None:
    if hits:
        for claimed in record_results(get_engine(), hits):
            dispatch_aggregation(claimed, item.spec)


def submit(path: str | Path, on_progress: ProgressCallback | None = None) -> str:
    """Validate, register and enqueue an evaluation; returns the run id."""
    return submit_resolved(validate_run_file(path), on_progress)


def submit_resolved(resolved: ResolvedRunFile, on_progress: ProgressCallback | None = None,
                    on_created: Callable[[str], None] | None = None,
                    on_registered: RegistrationNotice | None = None) -> str:
    """Register and enqueue an evaluation validated by `validate_run_file`; returns the run id.
    `on_created(run_id)` is called once the run exists, before its samples are enqueued."""
    run_id, task_result_ids = create_run(resolved.evaluation, resolved.specs, resolved.entities_to_register(),
                                         on_registered=on_registered)
    if on_created is not None:
        on_created(run_id)
    try:
        for item, task_result_id in zip(resolved.specs, task_result_ids, strict=True):
            if item.uploaded_log is not None:
                for claimed in inject_uploaded_log(item.uploaded_log, item.spec, task_result_id,
                                                   resolved.evaluation.cache_policy):
                    dispatch_aggregation(claimed, item.spec)
        enqueue_samples(resolved.specs, task_result_ids, resolved.evaluation.cache_policy, on_progress)
    except BrokerError as exc:
        fail_submission(run_id, exc)
    return run_id


def fail_submission(run_id: str, exc: Exception) -> None:
    with get_engine().begin() as connection:
        connection.execute(runs.update().where(runs.c.id == run_id).values(
            status="error", error=f"could not enqueue samples: {exc}", finished_at=now()))
    raise EvalfleetError(f"could not reach the broker at {broker_address()}: {exc}") from exc
