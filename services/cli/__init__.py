"""The `evalfleet` command: a click group assembled from one module per command group, each
command a few lines over the library.

Exit codes: 0 the run succeeded; 1 it finished with status error or cancelled, or a service
failed; 2 bad input (the run file, a dataset, an option); nothing is registered or submitted then;
130 interrupted (Ctrl+C)."""

from __future__ import annotations

import warnings

import click

from services.cli import entities, maintenance, runs, worker
from services.cli.common import err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalfleet")
def main() -> None:
    """Evaluate language models and datasets, from a laptop to a cluster.

    With no configuration everything runs in this process (SQLite under ./.evalfleet, logs under
    ./logs). Set EVALFLEET_BROKER_URL (redis:// or amqp://) to submit to `evalfleet worker`s.
    """
    warnings.simplefilter("default", DeprecationWarning)
    warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {message}")


for module in (runs, entities, worker, maintenance):
    for command in module.COMMANDS:
        main.add_command(command)
