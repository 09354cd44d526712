"""Fixtures of the result-reuse tests: isolation, an in-process CLI, the fake OpenAI server, a moto
S3 server, a Redis database and a PostgreSQL database per test, and `evalfleet worker` subprocesses.

Isolation is done here as well as in tests/conftest.py (`isolated`), idempotently, so these tests
stay isolated even when run on their own: every EVALFLEET_* setting is removed, the test runs in
its tmp_path with its own home and log directory, and every per-process cache (settings, engines,
cached executions, the result store, S3 clients) is forgotten before and after."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.fakes` is importable however pytest was started
    sys.path.insert(0, str(REPO_ROOT))

from store_helpers import forget_process_state  # noqa: E402

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The same pool and lock files as tests/integration, so the two suites never share a database.
REDIS_DBS = range(8, 16)
REDIS_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "evalfleet-test-redis-locks"
SERVICE_TIMEOUT_S = 5
CLI_TIMEOUT_S = 90
WORKER_READY_TIMEOUT_S = 45
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"store_rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"store_rep_{when}", None), "failed", False)
               for when in ("setup", "call"))


# -- isolation ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def store_isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from shared import storage
    from shared.settings import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(f"EVALFLEET_{name.upper()}", raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", *AWS_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / ".evalfleet"))
    monkeypatch.setenv("EVALFLEET_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(storage, "_s3_stores", {})
    forget_process_state()
    yield tmp_path
    forget_process_state()


# -- the CLI, in this process ----------------------------------------------------------------------


@dataclass
class CliResult:
    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None
    duration_s: float

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({exc}): {self}") from None

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:
        import traceback

        trace = "".join(traceback.format_exception(self.exception)) if self.exception and not isinstance(
            self.exception, SystemExit) else ""
        return (f"`evalfleet {' '.join(self.args)}` exited {self.exit_code} after {self.duration_s:.1f} s\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}\n{trace}")


@dataclass
class InProcessCli:
    """`evalfleet ...` through click's runner in this process (embedded mode), each invocation
    starting from forgotten per-process state, as a new process would."""

    history: list[CliResult] = field(default_factory=list)

    def __call__(self, *args: str, check: int | None = None) -> CliResult:
        from click.testing import CliRunner

        from services.cli import main

        forget_process_state()
        started = time.monotonic()
        try:
            outcome = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
        finally:
            forget_process_state()
        result = CliResult([str(a) for a in args], outcome.exit_code, outcome.stdout, outcome.stderr,
                           outcome.exception, time.monotonic() - started)
        self.history.append(result)
        if check is not None:
            assert result.exit_code == check, str(result)
        return result


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Iterator[InProcessCli]:
    runner = InProcessCli()
    yield runner
    if _failed(request):
        for result in runner.history:
            print(result)


@pytest.fixture(scope="session")
def mock_handover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`export eval --link-logs` of a run on a mock model, made once in an installation of its own:
    the export directory (handover.yaml, datasets/, task_results/)."""
    from store_helpers import MOCK_MODEL, write_handover_source

    from shared.settings import Settings

    root = tmp_path_factory.mktemp("mock-handover")
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(f"EVALFLEET_{name.upper()}", raising=False)
        patch.setenv("EVALFLEET_HOME", str(root / "home"))
        patch.setenv("EVALFLEET_LOG_DIR", str(root / "logs"))
        patch.chdir(root)
        try:
            cli = InProcessCli()
            report = cli("run", "-f", write_handover_source(root / "source", MOCK_MODEL), "--json", check=0).json()
            assert report["status"] == "success", report
            cli("export", "eval", "--id", report["run_id"], "--output", root / "export", "--link-logs", check=0)
        finally:
            forget_process_state()
    forget_process_state()
    return root / "export"


@pytest.fixture
def handover(mock_handover: Path, tmp_path: Path) -> Path:
    """A private copy of `mock_handover`: its run file."""
    import shutil

    target = tmp_path / "handover"
    shutil.copytree(mock_handover, target)
    return target / "handover.yaml"


# -- the CLI and workers as subprocesses -------------------------------------------------------


def evalfleet_command() -> list[str]:
    beside = Path(sys.executable).parent / "evalfleet"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from services.cli import main; main()"]


