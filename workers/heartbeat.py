"""Worker liveness. Every `evalfleet worker` process beats every HEARTBEAT_S seconds: it refreshes
the delivery time of the messages it holds on a Redis broker (so only a dead worker's samples are
delivered again, see workers.broker), and it upserts its row in the `workers` table with the
samples it holds. A worker whose row is older than LIVE_WITHIN_S is taken for dead.

Others read the table: the waiting `evalfleet run` and `status` (is anyone consuming this queue?),
the recovery sweep (which missing samples has nobody got?), and the Kubernetes liveness probe
(`evalfleet worker --probe`, through the heartbeat file)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from celery.worker import state as worker_state
from sqlalchemy import delete, select

from shared.db import get_engine, now, worker_processes
from workers.app import SAMPLE_TASK, SWEEP_TASK, app
from workers.broker import refresh_held_messages

logger = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
LIVE_WITHIN_S = 20.0
SWEEP_EVERY_S = 10.0
# A beat records the worker's row before it writes the file, and waits up to the database's
# connect timeout for that: a worker waiting out a database outage must not be restarted as dead.
PROBE_MAX_AGE_S = 60.0


def held_samples() -> dict[int, list[int]]:
    """The samples this process has received and not finished: {task_result_id: [positions]}."""
    held: dict[int, list[int]] = defaultdict(list)
    for _ in range(5):  # the consumer adds requests while this copies the set
        try:
            requests = list(worker_state.reserved_requests) + list(worker_state.active_requests)
            break
        except RuntimeError:
            continue
    else:
        requests = []
    seen = set()
    for request in requests:
        if request.name != SAMPLE_TASK or id(request) in seen:
            continue
        seen.add(id(request))
        try:
            task_result_id, position = request.args[0], request.args[1]
        except (IndexError, TypeError):
            continue
        held[int(task_result_id)].append(int(position))
    return dict(held)


class Heartbeat:
    """The beating of one worker process, in a daemon thread."""

    def __init__(self, name: str, queues: list[str], concurrency: int, heartbeat_file: str | None = None):
        self.name = name
        self.queues = queues
        self.concurrency = concurrency
        self.heartbeat_file = Path(heartbeat_file) if heartbeat_file else None
        self.started_at = now()
        self._stop = threading.Event()
        # Two threads: refreshing the broker's delivery times must never wait behind a database
        # that is away, or a live worker's samples would be delivered again.
        self._threads = [threading.Thread(target=self._run, name="evalfleet-heartbeat", daemon=True),
                         threading.Thread(target=self._refresh, name="evalfleet-broker-refresh", daemon=True)]

    def start(self) -> Heartbeat:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove this worker's row (it stopped on purpose)."""
        self._stop.set()
        try:
            with get_engine().begin() as connection:
                connection.execute(delete(worker_processes).where(worker_processes.c.name == self.name))
        except Exception as exc:  # noqa: BLE001 - the row expires by itself
            logger.debug("could not remove the heartbeat of %s: %s", self.name, exc)

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        while not self._stop.is_set():
            self.beat()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_EVERY_S
                try:
                    app.tasks[SWEEP_TASK](self.name)  # in this process, not through the broker
                except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                    logger.warning("recovery sweep failed: %s", exc)
            self._stop.wait(HEARTBEAT_S)

    def _refresh(self) -> None:
        while not self._stop.is_set():
            try:
                refresh_held_messages()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next beat tries again
                logger.warning("could not refresh the messages this worker holds: %s", exc)
            self._stop.wait(HEARTBEAT_S)

    def beat(self) -> None:
        held = held_samples()
        try:
            self._upsert(held)
        except Exception as exc:  # noqa: BLE001 - the database away: the next beat tries again
            logger.warning("could not record this worker's heartbeat: %s", exc)
        if self.heartbeat_file is not None:
            try:
                self.heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
                self.heartbeat_file.write_text(f"{time.time():.0f}\n")
            except OSError as exc:
                logger.warning("could not write the heartbeat file %s: %s", self.heartbeat_file, exc)

    def _upsert(self, held: dict[int, list[int]]) -> None:
        engine = get_engine()
        values = {
            "name": self.name, "hostname": socket.gethostname(), "pid": os.getpid(),
            "queues": ",".join(self.queues), "concurrency": self.concurrency, "started_at": self.started_at,
            "last_seen": now(), "active": len(worker_state.active_requests),
            "holding": json.dumps({str(k): sorted(v) for k, v in held.items()}),
        }
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(worker_processes).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["name"], set_={k: v for k, v in values.items() if k != "name"})
        with engine.begin() as connection:
            connection.execute(statement)


def live_workers(queue: str | None = None) -> list[dict]:
    """Workers that beat within LIVE_WITHIN_S, optionally only those consuming `queue`."""
    with get_engine().connect() as connection:
        rows = connection.execute(select(worker_processes).where(
            worker_processes.c.last_seen >= now() - timedelta(seconds=LIVE_WITHIN_S))).mappings().all()
    found = []
    for row in rows:
        queues = row["queues"].split(",")
        if queue is None or queue in queues:
            found.append({**row, "queues": queues, "holding": json.loads(row["holding"] or "{}")})
    return found


def heartbeat_age(path: str) -> float | None:
    """Seconds since a heartbeat file was written, or None when there is none."""
    try:
        return time.time() - float(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def stale_heartbeat(path: str, max_age: float = PROBE_MAX_AGE_S) -> str | None:
    """Why the worker writing `path` is not live (one sentence), or None when it beat within
    `max_age` seconds: the liveness probe's verdict."""
    age = heartbeat_age(path)
    if age is None:
        return f"no heartbeat in {path} (the worker has not beaten yet, or writes elsewhere)"
    if age > max_age:
        return f"the last heartbeat in {path} is {age:.0f} s old (more than {max_age:g} s)"
    return None
