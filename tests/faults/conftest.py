"""Fixtures for the fault-tolerance tests: everything from tests/integration/conftest.py (sandbox,
Redis/RabbitMQ/PostgreSQL, worker subprocesses, the fake OpenAI server), plus

* `background`: `evalfleet ...` subprocesses that keep running while the test acts (a waiting
  `evalfleet run`), killed at teardown if still alive;
* `private_redis`: a redis-server of the test's own on a free port (tests/support/redis_server.py),
  which the test may kill and restart on the same port;
* small helpers to write run files, poll the database and read logs.

A service that is down fails the test: nothing here skips."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration import conftest as integration  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    CliResult,
    Sandbox,
    _failed,
    evalfleet_command,
    write_dataset,
    write_run_file,
)
from tests.support.redis_server import PrivateRedis  # noqa: E402

# The integration fixtures, re-exported so pytest finds them for the tests here; with them the hook
# that lets fixtures see whether the test failed.
pytest_runtest_makereport = integration.pytest_runtest_makereport
sandbox = integration.sandbox
redis_url = integration.redis_url
rabbitmq_url = integration.rabbitmq_url
postgres_url = integration.postgres_url
sqlite_url = integration.sqlite_url
cli = integration.cli
workers = integration.workers
redis_cluster = integration.redis_cluster
rabbitmq_cluster = integration.rabbitmq_cluster
fake_openai = integration.fake_openai

FINAL_STATUSES = ("success", "error", "cancelled")
BACKGROUND_TIMEOUT_S = 120


# -- this process's broker connections ---------------------------------------------------------


def _forget_broker_connections() -> None:
    """Celery keeps this process's broker connection and producer pools for the broker of their
    first use; tests here submit in process to a new broker (Redis database, private Redis) each."""
    from kombu import pools

    from workers.app import app

    app.amqp._producer_pool = None
    app._pool = None
    with contextlib.suppress(Exception):
        pools.reset()  # closes the pools and empties kombu's registries of them


@pytest.fixture(autouse=True)
def fresh_broker_connections() -> Iterator[None]:
    _forget_broker_connections()
    yield
    _forget_broker_connections()


# -- background CLI processes ------------------------------------------------------------------


@dataclass
class BackgroundCli:
    args: list[str]
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    started: float
    result: CliResult | None = None

    def wait(self, timeout: float = BACKGROUND_TIMEOUT_S) -> CliResult:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`evalfleet {' '.join(self.args)}` did not finish within {timeout} s\n"
                                 f"--- stdout ---\n{self.stdout()[-4000:]}\n"
                                 f"--- stderr ---\n{self.stderr()[-4000:]}") from None
        self.result = CliResult(self.args, self.process.returncode, self.stdout(), self.stderr(),
                                time.monotonic() - self.started)
        return self.result

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Background:
    sandbox: Sandbox
    processes: list[BackgroundCli] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str | None] | None = None) -> BackgroundCli:
        number = len(self.processes) + 1
        out_dir = self.sandbox.root / "cli-logs"
        out_dir.mkdir(parents=True, exist_ok=True)
        stdout_path, stderr_path = out_dir / f"cli{number}.out", out_dir / f"cli{number}.err"
        with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
            process = subprocess.Popen(
                evalfleet_command() + list(args), cwd=self.sandbox.root, env=self.sandbox.env(**(env or {})),
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        started = BackgroundCli(list(args), process, stdout_path, stderr_path, time.monotonic())
        self.processes.append(started)
        return started

    def stop(self) -> None:
        for item in self.processes:
            if item.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    item.process.wait(10)


@pytest.fixture
def background(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Background]:
    pool = Background(sandbox)
    yield pool
    pool.stop()
    if _failed(request):
        for item in pool.processes:
            print(f"===== background `evalfleet {' '.join(item.args)}` (exit {item.process.returncode}) =====")
            print(item.stdout()[-4000:])
            print(item.stderr()[-4000:])


# -- a private redis-server --------------------------------------------------------------------


@pytest.fixture
def private_redis(sandbox: Sandbox) -> Iterator[PrivateRedis]:
    server = PrivateRedis(sandbox.root / "private-redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# -- run files, the database, logs -------------------------------------------------------------


def rows(count: int, prefix: str = "s") -> list[dict[str, Any]]:
    """Samples `s00`, `s01`, ...; input `question NN` (unique substrings), target `answer-NN`."""
    return [{"id": f"{prefix}{i:02d}", "input": f"question {i:02d}", "target": f"answer-{i:02d}"}
            for i in range(count)]


# The prompt carries the target, so the fake server's echo answers every sample correctly.
ECHO_TEMPLATE = "{input} | {target}"


def prompt_of(row: dict[str, Any]) -> str:
    return ECHO_TEMPLATE.format(**row)


def openai_model(key: str, server, **extra: Any) -> dict[str, Any]:  # noqa: ANN001
    return {"key": key, "provider": "openai", "name": "fake-model", "base_url": server.base_url,
            "api_key_env": "FAKE_OPENAI_KEY", "timeout": 10, **extra}


def run_file(root: Path, key: str, samples: list[dict[str, Any]], *, models: list[dict[str, Any]],
             specs: list[dict[str, Any]] | None = None, fail_on_error: Any = None,
             **evaluation_extra: Any) -> Path:
    """A run file of `qa` specifications (default: one over the first model) on one dataset."""
    write_dataset(root / "data" / f"{key}.jsonl", samples)
    if specs is None:
        specs = [{"key": f"{key}-qa", "model_key": models[0]["key"]}]
    evaluation: dict[str, Any] = {
        "key": key,
        "display_name": f"Fault test {key}",
        "task_specifications": [
            {"task_key": "qa", "dataset_key": f"{key}-data",
             "task_config": {"scorers": ["includes"], "prompt_template": ECHO_TEMPLATE}, **spec}
            for spec in specs
        ],
        **evaluation_extra,
    }
    if fail_on_error is not None:
        evaluation["fail_on_error"] = fail_on_error
    document = {"datasets": [{"key": f"{key}-data", "path": f"data/{key}.jsonl"}], "models": models,
                "evaluation": evaluation}
    return write_run_file(root / f"{key}.yaml", document)


def read_log(location: str | Path) -> dict[str, Any]:
    """A task result log, parsed strictly and validated against the schema."""
    from shared.log import TaskResultLog

    def _reject(constant: str) -> None:
        raise AssertionError(f"the log holds the non-JSON constant {constant}")

    document = json.loads(Path(location).read_text(encoding="utf-8"), parse_constant=_reject)
    TaskResultLog.model_validate(document)
    return document


def logs_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task result log of a run report, by specification key."""
    out = {}
    for task_result in report["task_results"]:
        assert task_result["log_path"], report
        out[task_result["key"]] = read_log(task_result["log_path"])
    return out