@dataclass
class SubprocessCli:
    cwd: Path
    env: dict[str, str]
    history: list[CliResult] = field(default_factory=list)

    def __call__(self, *args: str, check: int | None = None, timeout: float = CLI_TIMEOUT_S) -> CliResult:
        started = time.monotonic()
        try:
            done = subprocess.run(evalfleet_command() + [str(a) for a in args], cwd=self.cwd, env=self.env,
                                  capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise AssertionError(f"`evalfleet {' '.join(map(str, args))}` did not finish within {timeout} s\n"
                                 f"--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}") from None
        result = CliResult([str(a) for a in args], done.returncode, done.stdout, done.stderr, None,
                           time.monotonic() - started)
        self.history.append(result)
        if check is not None:
            assert result.exit_code == check, str(result)
        return result


@pytest.fixture
def subprocess_cli(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`subprocess_cli(env)`: a runner of `evalfleet ...` subprocesses in tmp_path with `env`."""
    runners: list[SubprocessCli] = []

    def make(env: dict[str, str]) -> SubprocessCli:
        runners.append(SubprocessCli(tmp_path, env))
        return runners[-1]

    yield make
    if _failed(request):
        for runner in runners:
            for result in runner.history:
                print(result)


@dataclass
class WorkerPool:
    """`evalfleet worker` subprocesses; stopped (SIGTERM, then SIGKILL of the group) at teardown."""

    cwd: Path
    processes: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)

    def start(self, count: int, env: dict[str, str], concurrency: int = 4) -> None:
        for _ in range(count):
            name = f"w{len(self.processes) + 1}"
            log_path = self.cwd / "worker-logs" / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "w") as handle:
                process = subprocess.Popen(
                    evalfleet_command() + ["worker", "-c", str(concurrency), "-n", f"{name}@%h", "-l", "INFO"],
                    cwd=self.cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            self.processes.append((name, process, log_path))
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        for name, process, log_path in self.processes:
            while " ready." not in log_path.read_text(errors="replace"):
                if process.poll() is not None:
                    raise AssertionError(f"worker {name} exited with {process.returncode}:\n"
                                         f"{log_path.read_text(errors='replace')[-4000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker {name} not ready within {WORKER_READY_TIMEOUT_S} s:\n"
                                         f"{log_path.read_text(errors='replace')[-4000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        for _, process, _ in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process, _ in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def logs(self) -> str:
        return "\n".join(f"===== {name} (exit {p.returncode}) =====\n{path.read_text(errors='replace')[-8000:]}"
                         for name, p, path in self.processes)


@pytest.fixture
def worker_pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    pool = WorkerPool(tmp_path)
    yield pool
    pool.stop()
    if _failed(request):
        print(pool.logs())


# -- the fake OpenAI server ------------------------------------------------------------------------


@pytest.fixture
def fake_llm(request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    """A fake Chat Completions server on a free loopback port (echo); counts every request."""
    server = FakeOpenAIServer(reply="echo").start()
    yield server
    server.stop()
    if _failed(request):
        print("fake OpenAI server stats:", json.dumps(server.stats(), indent=1))


# -- Redis and PostgreSQL ------------------------------------------------------------------------


@dataclass
class RedisDb:
    number: int
    url: str
    client: Any


@pytest.fixture
def redis_db() -> Iterator[RedisDb]:
    """A Redis database of this test's own (file-locked, shared with tests/integration's pool),
    flushed before and after."""
    import redis

    REDIS_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60
    handle = None
    number = None
    while handle is None:
        for db in REDIS_DBS:
            candidate = open(REDIS_LOCK_DIR / f"db{db}.lock", "w")  # noqa: SIM115 - held for the test
            try:
                fcntl.flock(candidate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                candidate.close()
                continue
            handle, number = candidate, db
            break
        else:
            if time.monotonic() > deadline:
                pytest.fail(f"no free Redis database among {list(REDIS_DBS)} within 60 s")
            time.sleep(0.2)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_timeout=SERVICE_TIMEOUT_S,
                         socket_connect_timeout=SERVICE_TIMEOUT_S)
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
        client.flushdb()
        yield RedisDb(number, f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}", client)
    finally:
        with contextlib.suppress(Exception):
            client.flushdb()
        client.close()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# The per-test PostgreSQL database is the integration suite's fixture.
from tests.integration.conftest import postgres_url  # noqa: E402, F401

# -- S3 (moto) ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m moto.server` on a free loopback port, for the whole session."""
    from tests.support.moto import moto_server

    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


@dataclass
class S3:
    client: Any
    bucket: str
    endpoint: str

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found += [item["Key"] for item in page.get("Contents", [])]
        return found

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, body: bytes | str) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)
        return self.url(key)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3:
    """boto3 (and so evalfleet) pointed at the moto server with dummy credentials; a new bucket."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3")
    bucket = f"evalfleet-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3(client, bucket, moto_endpoint)
