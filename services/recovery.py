"""Finishing what a crash or an outage interrupted, so a run can only stall when nothing is alive
to run it:

* aggregation that never fired or whose aggregator died (its claim went stale) is taken over;
* samples a broker lost (a Redis restart with nothing on disk) are enqueued again;
* the safety net: a running task result that made no progress for STALL_S has its missing
  samples enqueued again when no message carries them any more: none waits in the queue or sits
  delivered and unacknowledged (a Redis broker is scanned; on RabbitMQ the queue must be empty,
  and the broker itself redelivers what a dead consumer held) and no live worker holds them
  (workers.heartbeat), seen so twice, a few heartbeats apart. A message a worker took from the
  queue just before it was killed, and never recorded as delivered, is recovered this way.

Duplicates are harmless: sample rows are unique per task result, so a sample delivered twice
still counts once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, or_, select

from services.aggregator import STALE_CLAIM_S, assemble_task_result_log
from services.resolver import select_for
from shared.db import CANCELLING, exclusive, get_engine, now, runs, sample_results, task_results
from shared.plan import ResolvedTaskSpec
from shared.samples import iter_selected, with_epochs
from workers.app import SWEEP_TASK, SampleSender, app, pending_samples, queue_depth, queue_for
from workers.heartbeat import HEARTBEAT_S, live_workers
from workers.results import claim_aggregation

logger = logging.getLogger(__name__)
# A running task result with no new sample for this long is checked for samples nobody holds.
STALL_S = 10.0
# Samples seen unheld twice this far apart are enqueued again (a message taken from the queue just
# before a check shows up in its worker's next heartbeat).
CONFIRM_AFTER_S = 3 * HEARTBEAT_S


def finish_stalled_aggregations(run_id: str, *, stale_after_s: float = STALE_CLAIM_S) -> int:
    """Aggregate, here, the task results whose samples are all done but whose log nobody is
    writing: never claimed, or claimed and then abandoned for `stale_after_s`. Returns how many
    this call finished."""
    t = task_results.c
    with get_engine().connect() as connection:
        candidates = connection.execute(select(t.id, t.status).where(
            t.run_id == run_id,
            or_(and_(t.status == "running", t.done >= t.total), t.status == "aggregating"),
        )).all()
    finished = 0
    for task_result_id, status in candidates:
        if status == "running":
            with get_engine().begin() as connection:
                if not claim_aggregation(connection, task_result_id):
                    continue
            stale_after_s_here: float | None = None  # just claimed here: free to take
        else:
            stale_after_s_here = stale_after_s
        if assemble_task_result_log(task_result_id, stale_after_s=stale_after_s_here) is not None:
            logger.warning("finished the aggregation of task result %s of run %s", task_result_id, run_id)
            finished += 1
    return finished


def requeue_missing_samples(run_id: str, only: dict[int, set[int]] | None = None) -> int:
    """Enqueue again the selected samples of the run's running task results that have no recorded
    result yet (with `only`: just those positions, by task result id)."""
    t = task_results.c
    with get_engine().connect() as connection:
        unfinished = connection.execute(select(t.id, t.plan, t.enqueued).where(
            t.run_id == run_id, t.status == "running")).all()
    sent = 0
    with SampleSender() as sender:
        for task_result_id, plan, enqueued in unfinished:
            if only is not None and not only.get(task_result_id):
                continue
            spec = ResolvedTaskSpec.model_validate_json(plan)
            recorded = _recorded_positions(task_result_id)
            selected = select_for(spec)
            for position, sample in with_epochs(iter_selected(spec.dataset, selected.selection,
                                                              needs_input=selected.needs_input,
                                                              needs_target=selected.needs_target), spec.epochs):
                if enqueued is not None and position >= enqueued:
                    break  # its feeder has not got this far: it sends the rest itself
                if position in recorded or (only is not None and position not in only[task_result_id]):
                    continue
                sender.send(task_result_id, position, sample.model_dump(mode="json"), queue_for(spec))
                sent += 1
    if sent:
        logger.warning("enqueued %d samples of run %s again", sent, run_id)
    return sent


def _recorded_positions(task_result_id: int) -> set[int]:
    with get_engine().connect() as connection:
        return set(connection.execute(select(sample_results.c.position).where(
            sample_results.c.task_result_id == task_result_id)).scalars())


@dataclass
class UnheldSamples:
    """The safety net of one run, kept by a process that watches it (the waiting `evalfleet run`).
    `sweep()` returns how many samples it enqueued again."""

    run_id: str
    stall_s: float = STALL_S
    confirm_after_s: float = CONFIRM_AFTER_S
    _seen: dict[int, tuple[float, set[int]]] = field(default_factory=dict)

    def sweep(self) -> int:
        if app.conf.broker_url in (None, "", "memory://"):
            return 0  # embedded: the run and its only worker live and die together
        t = task_results.c
        horizon = now() - timedelta(seconds=self.stall_s)
        with get_engine().connect() as connection:
            if connection.execute(select(runs.c.status).where(runs.c.id == self.run_id)).scalar() == CANCELLING:
                return 0
            stalled = connection.execute(select(t.id, t.plan, t.total, t.enqueued).where(
                t.run_id == self.run_id, t.status == "running", t.done < t.total,
                or_(t.progress_at < horizon, and_(t.progress_at.is_(None), t.started_at < horizon)),
            )).all()
        if not stalled:
            self._seen.clear()
            return 0
        holding = _held_positions()
        confirmed: dict[int, set[int]] = {}
        for task_result_id, plan, total, enqueued in stalled:
            queue = queue_for(ResolvedTaskSpec.model_validate_json(plan))
            carried = pending_samples(queue)
            if carried is None and queue_depth(queue):
                self._seen.pop(task_result_id, None)
                continue  # work is waiting in the queue; if no worker takes it, `run` says so
            fed = total if enqueued is None else min(total, enqueued)
            missing = (set(range(fed)) - _recorded_positions(task_result_id) - holding.get(task_result_id, set())
                       - (carried or {}).get(task_result_id, set()))
            if not missing:
                self._seen.pop(task_result_id, None)
                continue
            first_seen, before = self._seen.get(task_result_id, (time.monotonic(), missing))
            still = before & missing
            if still and time.monotonic() - first_seen >= self.confirm_after_s:
                confirmed[task_result_id] = still
                self._seen.pop(task_result_id, None)
            else:
                self._seen[task_result_id] = (first_seen, still or missing)
        if not confirmed:
            return 0
        logger.warning("run %s: %d samples have no result and no live worker holds them; enqueuing them again",
                       self.run_id, sum(len(v) for v in confirmed.values()))
        return requeue_missing_samples(self.run_id, only=confirmed)


_sweepers: dict[str, UnheldSamples] = {}


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_task(worker: str = "recovery") -> int:
    """What each worker runs every SWEEP_EVERY_S (workers.heartbeat), so that runs nobody waits
    for (submitted with --detach) are recovered too; one process at a time does it. It also
    takes over the feeding of runs whose feeder went quiet (services.feeding)."""
    from services.feeding import take_over_stale_feeding

    with exclusive("recovery") as held:
        if not held:
            return 0
        take_over_stale_feeding(worker)
        with get_engine().connect() as connection:
            running = connection.execute(select(runs.c.id).where(runs.c.status == "running")).scalars().all()
        for gone in set(_sweepers) - set(running):
            del _sweepers[gone]
        enqueued = 0
        for run_id in running:
            finish_stalled_aggregations(run_id)
            enqueued += _sweepers.setdefault(run_id, UnheldSamples(run_id)).sweep()
        return enqueued


def _held_positions() -> dict[int, set[int]]:
    held: dict[int, set[int]] = {}
    for worker in live_workers():
        for task_result_id, positions in worker["holding"].items():
            held.setdefault(int(task_result_id), set()).update(positions)
    return held


class BrokerWatch:
    """Notices a Redis broker that restarted (its run id changes), which means its queues, kept
    in memory only, are gone."""

    def __init__(self) -> None:
        self.identity = self._identity()

    @staticmethod
    def _identity() -> str | None:
        url = app.conf.broker_url or ""
        if not url.startswith(("redis://", "rediss://")):
            return None
        import redis

        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            return client.info("server").get("run_id")
        except redis.RedisError:
            return None

    def restarted(self) -> bool:
        current = self._identity()
        if current is None or self.identity is None:
            self.identity = self.identity or current
            return False
        changed = current != self.identity
        self.identity = current
        return changed