def sqlite_query(database_url: str, sql: str, *params: Any) -> list[tuple]:
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def wait_finished(cli, run_id: str, timeout: float = 90) -> dict[str, Any]:  # noqa: ANN001
    """Poll `evalfleet status RUN_ID --json` until the run is finished; returns the report."""
    deadline = time.monotonic() + timeout
    while True:
        result = cli("status", run_id, "--json")
        report = result.json()
        if report["status"] in FINAL_STATUSES:
            return report
        assert result.returncode == 0, str(result)
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} not finished within {timeout} s: {report}")
        time.sleep(0.5)


def poll(condition, *, timeout: float, interval: float = 0.1, message: str = "") -> Any:  # noqa: ANN001
    return integration.poll(condition, timeout=timeout, interval=interval, message=message)


def assert_every_sample_once(log: dict[str, Any], ids: list[str]) -> None:
    samples = log["samples"]
    got = [s["id"] for s in samples]
    assert len(got) == len(ids), (len(got), len(ids))
    assert len(set(got)) == len(got), sorted(i for i in set(got) if got.count(i) > 1)
    assert set(got) == set(ids)
    assert log["sample_ids"] == got
    assert log["sample_count"] == len(ids)


def submit_in_process(path: Path) -> str:
    """Submit a run file from this process (quicker than `evalfleet run --detach`); the run id."""
    from services.submitter import submit

    return submit(path)


def wait_in_process(run_id: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for a run from this process; returns the report as `evalfleet run --json` prints it."""
    from services.cli.output import report_json
    from services.runs import wait_for_run

    report = wait_for_run(run_id, timeout_s=timeout, poll_s=0.1)
    assert report.finished, f"run {run_id} not finished within {timeout} s: {report}"
    return json.loads(report_json(report))


def run_progress(run_id: str) -> tuple[int, int, str]:
    """(done, total, status) of a run, read from this process."""
    from services.runs import run_report

    report = run_report(run_id)
    return report.done, report.total, report.status


def use_cluster(sandbox: Sandbox, broker_url: str, database_url: str) -> None:
    """Cluster mode for this process and every subprocess started afterwards, on the test's own
    queue (what the `redis_cluster` fixture does, for a broker of the test's own)."""
    sandbox.monkeypatch.setenv("EVALFLEET_QUEUE", sandbox.queue)
    sandbox.setenv("EVALFLEET_DATABASE_URL", database_url)
    sandbox.setenv("EVALFLEET_BROKER_URL", broker_url)


# -- a private PostgreSQL, a proxy that cuts links ---------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL server of the test's own, which the test may stop and start again."""
    from tests.support.postgres import PrivatePostgres

    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        from shared.db import dispose_engines

        dispose_engines()
        server.destroy()


def fake_openai_model(server, **extra: Any) -> dict[str, Any]:  # noqa: ANN001
    """A model on the fake OpenAI server with the key variable the sandbox sets."""
    return openai_model("fake", server, **extra)


def requests_per_prompt(server) -> Counter:  # noqa: ANN001
    """How many completion requests the fake server received for each prompt (last user message)."""
    return Counter(entry["prompt"] for entry in server.requests_log())
