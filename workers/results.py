"""Recording sample results: one row per sample, unique per task result, and the task result's
counters, committed together. Concurrent samples share a transaction (group commit), so the
database sees a few commits per batch instead of one per sample.

Whoever commits the row that completes a task result claims its aggregation (a conditional
update from `running` to `aggregating`), so aggregation is triggered exactly once even when
samples are delivered twice or finish on different hosts at the same moment."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, update
from sqlalchemy.engine import Engine

from shared.db import now, sample_results, task_results
from shared.log import SampleError, SampleRecord
from shared.outages import is_outage
from shared.redact import scrub
from shared.spec import Pricing

logger = logging.getLogger(__name__)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class PendingResult:
    task_result_id: int
    record: SampleRecord
    group_key: str | None
    # Held from creation; the writer releases it once the sample is recorded. A bare lock is the
    # cheapest one-shot signal between two threads (an Event is a Condition, a lock and Python
    # code on both sides), paid for every sample.
    done: threading.Lock = field(default_factory=_held_lock)
    error: BaseException | None = None
    # What the sample adds to the result store (shared.result_store.StoreWrite), written with the
    # batch before its commit.
    store_write: object | None = None


class _Statements:
    """The statements of `record_results`, built once per dialect: building and hashing a fresh
    SQLAlchemy statement for every batch cost several times the database work itself."""

    def __init__(self, dialect: str):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self.insert = (
            insert(sample_results)
            .on_conflict_do_nothing(index_elements=["task_result_id", "sample_id", "epoch"])
            .returning(sample_results.c.task_result_id, sample_results.c.sample_id, sample_results.c.epoch)
        )
        t = task_results.c
        self.count = (
            update(task_results)
            .where(t.id == bindparam("task_result"))
            .values(
                done=t.done + bindparam("done"),
                errors=t.errors + bindparam("errors"),
                model_calls=t.model_calls + bindparam("calls"),
                attempts=t.attempts + bindparam("attempts"),
                cache_hits=t.cache_hits + bindparam("hits"),
                progress_at=bindparam("moment"),
            )
            .returning(t.done, t.total, t.status)
        )


_statements: dict[str, _Statements] = {}


def _statements_for(engine: Engine) -> _Statements:
    statements = _statements.get(engine.dialect.name)
    if statements is None:
        statements = _statements[engine.dialect.name] = _Statements(engine.dialect.name)
    return statements


_primary_labels: dict[int, str | None] = {}
# Pricing of each judge model by key, per task result (filled with the primary label).
_judge_pricing: dict[int, dict[str, Pricing]] = {}


def primary_label(connection, task_result_id: int) -> str | None:  # noqa: ANN001
    """The scorer whose value is a sample's `score` column: the star metric's, else the task's
    first. Read once per task result per process."""
    if task_result_id not in _primary_labels:
        from sqlalchemy import select

        from shared.plan import ResolvedTaskSpec
        from workers.tasks import load_task

        plan = connection.execute(select(task_results.c.plan).where(task_results.c.id == task_result_id)).scalar()
        label = None
        pricing: dict[str, Pricing] = {}
        if plan is not None:
            spec = ResolvedTaskSpec.model_validate_json(plan)
            pricing = {key: model.pricing for key, model in [*spec.judges.items(),
                                                             *([(spec.model.key, spec.model)] if spec.model else [])]
                       if model.pricing is not None}
            if spec.star_metric is not None:
                label = spec.star_metric.scorer
            else:
                try:
                    label = next(iter(load_task(spec.task, spec.dataset).metrics()), None)
                except Exception:  # noqa: BLE001 - a task not importable here: no primary score
                    label = None
        if len(_primary_labels) > 4096:
            _primary_labels.clear()
            _judge_pricing.clear()
        _judge_pricing[task_result_id] = pricing
        _primary_labels[task_result_id] = label
    return _primary_labels[task_result_id]


def judge_cost(record: SampleRecord, pricing: dict[str, Pricing]) -> float | None:
    """The sample's judge calls priced by their models; None when it made none or none is priced."""
    costs = [pricing[j.model].cost_usd(j.input_tokens, j.output_tokens) for j in record.judges if j.model in pricing]
    return sum(costs) if costs else None


def _score(record: SampleRecord, label: str | None) -> float | None:
    score = record.scores.get(label) if label else None
    return None if score is None else score.value


