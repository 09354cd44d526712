"""Finishing what a crash interrupted. Aggregation that never fired (the process that claimed the
last sample died) or stalled (the aggregator died) is taken over; samples a broker lost (a Redis
restart with nothing on disk) are enqueued again. Duplicates are harmless: sample rows are
unique per task result, so a sample delivered twice still counts once."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from services.aggregator import assemble_task_result_log
from services.resolver import select_for
from shared.db import get_engine, now, sample_results, task_results
from shared.plan import ResolvedTaskSpec
from shared.samples import iter_selected
from workers.app import SampleSender, app, queue_for
from workers.results import claim_aggregation

logger = logging.getLogger(__name__)
STALE_CLAIM = timedelta(minutes=10)


def finish_stalled_aggregations(run_id: str) -> int:
    """Aggregate, here, the task results whose samples are all done but whose log was never
    written. Returns how many this call finished."""
    t = task_results.c
    stale_before = now() - STALE_CLAIM
    finished = 0
    with get_engine().connect() as connection:
        candidates = connection.execute(select(t.id, t.status, t.claimed_at).where(
            t.run_id == run_id,
            or_(and_(t.status == "running", t.done >= t.total), t.status == "aggregating"),
        )).all()
    for task_result_id, status, claimed_at in candidates:
        with get_engine().begin() as connection:
            if status == "running":
                claimed = claim_aggregation(connection, task_result_id)
            else:
                if claimed_at is not None and _aware(claimed_at) > stale_before:
                    continue  # an aggregator is (probably) still at work
                claimed = connection.execute(update(task_results).where(
                    t.id == task_result_id, t.status == "aggregating", t.claimed_at == claimed_at,
                ).values(claimed_at=now())).rowcount == 1
        if claimed:
            logger.warning("finishing the aggregation of task result %s of run %s", task_result_id, run_id)
            assemble_task_result_log(task_result_id)
            finished += 1
    return finished


def _aware(moment):  # noqa: ANN001, ANN202 - SQLite returns naive datetimes
    return moment if moment.tzinfo else moment.replace(tzinfo=now().tzinfo)


def requeue_missing_samples(run_id: str) -> int:
    """Enqueue again every selected sample of the run that has no recorded result yet."""
    t = task_results.c
    with get_engine().connect() as connection:
        unfinished = connection.execute(select(t.id, t.plan).where(t.run_id == run_id, t.status == "running")).all()
    sent = 0
    with SampleSender() as sender:
        for task_result_id, plan in unfinished:
            spec = ResolvedTaskSpec.model_validate_json(plan)
            with get_engine().connect() as connection:
                recorded = set(connection.execute(select(sample_results.c.sample_id).where(
                    sample_results.c.task_result_id == task_result_id)).scalars())
            selected = select_for(spec)
            for position, sample in iter_selected(spec.dataset, selected.selection,
                                                  needs_input=selected.needs_input,
                                                  needs_target=selected.needs_target):
                if sample.id not in recorded:
                    sender.send(task_result_id, position, sample.model_dump(mode="json"), queue_for(spec))
                    sent += 1
    if sent:
        logger.warning("enqueued %d samples of run %s again", sent, run_id)
    return sent


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
