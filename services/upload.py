"""Uploading task result logs: a task specification with `task_result_log_path` takes its samples
from that log instead of from inference and scoring. The log must validate, must match its
specification (task, model, dataset, sample ids) and must come from a place the user trusts: a
path inside the run file's directory, or an S3 URL under the configured log dir or store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from shared.cache_identity import InferenceIdentity, ScoreIdentity, model_identity, task_identity
from shared.db import get_engine
from shared.errors import SpecError, StoreError
from shared.log import SampleRecord, TaskResultLog, read_task_result_log
from shared.log.reader import LogError
from shared.plan import ResolvedTaskSpec
from shared.prompts import prompt_of
from shared.result_store import CachedInference, CachedScores, result_store
from shared.samples import Sample, Selection, iter_selected, with_epochs
from shared.settings import get_settings
from workers.results import PendingResult, record_results
from workers.tasks import load_task

UPLOAD_BATCH = 500
UPLOAD_WORKER = "upload"


def resolve_log_location(raw: str, base: Path, file: str, field: str) -> str:
    """Where an uploaded log may be read from, or a SpecError saying why not."""
    if raw.startswith("s3://"):
        settings = get_settings()
        trusted = [u.rstrip("/") + "/" for u in (settings.log_dir, settings.store_url) if u and u.startswith("s3://")]
        if not any(raw.startswith(prefix) for prefix in trusted):
            raise SpecError(file, field, f"{raw!r} is not under a configured S3 location (the log dir or store)")
        return raw
    if "://" in raw:
        raise SpecError(file, field, f"{raw!r}: only paths relative to the run file, or s3:// URLs, are accepted")
    relative = PurePosixPath(raw)
    if relative.is_absolute() or Path(raw).is_absolute():
        raise SpecError(file, field, f"{raw!r} is absolute; give a path relative to the run file")
    if ".." in relative.parts:
        raise SpecError(file, field, f"{raw!r} leaves the run file's directory")
    root = base.resolve()
    real = (base / raw).resolve()
    if not real.is_relative_to(root):
        raise SpecError(file, field, f"{raw!r} resolves outside the run file's directory (a symlink?)")
    if not real.is_file():
        raise SpecError(file, field, f"task result log not found: {real}")
    return str(real)


def load_uploaded_log(location: str, spec: ResolvedTaskSpec, selection: Selection, *, needs_input: bool,
                      needs_target: bool, file: str, field: str) -> TaskResultLog:
    try:
        log = read_task_result_log(location)
    except LogError as exc:
        raise SpecError(file, field, f"{location}: {exc.message}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(file, field, f"{location} is not a valid task result log: {where}: {first['msg']}") from None
    except (ValueError, OSError, StoreError) as exc:
        raise SpecError(file, field, f"cannot read task result log {location}: {exc}") from None
    logged = log.task_specification
    mismatches = []
    if logged.task != spec.task:
        mismatches.append("task (key, template or config)")
    if (logged.model and (logged.model.key, model_identity(logged.model))) != (
            spec.model and (spec.model.key, model_identity(spec.model))):
        mismatches.append("model (key, provider, name, endpoint or generation settings)")
    if logged.dataset.key != spec.dataset.key:
        mismatches.append("dataset")
    if (logged.epochs, logged.epoch_reducer) != (spec.epochs, spec.epoch_reducer):
        mismatches.append("epochs or epoch_reducer")
    if not mismatches:
        selected = [sample.id for _, sample in with_epochs(iter_selected(
            spec.dataset, selection, needs_input=needs_input, needs_target=needs_target), spec.epochs)]
        if selected != log.sample_ids or [s.id for s in log.samples] != selected:
            mismatches.append("sample ids")
    if mismatches:
        raise SpecError(file, field, f"the log at {location} does not match its task specification: "
                                     f"{', '.join(mismatches)} differ")
    return log


def inject_uploaded_log(log: TaskResultLog, spec: ResolvedTaskSpec, task_result_id: int,
                        cache_policy: str) -> list[int]:
    """Record the log's samples as this run's (no model call, no scoring); they join the cache.
    Returns the task results whose aggregation this claimed."""
    task = load_task(spec.task, spec.dataset)
    task_part, scorer_part = task_identity(spec.task, task.scorer_config_fields)
    model_part = model_identity(spec.model) if spec.model else None
    store = result_store() if cache_policy != "no-cache" and model_part is not None else None
    identity = InferenceIdentity(model_part, task_part) if store is not None else None
    scoring = ScoreIdentity(scorer_part)
    claimed: list[int] = []
    for batch in _batches(log.samples):
        pending = []
        for record in batch:
            sample = Sample(id=record.id, input=record.input, target=record.target, metadata=record.metadata)
            if store is not None and record.error is None and record.output is not None:
                ikey = identity.key(prompt_of(record, log) or "", sample, record.epoch - 1)
                store.save(ikey, CachedInference(output=record.output, usage=record.usage,
                                                 latency_ms=record.latency_ms),
                           scoring.key(ikey), CachedScores(scores=record.scores), known=True)
            uploaded = record.model_copy(update={"model_calls": 0, "cached": True, "worker": UPLOAD_WORKER})
            group = task.group_key(sample) if task.scores_population else None
            pending.append(PendingResult(task_result_id, uploaded, group))
        claimed += record_results(get_engine(), pending)
    return claimed


def _batches(records: list[SampleRecord]) -> Iterator[list[SampleRecord]]:
    for start in range(0, len(records), UPLOAD_BATCH):
        yield records[start:start + UPLOAD_BATCH]