def record_results(engine: Engine, batch: list[PendingResult]) -> list[int]:
    """Store a batch in one transaction; returns the task results whose aggregation it claimed."""
    statements = _statements_for(engine)
    # A stable order keeps two workers from locking the same rows in opposite orders.
    batch = sorted(batch, key=lambda p: (p.task_result_id, p.record.id, p.record.epoch))
    unknown = {p.task_result_id for p in batch} - _primary_labels.keys()
    if unknown:
        with engine.connect() as connection:
            for task_result_id in unknown:
                primary_label(connection, task_result_id)
    labels = {p.task_result_id: _primary_labels.get(p.task_result_id) for p in batch}
    rows = [
        {
            "task_result_id": p.task_result_id,
            "sample_id": p.record.id,
            "position": p.record.position,
            "epoch": p.record.epoch,
            "is_error": p.record.error is not None,
            "group_key": p.group_key,
            "error_type": _column_text(p.record.error.type, 100) if p.record.error else None,
            "error_message": _column_text(p.record.error.message, 300) if p.record.error else None,
            "score": _score(p.record, labels[p.task_result_id]),
            "latency_ms": p.record.latency_ms,
            "input_tokens": p.record.usage.input_tokens if p.record.usage else None,
            "output_tokens": p.record.usage.output_tokens if p.record.usage else None,
            "cached": p.record.cached,
            "judge_cost_usd": judge_cost(p.record, _judge_pricing.get(p.task_result_id, {})) if p.record.judges
            else None,
            "body": p.record.model_dump_json(),
        }
        for p in batch
    ]
    by_key = {(p.task_result_id, p.record.id, p.record.epoch): p.record for p in batch}
    claimed: list[int] = []
    moment = now()
    with engine.begin() as connection:
        inserted = connection.execute(statements.insert, rows).all()
        increments: dict[int, dict[str, int]] = {}
        for task_result_id, sample_id, epoch in inserted:
            record = by_key[(task_result_id, sample_id, epoch)]
            counts = increments.setdefault(task_result_id, {"done": 0, "errors": 0, "calls": 0, "attempts": 0,
                                                            "hits": 0})
            counts["done"] += 1
            counts["errors"] += record.error is not None
            counts["calls"] += record.model_calls
            counts["attempts"] += record.attempts
            counts["hits"] += record.cached
        for task_result_id in sorted(increments):
            done, total, status = connection.execute(
                statements.count, {"task_result": task_result_id, "moment": moment, **increments[task_result_id]}
            ).one()
            if done >= total and status == "running" and claim_aggregation(connection, task_result_id):
                claimed.append(task_result_id)
    return claimed


def _column_text(text: str, limit: int) -> str:
    """Text fit for a plain column: databases refuse NUL characters."""
    return text.replace("\x00", "\\x00")[:limit]


def unrecordable(record: SampleRecord, exc: BaseException) -> SampleRecord:
    """What is recorded for a sample whose own result the database refuses (a value it cannot
    store): the sample's identity and the reason, so the run finishes and says why."""
    message = scrub(f"the database refused this sample's result: {exc}").replace("\x00", "\\x00")
    return SampleRecord(id=record.id, position=record.position, input=None, target=None,
                        error=SampleError(type="UnrecordableResult", message=message),
                        model_calls=record.model_calls, attempts=record.attempts, worker=record.worker,
                        started_at=record.started_at, completed_at=record.completed_at)


def record_each(engine: Engine, batch: list[PendingResult]) -> list[int]:
    """Record a batch. When the database refuses it for a reason of its own (not an outage), the
    samples are recorded one at a time: each culprit is recorded as its own error, the others as
    they are. An outage is left on the pending results (`error`) for their callers to wait out."""
    try:
        return record_results(engine, batch)
    except Exception as exc:  # noqa: BLE001 - sorted out below
        if is_outage(exc):
            for pending in batch:
                pending.error = exc
            return []
    claimed: list[int] = []
    for pending in batch:
        try:
            claimed += record_results(engine, [pending])
            continue
        except Exception as exc:  # noqa: BLE001
            if is_outage(exc):
                pending.error = exc
                continue
            logger.warning("sample %s: the database refused its result: %s", pending.record.id, exc)
            refused = exc
        substitute = PendingResult(pending.task_result_id, unrecordable(pending.record, refused), None)
        try:
            claimed += record_results(engine, [substitute])
        except Exception as exc:  # noqa: BLE001
            pending.error = exc
    return claimed


def claim_aggregation(connection, task_result_id: int, *, complete_only: bool = True) -> bool:  # noqa: ANN001
    """Move a running task result to `aggregating`; true for exactly one caller."""
    t = task_results.c
    condition = and_(t.id == task_result_id, t.status == "running")
    if complete_only:
        condition = and_(condition, t.done >= t.total)
    result = connection.execute(update(task_results).where(condition).values(status="aggregating", claimed_at=now(), aggregator=None))
    return result.rowcount == 1


class ResultWriter:
    """A background thread that commits the results of concurrent samples in batches, each after
    the batch's result store writes (`before_commit`). `record` returns once the sample is
    durable, so the task's late acknowledgement comes after it."""

    def __init__(self, engine: Engine, batch_size: int, on_claimed: Callable[[int], None],
                 linger_s: float = 0.002, before_commit: Callable[[list], None] | None = None):
        self.engine = engine
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.on_claimed = on_claimed
        self.before_commit = before_commit
        self._queue: queue.SimpleQueue[PendingResult] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="evalfleet-result-writer", daemon=True)
        self._thread.start()

    def record(self, task_result_id: int, record: SampleRecord, group_key: str | None,
               store_write: object | None = None) -> None:
        pending = PendingResult(task_result_id, record, group_key, store_write=store_write)
        self._queue.put(pending)
        pending.done.acquire()
        if pending.error is not None:
            raise pending.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # A short linger lets results finishing at about the same time share one commit.
            deadline = time.monotonic() + self.linger_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            writes = [pending.store_write for pending in batch if pending.store_write is not None]
            if writes and self.before_commit is not None:
                # The batch's cache entries are durable before its results are committed, and
                # those before any of its messages is acknowledged: one journal write and one
                # Redis round trip for the whole batch.
                self.before_commit(writes)
            claimed = record_each(self.engine, batch)
            failed = sum(pending.error is not None for pending in batch)
            if failed:
                logger.warning("could not record %d sample results: %s", failed,
                               next(p.error for p in batch if p.error is not None))
            for pending in batch:
                pending.done.release()
            for task_result_id in claimed:
                try:
                    self.on_claimed(task_result_id)
                except Exception:  # noqa: BLE001 - `evalfleet status` finishes unclaimed runs
                    logger.exception("could not dispatch aggregation of task result %s", task_result_id)
