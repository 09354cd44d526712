"""The submitter: resolve and validate the whole run file first (nothing is written before every
check passed), register the run, then stream each dataset once more and enqueue one Celery task
per selected sample."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from kombu.exceptions import OperationalError as BrokerError

from services.feeding import Feeder, FeedItem, ProgressCallback
from services.overrides import Overrides
from services.registry import database_lookup, entity_version, register_entity, registered_keys
from services.resolver import ResolvedRunFile, ResolvedSpec, resolve_entities, resolve_run_file
from services.upload import inject_uploaded_log
from shared.db import get_engine, now, runs, task_results
from shared.errors import EvalfleetError
from shared.plan import ResolvedEvaluation
from workers.app import broker_address, dispatch_aggregation


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
               on_registered: RegistrationNotice | None = None, feeder: str | None = None) -> tuple[str, list[int]]:
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
            feeder=feeder, fed_at=started if feeder else None,
        ))
        ids = []
        for position, item in enumerate(specs):
            ids.append(connection.execute(task_results.insert().values(
                run_id=run_id, position=position, spec_key=item.spec.key, plan=item.spec.model_dump_json(),
                total=item.selection.total * item.spec.epochs, done=0, errors=0, model_calls=0, cache_hits=0, status="running",
                started_at=started, uuid=str(uuid.uuid4()), model_key=item.spec.model.key if item.spec.model else None,
                enqueued=None if item.uploaded_log is not None else 0,
            )).inserted_primary_key[0])
    return run_id, ids


def feeder_name() -> str:
    """This process, as the feeder of the runs it submits."""
    return f"submitter-{os.getpid()}@{socket.gethostname()}"


def enqueue_samples(run_id: str, specs: Sequence[ResolvedSpec], task_result_ids: list[int], cache_policy: str,
                    on_progress: ProgressCallback | None = None, skip_recorded: bool = False,
                    stop: threading.Event | None = None) -> int:
    """One message per selected sample, a window at a time (services.feeding). `skip_recorded`
    leaves out samples that already have a result in their task result (a retry copies the
    successful ones first); it is checked a chunk at a time, so memory stays flat.

    With `reuse`, a sample whose output and scores are both in the result store is recorded here
    and never enqueued: a cache hit then costs one store lookup, not a round trip through the
    broker and a worker. Returns how many samples were enqueued or recorded."""
    items = [FeedItem.of(item, task_result_id) for item, task_result_id in zip(specs, task_result_ids, strict=True)
             if item.uploaded_log is None]
    return Feeder(run_id, items, cache_policy, name=feeder_name(), on_progress=on_progress,
                  skip_recorded=skip_recorded, stop=stop).run()


def submit(path: str | Path, on_progress: ProgressCallback | None = None) -> str:
    """Validate, register and enqueue an evaluation; returns the run id."""
    return submit_resolved(validate_run_file(path), on_progress)


def submit_resolved(resolved: ResolvedRunFile, on_progress: ProgressCallback | None = None,
                    on_created: Callable[[str], None] | None = None,
                    on_registered: RegistrationNotice | None = None, stop: threading.Event | None = None) -> str:
    """Register and enqueue an evaluation validated by `validate_run_file`; returns the run id
    once every sample is enqueued (a window at a time: for a large run, close to its end) or
    `stop` is set (the rest is then fed by whoever takes the feeding over). `on_created(run_id)`
    is called once the run exists, before its samples are enqueued."""
    run_id, task_result_ids = create_run(resolved.evaluation, resolved.specs, resolved.entities_to_register(),
                                         on_registered=on_registered, feeder=feeder_name())
    if on_created is not None:
        on_created(run_id)
    try:
        for item, task_result_id in zip(resolved.specs, task_result_ids, strict=True):
            if item.uploaded_log is not None:
                for claimed in inject_uploaded_log(item.uploaded_log, item.spec, task_result_id,
                                                   resolved.evaluation.cache_policy):
                    dispatch_aggregation(claimed, item.spec)
        enqueue_samples(run_id, resolved.specs, task_result_ids, resolved.evaluation.cache_policy, on_progress,
                        stop=stop)
    except BrokerError as exc:
        fail_submission(run_id, exc)
    return run_id


def fail_submission(run_id: str, exc: Exception) -> None:
    with get_engine().begin() as connection:
        connection.execute(runs.update().where(runs.c.id == run_id).values(
            status="error", error=f"could not enqueue samples: {exc}", finished_at=now()))
    raise EvalfleetError(f"could not reach the broker at {broker_address()}: {exc}") from exc
