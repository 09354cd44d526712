"""`evalfleet worker`: a process that runs samples from the broker."""

from __future__ import annotations

import click

from services.cli.common import BadInput, apply_settings, settings_options
from shared.settings import get_settings


@click.command()
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Samples in flight (threads) [EVALFLEET_CONCURRENCY].")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: evalfleet).")
@click.option("-n", "--hostname", help="Worker name, e.g. worker1@%h (default: evalfleet-<pid>@<host>).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="Logging level.")
@click.option("--heartbeat-file", type=click.Path(dir_okay=False),
              help="Also write the heartbeat time into this file (for liveness probes).")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus metrics over HTTP on this port (default: none).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="Address of the metrics server.")
@settings_options
def worker(concurrency: int | None, queues: str | None, hostname: str | None, loglevel: str,
           heartbeat_file: str | None, metrics_port: int | None, metrics_host: str,
           **options: str | None) -> None:
    """Process samples from the broker; start as many as you like on any host.

    SIGTERM or Ctrl+C stops gracefully: samples in flight get EVALFLEET_WORKER_GRACE seconds, the
    others go back to the queue; a second signal stops at once."""
    apply_settings(concurrency=concurrency, **options)
    settings = get_settings()
    if settings.embedded:
        raise BadInput("a worker needs a broker: set EVALFLEET_BROKER_URL (redis:// or amqp://)")
    from workers.process import run_worker

    run_worker(concurrency=settings.concurrency, node_name=hostname, loglevel=loglevel,
               queues=[q.strip() for q in (queues or settings.queue).split(",") if q.strip()],
               heartbeat_file=heartbeat_file,
               metrics_address=(metrics_host, metrics_port) if metrics_port else None)


COMMANDS = [worker]
