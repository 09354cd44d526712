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
@click.option("--probe", is_flag=True,
              help="Start nothing: exit 0 if the worker writing --heartbeat-file beat within --max-age "
              "seconds, 1 otherwise (a liveness probe).")
@click.option("--max-age", type=click.FloatRange(0, min_open=True),
              help="With --probe: seconds a heartbeat stays fresh (default 60).")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus metrics over HTTP on this port (default: none).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="Address of the metrics server.")
@settings_options
def worker(concurrency: int | None, queues: str | None, hostname: str | None, loglevel: str,
           heartbeat_file: str | None, probe: bool, max_age: float | None, metrics_port: int | None,
           metrics_host: str, **options: str | None) -> None:
    """Process samples from the broker; start as many as you like on any host.

    SIGTERM or Ctrl+C stops gracefully: samples in flight get EVALFLEET_WORKER_GRACE seconds, the
    others go back to the queue; a second signal stops at once."""
    if probe:
        probe_heartbeat(heartbeat_file, max_age)
        return
    apply_settings(concurrency=concurrency, **options)
    settings = get_settings()
    if settings.embedded:
        raise BadInput("a worker needs a broker: set EVALFLEET_BROKER_URL (redis:// or amqp://)")
    from workers.process import run_worker

    run_worker(concurrency=settings.concurrency, node_name=hostname, loglevel=loglevel,
               queues=[q.strip() for q in (queues or settings.queue).split(",") if q.strip()],
               heartbeat_file=heartbeat_file,
               metrics_address=(metrics_host, metrics_port) if metrics_port else None)


def probe_heartbeat(heartbeat_file: str | None, max_age: float | None) -> None:
    from workers.heartbeat import PROBE_MAX_AGE_S, stale_heartbeat

    if not heartbeat_file:
        raise BadInput("--probe reads the worker's heartbeat file: name it with --heartbeat-file")
    problem = stale_heartbeat(heartbeat_file, PROBE_MAX_AGE_S if max_age is None else max_age)
    if problem:
        raise click.ClickException(problem)


COMMANDS = [worker]
