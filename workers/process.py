"""One `evalfleet worker` process: a Celery worker on a thread pool with a name of its own, a
heartbeat (workers.heartbeat), a graceful stop (workers.shutdown), and one line about itself
instead of Celery's banner."""

from __future__ import annotations

import os
import socket
import sys
import warnings

from celery import signals
from celery.platforms import SecurityWarning

from shared.settings import get_settings
from workers.app import app, broker_address
from workers.heartbeat import Heartbeat
from workers.shutdown import GracefulStop


def default_node_name() -> str:
    """Unique per process, so two workers on one host are told apart in every sample they record
    (Celery's default, `celery@<host>`, is the same for both)."""
    return f"evalfleet-{os.getpid()}@{socket.gethostname()}"


def expand_node_name(name: str) -> str:
    """Celery's `%h` (host name), `%n` (short host name) and `%d` (domain) in a `-n` value."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


def run_worker(*, concurrency: int, queues: list[str], node_name: str | None, loglevel: str,
               heartbeat_file: str | None = None, metrics_address: tuple[str, int] | None = None) -> None:
    """Run until stopped (SIGTERM/SIGINT: graceful, see workers.shutdown). `metrics_address`:
    serve Prometheus metrics there (host, port). One process serves all of a worker's samples
    (threads), so its metrics need no multiprocess mode."""
    from workers.sample import prepare_worker

    settings = get_settings()
    name = expand_node_name(node_name) if node_name else default_node_name()
    heartbeat = Heartbeat(name, queues, concurrency, heartbeat_file)
    stop = GracefulStop(settings.worker_grace, on_exit=heartbeat.stop,
                        redis_broker=(settings.broker_url or "").startswith(("redis://", "rediss://")))

    @signals.worker_ready.connect(weak=False)
    def _ready(**_kwargs) -> None:  # noqa: ANN003
        stop.install()
        heartbeat.start()
        print(f"evalfleet worker {name}: ready; queues {', '.join(queues)}, concurrency {concurrency}, "
              f"broker {broker_address()}" + (f"; metrics on http://{metrics_address[0]}:{metrics_address[1]}/metrics"
                                              if metrics_address else ""), file=sys.stderr, flush=True)

    # Celery warns a root user to pass --uid, which this command does not take; containers
    # built from deploy/ run as a user of their own.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    prepare_worker()
    if metrics_address is not None:
        from workers.telemetry import start_exporter

        host, port = metrics_address
        try:
            start_exporter(port, host, queues)
        except OSError as exc:
            raise SystemExit(f"evalfleet worker {name}: cannot serve metrics on {host}:{port}: {exc}") from None
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle", f"--queues={','.join(queues)}", f"--hostname={name}"]
    if loglevel.upper() != "DEBUG":
        argv.insert(0, "--quiet")  # Celery's banner advises options this command does not take
    try:
        app.worker_main(argv)
    finally:
        heartbeat.stop()
