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
from shared.log import SampleRecord

logger = logging.getLogger(__name__)


@dataclass
class PendingResult:
    task_result_id: int
    record: SampleRecord
    group_key: str | None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


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
            .on_conflict_do_nothing(index_elements=["task_result_id", "sample_id"])
            .returning(sample_results.c.task_result_id, sample_results.c.sample_id)
        )
        t = task_results.c
        self.count = (
            update(task_results)
            .where(t.id == bindparam("task_result"))
            .values(
                done=t.done + bindparam("done"),
                errors=t.errors + bindparam("errors"),
                model_calls=t.model_calls + bindparam("calls"),
                cache_hits=t.cache_hits + bindparam("hits"),
            )
            .returning(t.done, t.total, t.status)
        )


_statements: dict[str, _Statements] = {}


def _statements_for(engine: Engine) -> _Statements:
    statements = _statements.get(engine.dialect.name)
    if statements is None:
        statements = _statements[engine.dialect.name] = _Statements(engine.dialect.name)
    return statements


def record_results(engine: Engine, batch: list[PendingResult]) -> list[int]:
    """Store a batch in one transaction; returns the task results whose aggregation it claimed."""
    statements = _statements_for(engine)
    # A stable order keeps two workers from locking the same rows in opposite orders.
    batch = sorted(batch, key=lambda p: (p.task_result_id, p.record.id))
    rows = [
        {
            "task_result_id": p.task_result_id,
            "sample_id": p.record.id,
            "position": p.record.position,
            "is_error": p.record.error is not None,
            "group_key": p.group_key,
            "body": p.record.model_dump_json(),
        }
        for p in batch
    ]
    by_key = {(p.task_result_id, p.record.id): p.record for p in batch}
    claimed: list[int] = []
    with engine.begin() as connection:
        inserted = connection.execute(statements.insert, rows).all()
        increments: dict[int, dict[str, int]] = {}
        for task_result_id, sample_id in inserted:
            record = by_key[(task_result_id, sample_id)]
            counts = increments.setdefault(task_result_id, {"done": 0, "errors": 0, "calls": 0, "hits": 0})
            counts["done"] += 1
            counts["errors"] += record.error is not None
            counts["calls"] += record.model_calls
            counts["hits"] += record.cached
        for task_result_id in sorted(increments):
            done, total, status = connection.execute(
                statements.count, {"task_result": task_result_id, **increments[task_result_id]}
            ).one()
            if done >= total and status == "running" and claim_aggregation(connection, task_result_id):
                claimed.append(task_result_id)
    return claimed


def claim_aggregation(connection, task_result_id: int, *, complete_only: bool = True) -> bool:  # noqa: ANN001
    """Move a running task result to `aggregating`; true for exactly one caller."""
    t = task_results.c
    condition = and_(t.id == task_result_id, t.status == "running")
    if complete_only:
        condition = and_(condition, t.done >= t.total)
    result = connection.execute(update(task_results).where(condition).values(status="aggregating", claimed_at=now()))
    return result.rowcount == 1


class ResultWriter:
    """A background thread that commits the results of concurrent samples in batches. `record`
    returns once the sample is durable, so the task's late acknowledgement comes after it."""

    def __init__(self, engine: Engine, batch_size: int, on_claimed: Callable[[int], None],
                 linger_s: float = 0.002):
        self.engine = engine
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.on_claimed = on_claimed
        self._queue: queue.SimpleQueue[PendingResult] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="evalfleet-result-writer", daemon=True)
        self._thread.start()

    def record(self, task_result_id: int, record: SampleRecord, group_key: str | None) -> None:
        pending = PendingResult(task_result_id, record, group_key)
        self._queue.put(pending)
        pending.done.wait()
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
            try:
                claimed = record_results(self.engine, batch)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting sample, which retries
                logger.warning("could not record %d sample results: %s", len(batch), exc)
                for pending in batch:
                    pending.error = exc
                    pending.done.set()
                continue
            for pending in batch:
                pending.done.set()
            for task_result_id in claimed:
                try:
                    self.on_claimed(task_result_id)
                except Exception:  # noqa: BLE001 - `evalfleet status` finishes unclaimed runs
                    logger.exception("could not dispatch aggregation of task result %s", task_result_id)
