"""Feeding a run's samples to the broker, a window at a time: one message per selected sample, but
never more than a window of samples in flight (enqueued and not yet recorded), so neither the
broker (the in-process one of the embedded default holds every pending message in memory) nor
anything else grows with the size of the run.

A run has one feeder at a time, named in `runs.feeder`, which keeps `runs.fed_at` fresh and
records per task result how far it got (`task_results.enqueued`). A feeder that goes quiet (its
process died, or `run --detach` handed the run over) is replaced by a worker's recovery sweep,
which goes on from there; recovery never enqueues a sample the feeder has not reached yet."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from services.resolver import ResolvedSpec, select_for
from shared.db import get_engine, now, runs, sample_results, task_results
from shared.log import SampleRecord
from shared.plan import ResolvedTaskSpec
from shared.samples import chunks, iter_selected, with_epochs
from shared.settings import get_settings
from workers.app import SampleSender, dispatch_aggregation, queue_for
from workers.results import PendingResult, record_results
from workers.sample import MISSED, cached_samples, lookup_execution

logger = logging.getLogger(__name__)
ProgressCallback = Callable[[int], None]
LOOKUP_BATCH = 200  # samples looked up in the result store per round trip
HEARTBEAT_S = 2.0
# A feeder silent this long is replaced (its heartbeat comes every HEARTBEAT_S, also while it
# waits for room in the window).
STALE_FEEDER_S = 60.0
WAIT_MIN_S, WAIT_MAX_S = 0.01, 0.25
# Once the window is full, feeding resumes when this fraction of it is free again: one database
# read per few hundred samples, not one per sample.
RESUME_AT = 0.8
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class FeedItem:
    """One task result to feed: its specification and selection, and where to start."""

    task_result_id: int
    spec: ResolvedTaskSpec
    selection: Any
    needs_input: bool
    needs_target: bool
    start: int = 0

    @classmethod
    def of(cls, resolved: ResolvedSpec, task_result_id: int, start: int = 0) -> FeedItem:
        return cls(task_result_id, resolved.spec, resolved.selection, resolved.needs_input, resolved.needs_target,
                   start)


class FeedingStopped(Exception):
    """The run was cancelled or finished, or another process took its feeding over."""


def window_size() -> int | None:
    """Samples a feeder may have in flight: `EVALFLEET_SUBMIT_WINDOW`, or twice what the live
    workers can hold at once (concurrency x prefetch) when that is more; None: no limit."""
    settings = get_settings()
    if settings.submit_window == 0:
        return None
    capacity = 0
    if not settings.embedded:
        from workers.heartbeat import live_workers

        try:
            capacity = sum(worker["concurrency"] for worker in live_workers()) * settings.prefetch_multiplier
        except Exception:  # noqa: BLE001 - sized from the setting alone
            capacity = 0
    return max(settings.submit_window, 2 * capacity)


class Feeder:
    """Feeds the samples of `items`, which belong to run `run_id`. `on_progress(handled)` hears how
    many samples were enqueued (or recorded at submission) so far."""

    def __init__(self, run_id: str, items: list[FeedItem], cache_policy: str, *, name: str,
                 on_progress: ProgressCallback | None = None, skip_recorded: bool = False,
                 stop: threading.Event | None = None):
        self.run_id = run_id
        self.items = items
        self.cache_policy = cache_policy
        self.name = name
        self.on_progress = on_progress
        self.skip_recorded = skip_recorded
        self.stop = stop or threading.Event()
        self.window = window_size()
        self.handled = 0
        self._accounted = 0  # samples enqueued or recorded by this feeder
        self._baseline = 0
        self._known_done = 0
        self._reached: dict[int, int] = {}
        self._beat_at = 0.0
        self._flushed_once = False

    def run(self) -> int:
        """Feed everything (or until stopped); returns how many samples were handled."""
        self._baseline = self._known_done = self._done()
        try:
            with SampleSender() as sender:
                for item in self.items:
                    self._feed(item, sender)
                    self._reached[item.task_result_id] = -1  # all of it
            self._finish()
        except FeedingStopped as why:
            logger.info("stopped feeding run %s: %s", self.run_id, why)
            self._save_progress()
        if self.on_progress is not None:
            self.on_progress(self.handled)
        return self.handled

    def _feed(self, item: FeedItem, sender: SampleSender) -> None:
        queue = queue_for(item.spec)
        execution = lookup_execution(item.task_result_id) if self.cache_policy == "reuse" else None
        selected = with_epochs(iter_selected(item.spec.dataset, item.selection, needs_input=item.needs_input,
                                             needs_target=item.needs_target), item.spec.epochs)
        batch = min(LOOKUP_BATCH, self.window or LOOKUP_BATCH)
        if execution is not None:
            # Looking a chunk up renders its prompts: with templates of megabytes, fewer at a time.
            batch = max(1, min(batch, int(get_settings().prompt_budget_mb * 2**20) // max(1, execution.template_chars)))
        for chunk in chunks(selected, batch):
            chunk = [(position, sample) for position, sample in chunk if position >= item.start]
            if not chunk:
                continue
            self._pace(sender, len(chunk))
            if self.skip_recorded:
                recorded = recorded_positions(item.task_result_id, [position for position, _ in chunk])
                chunk_to_do = [(position, sample) for position, sample in chunk if position not in recorded]
            else:
                chunk_to_do = chunk
            # One store round trip per chunk here saves one per sample on the workers: a sample
            # found missing is sent as checked, and its worker does not look again.
            records = cached_samples(execution, chunk_to_do) if execution is not None and chunk_to_do else (
                [None] * len(chunk_to_do))
            hits = [PendingResult(item.task_result_id, record, None) for record in records
                    if isinstance(record, SampleRecord)]
            for (position, sample), record in zip(chunk_to_do, records, strict=True):
                if not isinstance(record, SampleRecord):
                    sender.send(item.task_result_id, position, sample.model_dump(mode="json"), queue,
                                checked=record == MISSED)
            if hits:
                for claimed in record_results(get_engine(), hits):
                    dispatch_aggregation(claimed, item.spec)
            if not self._flushed_once:
                # Workers start on the first chunk instead of waiting for a full publishing batch.
                sender.flush()
                self._flushed_once = True
            self._accounted += len(chunk_to_do)
            self.handled += len(chunk)
            self._reached[item.task_result_id] = chunk[-1][0] + 1
            if self.on_progress is not None:
                self.on_progress(self.handled)

    def _pace(self, sender: SampleSender, coming: int) -> None:
        """Heartbeat every HEARTBEAT_S; wait until `coming` more samples fit in the window."""
        if self.stop.is_set():
            raise FeedingStopped("asked to stop")
        if time.monotonic() - self._beat_at >= HEARTBEAT_S:
            sender.flush()
            self._heartbeat()
        if self.window is None or self._in_flight(self._known_done) + coming <= self.window:
            return
        sender.flush()  # what is buffered must reach the workers before waiting for them
        self._save_progress()
        delay = WAIT_MIN_S
        resume_at = min(self.window * RESUME_AT, self.window - coming)
        while True:
            self._known_done = self._done()
            if self._in_flight(self._known_done) <= resume_at:
                return
            if self.stop.wait(delay):
                raise FeedingStopped("asked to stop")
            delay = min(WAIT_MAX_S, delay * 2)
            if time.monotonic() - self._beat_at >= HEARTBEAT_S:
                self._heartbeat()

    def _in_flight(self, done: int) -> int:
        return self._accounted - (done - self._baseline)

    def _done(self) -> int:
        with get_engine().connect() as connection:
            return int(connection.execute(select(func.coalesce(func.sum(task_results.c.done), 0))
                                          .where(task_results.c.run_id == self.run_id)).scalar())

    def _heartbeat(self) -> None:
        """Keep the feeding claimed, record how far it got, and notice a run that stopped."""
        self._beat_at = time.monotonic()
        with get_engine().begin() as connection:
            self._write_reached(connection)
            owned = connection.execute(update(runs).where(
                runs.c.id == self.run_id, runs.c.feeder == self.name, runs.c.status == "running"
            ).values(fed_at=now())).rowcount
        if not owned:
            raise FeedingStopped("the run is no longer running, or another process feeds it")

    def _write_reached(self, connection) -> None:  # noqa: ANN001
        for task_result_id, reached in self._reached.items():
            connection.execute(update(task_results).where(task_results.c.id == task_result_id)
                               .values(enqueued=None if reached < 0 else reached))

    def _save_progress(self) -> None:
        with get_engine().begin() as connection:
            self._write_reached(connection)

    def _finish(self) -> None:
        with get_engine().begin() as connection:
            self._write_reached(connection)
            connection.execute(update(runs).where(runs.c.id == self.run_id, runs.c.feeder == self.name)
                               .values(feeder=None, fed_at=now()))


def claim_feeding(run_id: str, name: str) -> None:
    """Name this process the feeder of a run just created."""
    with get_engine().begin() as connection:
        connection.execute(update(runs).where(runs.c.id == run_id).values(feeder=name, fed_at=now()))


def hand_over_feeding(run_id: str, name: str) -> None:
    """Leave the rest of the feeding to the cluster (`run --detach`): the next recovery sweep of
    any worker takes it over."""
    with get_engine().begin() as connection:
        connection.execute(update(runs).where(runs.c.id == run_id, runs.c.feeder == name).values(fed_at=_NEVER))


def items_of_run(run_id: str) -> list[FeedItem]:
    """What is left to feed of a run, from the database: its running task results that were not
    fed whole, each from where its feeder got to."""
    t = task_results.c
    with get_engine().connect() as connection:
        rows = connection.execute(select(t.id, t.plan, t.enqueued).where(
            t.run_id == run_id, t.status == "running", t.enqueued.is_not(None)).order_by(t.position)).all()
    items = []
    for task_result_id, plan, enqueued in rows:
        resolved = select_for(ResolvedTaskSpec.model_validate_json(plan))
        items.append(FeedItem.of(resolved, task_result_id, enqueued))
    return items


def take_over_stale_feeding(name: str) -> list[str]:
    """Runs whose feeder went quiet: claim each (one process wins) and feed it on a thread of
    this process. Returns the runs taken over."""
    horizon = now() - timedelta(seconds=STALE_FEEDER_S)
    r = runs.c
    with get_engine().connect() as connection:
        stale = connection.execute(select(r.id, r.fed_at, r.plan).where(
            r.status == "running", r.feeder.is_not(None), r.fed_at < horizon)).all()
    taken = []
    for run_id, fed_at, plan in stale:
        with get_engine().begin() as connection:
            if not connection.execute(update(runs).where(r.id == run_id, r.fed_at == fed_at)
                                      .values(feeder=name, fed_at=now())).rowcount:
                continue
        import json

        cache_policy = json.loads(plan)["cache_policy"]
        logger.warning("run %s: its feeder went quiet; feeding the rest of its samples here", run_id)
        thread = threading.Thread(target=_feed_quietly, args=(run_id, cache_policy, name), daemon=True,
                                  name=f"evalfleet-feeder-{run_id[:8]}")
        thread.start()
        taken.append(run_id)
    return taken


def _feed_quietly(run_id: str, cache_policy: str, name: str) -> None:
    try:
        Feeder(run_id, items_of_run(run_id), cache_policy, name=name).run()
    except Exception:  # noqa: BLE001 - the feeding goes quiet again and another sweep retries
        logger.exception("feeding run %s failed", run_id)


def recorded_positions(task_result_id: int, positions: list[int]) -> set[int]:
    """Which of these work positions (a sample's epoch) already have a result in the task result."""
    if not positions:
        return set()
    sr = sample_results.c
    with get_engine().connect() as connection:
        return set(connection.execute(select(sr.position).where(
            sr.task_result_id == task_result_id, sr.position.in_(positions))).scalars())
