"""Fixtures for integration tests against real services: Redis, RabbitMQ, PostgreSQL, `evalfleet
worker` subprocesses and the fake OpenAI server.

Every test runs in its own directory (tmp_path, also EVALFLEET_HOME and EVALFLEET_LOG_DIR); in
cluster mode with its own queue name (EVALFLEET_QUEUE), its own Redis database (flushed, held under
a file lock so parallel pytest sessions never share one) and, when asked for, its own PostgreSQL
database (created empty, dropped afterwards). A service that is down fails the test: nothing here
skips.

Cluster tests request the cluster fixture (`redis_cluster`, `rabbitmq_cluster`) before `workers`,
so that workers are stopped before their broker and database are taken away."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.fakes` is importable however pytest was started
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Databases handed out to tests; 0 and the low numbers are left to developers and other suites.
REDIS_DBS = range(8, 16)
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"
SERVICE_TIMEOUT_S = 5
CLI_TIMEOUT_S = 150
WORKER_READY_TIMEOUT_S = 60
WORKER_STOP_TIMEOUT_S = 20
FINAL_STATUSES = ("success", "error", "cancelled")
# Variables of the developer's environment that would change what a test does.
FOREIGN_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001
    """Keep each phase's report on the item so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


# -- the test's own directory and settings ------------------------------------------------------


@dataclass
class Sandbox:
    """Where a test runs: its directory, settings home, log directory, and the queue its
    subprocesses use in cluster mode."""

    root: Path
    home: Path
    log_dir: Path
    queue: str
    monkeypatch: pytest.MonkeyPatch

    def setenv(self, name: str, value: str | None) -> None:
        """Set (None: unset) a variable for this process and every subprocess started afterwards,
        then make this process's settings and Celery app see it."""
        if value is None:
            self.monkeypatch.delenv(name, raising=False)
        else:
            self.monkeypatch.setenv(name, value)
        apply_settings()

    def use_broker(self, broker_url: str, database_url: str) -> None:
        """Cluster mode for every subprocess started afterwards: the broker, the database and this
        test's own queue."""
        self.monkeypatch.setenv("EVALFLEET_QUEUE", self.queue)
        self.setenv("EVALFLEET_DATABASE_URL", database_url)
        self.setenv("EVALFLEET_BROKER_URL", broker_url)

    def env(self, **extra: str | None) -> dict[str, str]:
        """The environment of a subprocess: this process's, plus `extra` (None removes a variable)."""
        env = dict(os.environ)
        for name, value in extra.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def apply_settings() -> None:
    from shared.settings import reset_settings
    from workers.app import configure_app

    reset_settings()
    configure_app()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    from shared.settings import Settings

    for name in [f"EVALFLEET_{setting.upper()}" for setting in Settings.model_fields] + list(FOREIGN_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    box = Sandbox(root=tmp_path, home=tmp_path / "home", log_dir=tmp_path / "logs",
                  queue=f"evalfleet-test-{uuid.uuid4().hex[:12]}", monkeypatch=monkeypatch)
    monkeypatch.setenv("EVALFLEET_HOME", str(box.home))
    monkeypatch.setenv("EVALFLEET_LOG_DIR", str(box.log_dir))
    # The queue is set only in cluster mode (`use_broker`): Celery keeps the queues of the first
    # declaration for the life of the process, so an in-process embedded worker would go on
    # consuming the old queue while samples are sent to the new one.
    apply_settings()
    yield box
    _forget_process_state()
    monkeypatch.undo()
    apply_settings()


def _forget_process_state() -> None:
    """Engines and cached executions of this process point at the test's database: drop them."""
    from shared.db import dispose_engines
    from workers.sample import reset_worker_state

    reset_worker_state()
    dispose_engines()
    with contextlib.suppress(ImportError):
        from workers.limits import reset_limiters

        reset_limiters()


# -- services ----------------------------------------------------------------------------------


def _redis_client(db: int):  # noqa: ANN202
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=SERVICE_TIMEOUT_S,
                       socket_connect_timeout=SERVICE_TIMEOUT_S)


