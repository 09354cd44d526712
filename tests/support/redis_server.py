"""A redis-server of the test's own on a free port and a given address, which a test may kill and
restart on the same port."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """`redis-server --port N --save '' --appendonly no` as a subprocess of this test: nothing is
    persisted, so a restart loses every key, as a broker restart without persistence does."""

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port()
        self.root = root
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self):  # noqa: ANN201
        import redis

        return redis.Redis(host=self.host, port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def start(self, timeout: float = 15) -> None:
        self.starts += 1
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"redis-{self.starts}.log", "w")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.root),
             # Off the loopback, protected mode refuses clients without a password; the address
             # a test binds to is a private bridge of this machine.
             "--protected-mode", "no" if self.host != "127.0.0.1" else "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}: "
                                     f"{(self.root / f'redis-{self.starts}.log').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} not up within {timeout} s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()
