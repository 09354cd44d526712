"""Fixtures for the results API: a real `evalfleet serve` process on a free loopback port, over the
sandbox's database (SQLite or PostgreSQL) and broker, with workers from the integration fixtures,
and tokens made with the real `evalfleet token create`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration import conftest as integration  # noqa: E402
from tests.integration.conftest import Sandbox, _failed, evalfleet_command  # noqa: E402

pytest_runtest_makereport = integration.pytest_runtest_makereport
sandbox = integration.sandbox
redis_url = integration.redis_url
postgres_url = integration.postgres_url
sqlite_url = integration.sqlite_url
cli = integration.cli
workers = integration.workers
redis_cluster = integration.redis_cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """An `evalfleet serve` subprocess; `get`/`post` are httpx calls with an optional token."""

    port: int
    process: subprocess.Popen
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, token: str | None = None, **kwargs):  # noqa: ANN003, ANN201
        import httpx

        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, token: str | None = "read", **kwargs):  # noqa: ANN003, ANN201
        return self.request("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = "submit", **kwargs):  # noqa: ANN003, ANN201
        return self.request("POST", path, token, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ServerFactory:
    sandbox: Sandbox
    started: list[Server] = field(default_factory=list)

    def __call__(self, *args: str, env: dict[str, str | None] | None = None, tokens: bool = True) -> Server:
        port = free_port()
        log_path = self.sandbox.root / "server-logs" / f"serve-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as handle:
            process = subprocess.Popen(
                evalfleet_command() + ["serve", "--port", str(port), *args], cwd=self.sandbox.root,
                env=self.sandbox.env(**(env or {})), stdout=handle, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(port, process, log_path)
        self.started.append(server)
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.request("GET", "/health").status_code == 200:
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`evalfleet serve` did not start (exit {process.poll()}):\n{server.log()[-4000:]}")
            time.sleep(0.1)
        if tokens:
            # The admin token through the real command; the others in this process, over the same
            # database (each command is an interpreter start, seconds per server).
            server.tokens["admin"] = create_token(self.sandbox, "test-admin", "admin")
            from services.tokens import create_token as make_token
            from shared.db import dispose_engines

            for scope in ("read", "submit"):
                server.tokens[scope] = make_token(f"test-{scope}", scope)[0]
            dispose_engines()
        return server

    def stop(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGTERM)
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.process.pid, signal.SIGKILL)
                    server.process.wait(10)


def create_token(sandbox: Sandbox, name: str, scope: str) -> str:
    done = subprocess.run(evalfleet_command() + ["token", "create", "--name", name, "--scope", scope, "--json"],
                          cwd=sandbox.root, env=sandbox.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["token"]


@pytest.fixture
def server(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """`server(*serve_args, env=...)` starts `evalfleet serve` and returns a `Server` with tokens
    of each scope (`server.tokens["read"]`...); every server is stopped at teardown."""
    factory = ServerFactory(sandbox)
    yield factory
    factory.stop()
    if _failed(request):
        for started in factory.started:
            print(f"===== evalfleet serve on port {started.port} =====\n{started.log()[-6000:]}")