@contextlib.contextmanager
def _exclusive_redis_db() -> Iterator[int]:
    """A Redis database number no other test (in this or another pytest process) holds."""
    lock_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "evalfleet-test-redis-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 120
    while True:
        for db in REDIS_DBS:
            handle = open(lock_dir / f"db{db}.lock", "w")  # noqa: SIM115 - held for the test
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield db
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free Redis database among {list(REDIS_DBS)} within 120 s")
        time.sleep(0.2)


@pytest.fixture
def redis_url(sandbox: Sandbox) -> Iterator[str]:
    """`redis://127.0.0.1:6379/<n>`: a database of our own, flushed before and after the test."""
    with _exclusive_redis_db() as db:
        client = _redis_client(db)
        try:
            client.ping()
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
        client.flushdb()
        try:
            yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
        finally:
            with contextlib.suppress(Exception):
                client.flushdb()
            client.close()


@pytest.fixture
def rabbitmq_url(sandbox: Sandbox) -> Iterator[str]:
    """The local RabbitMQ; the test's queue (EVALFLEET_QUEUE) is unique and deleted afterwards."""
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=SERVICE_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"RabbitMQ is not reachable at {RABBITMQ_URL}: {exc}")
    yield RABBITMQ_URL
    with contextlib.suppress(Exception), Connection(RABBITMQ_URL, connect_timeout=SERVICE_TIMEOUT_S) as connection:
        channel = connection.channel()
        channel.queue_delete(sandbox.queue)
        channel.exchange_delete(sandbox.queue)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"evalfleet_test_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=SERVICE_TIMEOUT_S) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    try:
        yield f"{POSTGRES_SERVER_URL}/{name}"
    finally:
        _forget_process_state()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=SERVICE_TIMEOUT_S) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(sandbox: Sandbox) -> str:
    """A SQLite database file of this test's own, shared by the CLI and worker subprocesses."""
    return f"sqlite:///{sandbox.root / 'db' / 'evalfleet.db'}"


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def evalfleet_command() -> list[str]:
    """The installed `evalfleet` console script, next to this interpreter when possible."""
    beside = Path(sys.executable).parent / "evalfleet"
    found = str(beside) if beside.exists() else shutil.which("evalfleet")
    if not found:
        pytest.fail("the `evalfleet` command is not installed: pip install -e .[test]")
    return [found]


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({exc}): {self}") from None

    def __str__(self) -> str:
        return (f"`evalfleet {' '.join(self.args)}` exited {self.returncode} after {self.duration_s:.1f} s\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")


