"""The services a scenario needs, started and stopped by the harness: a Redis database of its own
(flushed), `evalfleet worker` processes and the fake OpenAI server, plus the environment every
evalfleet process of a scenario shares."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.system import CHILDREN, REPO, Child, Deadline, ScenarioTimeout, log, rss_kb

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The integration tests take 8-15; the harness prefers low numbers nobody else claims.
REDIS_DB_CANDIDATES = (3, 4, 2, 1, 7)
OWNER_KEY = "evalfleet-bench:owner"
QUEUE = "evalfleet-bench"
FAKE_KEY_ENV = "EVALFLEET_BENCH_OPENAI_KEY"
EVALFLEET_VARIABLES_PREFIXES = ("EVALFLEET_", "OPENAI_")


def redis_client(db: int):  # noqa: ANN201
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=30, socket_connect_timeout=5)


class RedisDb:
    """A Redis database number held by this harness (file lock + owner key), flushed on entry and exit."""

    def __init__(self, preferred: int | None):
        self.preferred = preferred
        self.db: int | None = None
        self._lock = None

    def __enter__(self) -> RedisDb:
        candidates = (self.preferred,) if self.preferred is not None else REDIS_DB_CANDIDATES
        lock_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "evalfleet-bench-redis-locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        for db in candidates:
            handle = open(lock_dir / f"db{db}.lock", "w")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            client = redis_client(db)
            if self.preferred is None and client.dbsize() and not client.exists(OWNER_KEY):
                handle.close()
                client.close()
                continue  # someone else's data: leave it alone
            self.db, self._lock = db, handle
            client.close()
            self.flush()
            log(f"Redis database {db} at {REDIS_HOST}:{REDIS_PORT} (flushed)")
            return self
        raise RuntimeError(f"no free, empty Redis database among {candidates}; pass --redis-db N")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            redis_client(self.db).flushdb()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"

    def flush(self) -> None:
        client = redis_client(self.db)
        client.flushdb()
        client.set(OWNER_KEY, str(os.getpid()))
        client.close()

    def delete_pattern(self, pattern: str) -> int:
        client = redis_client(self.db)
        removed = 0
        batch = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += client.delete(*batch)
                batch = []
        if batch:
            removed += client.delete(*batch)
        client.close()
        return removed

    def queue_length(self, queue: str = QUEUE) -> int:
        """Messages waiting in a queue (kombu's Redis transport: a list per priority step)."""
        client = redis_client(self.db)
        total = 0
        for key in client.scan_iter(match=f"{queue}*", count=1000):
            if client.type(key) == b"list":
                total += client.llen(key)
        client.close()
        return total


def redis_server_version() -> str | None:
    try:
        client = redis_client(0)
        version = client.info("server").get("redis_version")
        client.close()
        return version
    except Exception:  # noqa: BLE001
        return None


# -- a scenario's place and environment -----------------------------------------------------------


@dataclass
class Place:
    """A scenario's scratch directory and the settings its evalfleet processes share."""

    root: Path
    broker_url: str | None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fresh(cls, root: Path, broker_url: str | None, **extra: str) -> Place:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        return cls(root, broker_url, dict(extra))

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.root / 'evalfleet.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(EVALFLEET_VARIABLES_PREFIXES)}
        env.update({
            "EVALFLEET_HOME": str(self.home),
            "EVALFLEET_LOG_DIR": str(self.log_dir),
            "EVALFLEET_DATABASE_URL": self.database_url,
            "EVALFLEET_QUEUE": QUEUE,
            FAKE_KEY_ENV: "sk-bench-fake",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measured code should not recompile its modules each run
        if self.broker_url:
            env["EVALFLEET_BROKER_URL"] = self.broker_url
        env.update(self.extra)
        env.update(extra)
        return env


def evalfleet_command() -> list[str]:
    beside = Path(sys.executable).parent / "evalfleet"
    found = str(beside) if beside.exists() else shutil.which("evalfleet")
    if not found:
        raise RuntimeError("the `evalfleet` command is not installed: pip install -e /work/main")
    return [found]


# -- workers -------------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    child: Child

    @property
    def pid(self) -> int:
        return self.child.pid

    def rss_kb(self) -> int | None:
        return rss_kb(self.pid)


def start_worker(place: Place, name: str, concurrency: int) -> Worker:
    """One `evalfleet worker` process named `name@<host>`, logging to worker-logs/<name>.log."""
    argv = evalfleet_command() + ["worker", "-c", str(concurrency), "-n", f"{name}@%h", "-l", "WARNING"]
    child = CHILDREN.start(name, argv, env=place.env(), cwd=place.root,
                           log_path=place.root / "worker-logs" / f"{name}.log")
    return Worker(name, child)


class Workers:
    """`evalfleet worker` subprocesses on the scenario's broker; stopped on exit whatever happened."""

    def __init__(self, place: Place, count: int, concurrency: int, deadline: Deadline, prefix: str = "w"):
        self.place = place
        self.count = count
        self.concurrency = concurrency
        self.deadline = deadline
        self.prefix = prefix
        self.workers: list[Worker] = []

    def __enter__(self) -> Workers:
        try:
            for number in range(1, self.count + 1):
                self.workers.append(start_worker(self.place, f"bench-{self.prefix}{number}", self.concurrency))
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self) -> None:
        """Until every worker answers a remote-control ping (the broker round trip proves it consumes)."""
        from celery import Celery

        app = Celery("bench-ping", broker=self.place.broker_url)
        app.conf.broker_connection_retry_on_startup = True
        wanted = {w.name for w in self.workers}
        started = time.monotonic()
        try:
            while True:
                for worker in self.workers:
                    if not worker.child.alive():
                        raise RuntimeError(f"worker {worker.name} exited with {worker.child.process.returncode}:\n"
                                           f"{worker.child.tail()}")
                replies = app.control.ping(timeout=1.0) or []
                answered = {name.split("@", 1)[0] for reply in replies for name in reply}
                if wanted <= answered:
                    break
                if time.monotonic() - started > min(120, self.deadline.remaining()):
                    raise ScenarioTimeout(f"workers not ready within {time.monotonic() - started:.0f} s: "
                                          f"{sorted(wanted - answered)} missing")
        finally:
            app.close()
        log(f"  {self.count} worker(s) ready (-c {self.concurrency}) in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        for worker in self.workers:
            CHILDREN.stop(worker.child, timeout=30)

    @property
    def pids(self) -> dict[str, int]:
        return {w.name: w.pid for w in self.workers}


# -- the fake OpenAI server ------------------------------------------------------------------------


class FakeOpenAI:
    """`python -m tests.fakes.openai_server` as a subprocess with a fixed latency."""

    def __init__(self, place: Place, latency_ms: float):
        self.place = place
        self.latency_ms = latency_ms
        self.child: Child | None = None
        self.port: int | None = None

    def __enter__(self) -> FakeOpenAI:
        port_file = self.place.root / "fake-openai.port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--port-file", str(port_file),
                "--latency-ms", str(self.latency_ms), "--reply", "echo"]
        self.child = CHILDREN.start("fake-openai", argv, env=self.place.env(), cwd=REPO,
                                    log_path=self.place.root / "fake-openai.log")
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if not self.child.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the fake OpenAI server did not start:\n{self.child.tail()}")
                time.sleep(0.05)
            self.port = int(port_file.read_text())
        except BaseException:
            self.__exit__()
            raise
        log(f"  fake OpenAI server on port {self.port}, {self.latency_ms:.0f} ms per request")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:
            CHILDREN.stop(self.child, timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=json.dumps(body or {}).encode() if method == "POST" else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._call("POST", "/config", changes)
