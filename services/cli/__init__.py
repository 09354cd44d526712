"""The `evalfleet` command: a click group assembled from one module per command group, each
command a few lines over the library.

Exit codes: 0 the run succeeded; 1 it finished with status error or cancelled, or a service
failed; 2 bad input (the run file, a dataset, an option); nothing is registered or submitted then;
130 interrupted (Ctrl+C)."""

from __future__ import annotations

import warnings

import click

from services.cli import analysis, database, entities, logs, maintenance, runs, serve, worker
from services.cli.common import err
from shared.malloc import return_large_blocks
from shared.outages import is_outage


class EvalfleetGroup(click.Group):
    """Services that are away end a command with one line naming them (exit 1), never a traceback."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if isinstance(exc, click.exceptions.Exit | click.ClickException | click.Abort) or not is_outage(exc):
                raise
            raise click.ClickException(unreachable(exc)) from None


def unreachable(exc: BaseException) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    from shared.redact import mask_url, scrub
    from shared.settings import get_settings

    settings = get_settings()
    if isinstance(exc, SQLAlchemyError):
        what = f"the database ({mask_url(settings.effective_database_url)})"
    else:
        what = f"the broker or Redis ({mask_url(settings.broker_url or settings.redis_url or '')})"
    detail = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, limit=300)
    return f"{what} is unreachable: {detail}; try again once it is back"


@click.group(cls=EvalfleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalfleet")
def main() -> None:
    """Evaluate language models and datasets, from a laptop to a cluster.

    With no configuration everything runs in this process (SQLite under ./.evalfleet, logs under
    ./logs). Set EVALFLEET_BROKER_URL (redis:// or amqp://) to submit to `evalfleet worker`s.
    """
    return_large_blocks()
    warnings.simplefilter("default", DeprecationWarning)
    warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {message}")


for module in (runs, logs, analysis, entities, serve, worker, maintenance, database):
    for command in module.COMMANDS:
        main.add_command(command)