@dataclass
class Cli:
    """Runs `evalfleet ...` as a subprocess in the sandbox, with its environment."""

    sandbox: Sandbox
    history: list[CliResult] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = CLI_TIMEOUT_S, env: dict[str, str | None] | None = None,
                 check: int | None = None) -> CliResult:
        started = time.monotonic()
        env_vars = self.sandbox.env(**(env or {}))
        env_vars["PYTHONFAULTHANDLER"] = "1"  # SIGABRT on timeout prints every thread's stack
        process = subprocess.Popen(
            evalfleet_command() + list(args), cwd=self.sandbox.root, env=env_vars, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                stdout, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            raise AssertionError(f"`evalfleet {' '.join(args)}` did not finish within {timeout} s; its "
                                 f"threads at that moment are on stderr\n--- stdout ---\n{stdout[-4000:]}\n"
                                 f"--- stderr ---\n{stderr[-12000:]}") from None
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        result = CliResult(list(args), completed.returncode, completed.stdout, completed.stderr,
                           time.monotonic() - started)
        self.history.append(result)
        if check is not None:
            assert result.returncode == check, str(result)
        return result


@pytest.fixture
def cli(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Cli]:
    runner = Cli(sandbox)
    yield runner
    if _failed(request):
        for result in runner.history:
            print(result)


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    _log: Any

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class WorkerPool:
    """Real `evalfleet worker` subprocesses sharing the sandbox's environment (broker, database,
    log directory, queue). Stopped with SIGTERM (warm shutdown), then SIGKILL."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.workers: list[WorkerProcess] = []

    def start(self, count: int, *, concurrency: int = 8, queues: str | None = None, loglevel: str = "INFO",
              env: dict[str, str | None] | None = None, wait_ready: bool = True,
              named: bool = True, args: list[str] | None = None,
              on: Callable[..., list[str]] | None = None) -> list[WorkerProcess]:
        """`named`: pass `-n w<N>@%h`; otherwise each worker takes its default name. `args`: more
        options of `evalfleet worker`. `on`: what makes a command run elsewhere (`Host.command` of
        tests/support/hosts.py: on another host)."""
        started = []
        for _ in range(count):
            number = len(self.workers) + 1
            name = f"w{number}"
            log_path = self.sandbox.root / "worker-logs" / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log_path, "w")  # noqa: SIM115 - closed in stop()
            command = ["worker", "-c", str(concurrency), "-l", loglevel] + (["-n", f"{name}@%h"] if named else [])
            command += (["-Q", queues] if queues else []) + list(args or [])
            worker_env = self.sandbox.env(**(env or {}))
            worker_env["PYTHONFAULTHANDLER"] = "1"  # `stop(dump_stacks=True)` prints every thread
            command = evalfleet_command() + command
            process = subprocess.Popen(
                on(*command) if on else command, cwd=self.sandbox.root, env=worker_env,
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
            worker = WorkerProcess(name, process, log_path, handle)
            self.workers.append(worker)
            started.append(worker)
        if wait_ready:
            for worker in started:
                self.wait_ready(worker)
        return started

    def wait_ready(self, worker: WorkerProcess, timeout: float = WORKER_READY_TIMEOUT_S) -> None:
        """Until the worker logs `<name>@<host> ready.` (needs loglevel INFO)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in worker.log():
                return
            if worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited with {worker.process.returncode} before it "
                                     f"was ready:\n{worker.log()[-6000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker {worker.name} not ready within {timeout} s:\n{worker.log()[-6000:]}")

    def names(self) -> list[str]:
        return [w.name for w in self.workers]

    def tasks_logged(self, task_name: str, event: str = "received") -> int:
        """How many `task_name` tasks every worker together logged as `event` (loglevel INFO)."""
        needle = f"Task {task_name}["
        return sum(1 for w in self.workers for line in w.log().splitlines() if needle in line and f"] {event}" in line)

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT_S, dump_stacks: bool = False) -> dict[str, int | None]:
        """SIGTERM every worker, wait, SIGKILL the ones left; returns their exit codes. With
        `dump_stacks`, SIGABRT first: each worker writes its threads' stacks to its log and dies."""
        if dump_stacks:
            for worker in self.workers:
                if worker.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.send_signal(signal.SIGABRT)
        for worker in self.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait(10)
            worker._log.close()
        return {w.name: w.process.returncode for w in self.workers}

    def logs(self, max_chars: int = 30000) -> str:
        """Each worker's log without the per-task INFO lines (counted instead)."""
        out = []
        for w in self.workers:
            lines = w.log().splitlines()
            task_lines = [line for line in lines if "INFO/MainProcess] Task evalfleet." in line]
            other = "\n".join(line for line in lines if "INFO/MainProcess] Task evalfleet." not in line)
            out.append(f"===== worker {w.name} (exit {w.process.returncode}; {len(task_lines)} task lines "
                       f"left out; last: {task_lines[-1] if task_lines else '-'}) =====\n{other[-max_chars:]}")
        return "\n".join(out)


@pytest.fixture
def workers(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    """Start with `workers.start(2)` after setting the broker and database; stopped at teardown,
    and their logs printed when the test failed."""
    pool = WorkerPool(sandbox)
    yield pool
    failed = _failed(request)
    pool.stop(dump_stacks=failed)
    if failed:
        print(pool.logs())


# -- cluster setups ----------------------------------------------------------------------------


@pytest.fixture
def redis_cluster(sandbox: Sandbox, redis_url: str, sqlite_url: str) -> Sandbox:
    """Cluster mode on Redis with a SQLite database file of the test's own."""
    sandbox.use_broker(redis_url, sqlite_url)
    return sandbox


@pytest.fixture
def rabbitmq_cluster(sandbox: Sandbox, rabbitmq_url: str, postgres_url: str) -> Sandbox:
    """Cluster mode on RabbitMQ with a PostgreSQL database of the test's own."""
    sandbox.use_broker(rabbitmq_url, postgres_url)
    return sandbox


# -- the fake OpenAI server --------------------------------------------------------------------


@pytest.fixture
def fake_openai(request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    """A fake Chat Completions server on a free loopback port (echo, no latency, no faults);
    reconfigure it with `fake_openai.configure(...)`."""
    server = FakeOpenAIServer().start()
    yield server
    server.stop()
    if _failed(request):
        print("fake OpenAI server stats:", json.dumps(server.stats(), indent=1))


# -- run files and logs ------------------------------------------------------------------------


def write_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def qa_rows(count: int, prefix: str = "s") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i:05d}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(count)]


def write_run_file(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def qa_run_file(root: Path, count: int, *, key: str = "itest", model_key: str = "mock$target",
                models: list[dict[str, Any]] | None = None, scorers: list[str] | None = None,
                prompt_template: str | None = None, rows: list[dict[str, Any]] | None = None,
                fail_on_error: Any = None) -> Path:
    """A run file of one `qa` task specification over a generated dataset."""
    write_dataset(root / "data" / f"{key}.jsonl", rows if rows is not None else qa_rows(count))
    task_config: dict[str, Any] = {"scorers": scorers or ["includes"]}
    if prompt_template is not None:
        task_config["prompt_template"] = prompt_template
    evaluation: dict[str, Any] = {
        "key": key,
        "display_name": f"Integration test {key}",
        "task_specifications": [
            {"key": f"{key}-qa", "task_key": "qa", "model_key": model_key, "dataset_key": f"{key}-data",
             "task_config": task_config},
        ],
    }
    if fail_on_error is not None:
        evaluation["fail_on_error"] = fail_on_error
    document: dict[str, Any] = {"datasets": [{"key": f"{key}-data", "path": f"data/{key}.jsonl"}]}
    if models:
        document["models"] = models
    document["evaluation"] = evaluation
    return write_run_file(root / f"{key}.yaml", document)


def read_log(location: str | Path) -> dict[str, Any]:
    """A task result log as plain JSON, parsed strictly (no NaN), and validated against the schema."""
    from shared.log import TaskResultLog

    text = Path(location).read_text(encoding="utf-8")

    def _reject(constant: str) -> None:
        raise AssertionError(f"the log holds the non-JSON constant {constant}")

    document = json.loads(text, parse_constant=_reject)
    TaskResultLog.model_validate(document)
    return document


def only_log(report: dict[str, Any]) -> dict[str, Any]:
    """The log of a run report's single task result."""
    assert len(report["task_results"]) == 1, report
    task_result = report["task_results"][0]
    assert task_result["log_path"], report
    return read_log(task_result["log_path"])


def poll(condition: Callable[[], Any], *, timeout: float, interval: float = 0.2, message: str = "") -> Any:
    """Call `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)


def assert_complete_log(log: dict, count: int, worker_names: list[str] | None) -> None:
    """Every sample exactly once, all correct, and every named worker did some of them (None:
    one worker, whatever its name, did them all)."""
    assert log["status"] == "success", log.get("error")
    assert log["sample_count"] == count
    samples = log["samples"]
    ids = [s["id"] for s in samples]
    assert len(samples) == count
    assert len(set(ids)) == count, [i for i, n in Counter(ids).items() if n > 1][:10]
    assert set(ids) == {f"s{i:05d}" for i in range(count)}
    assert log["sample_ids"] == ids  # in selection order, the same as the samples
    assert [s["position"] for s in samples] == list(range(count))
    assert log["samples_errored"] == 0
    assert all(s["error"] is None for s in samples)
    assert all(s["output"] == s["target"] for s in samples)
    assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
    assert log["results"]["includes"]["scored"] == count
    if worker_names is None:
        assert len({s["worker"] for s in samples}) == 1 and samples[0]["worker"], samples[0]
        return
    # Worker names are `<name>@<host>`; each worker process evaluated some samples.
    by_worker = Counter(s["worker"].split("@", 1)[0] for s in samples)
    assert set(by_worker) == set(worker_names), by_worker
    assert all(n > 0 for n in by_worker.values()), by_worker
