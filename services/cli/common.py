"""What every command shares: exit codes, the settings options, turning library errors into one
line and an exit code."""

from __future__ import annotations

import click
from rich.console import Console

from shared.errors import EvalfleetError, SpecError
from shared.settings import configure, get_settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# What a shell reports for a command stopped by Ctrl+C (128 + SIGINT).
EXIT_INTERRUPTED = 130
err = Console(stderr=True, highlight=False)


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def settings_options(command):  # noqa: ANN001, ANN201
    """Options every command shares; they override EVALFLEET_* variables and `.env`."""
    command = click.option("--database-url", help="SQLAlchemy database URL [EVALFLEET_DATABASE_URL].")(command)
    command = click.option("--log-dir", help="Log directory or s3://bucket/prefix [EVALFLEET_LOG_DIR].")(command)
    return command


def apply_settings(database_url: str | None = None, log_dir: str | None = None, **other: object) -> None:
    configure(database_url=database_url, log_dir=log_dir, **other)
    from workers.app import configure_app

    configure_app(get_settings())


def fail(exc: Exception) -> None:
    """Raise the click exception for a library error: bad input exits 2, anything else 1."""
    if isinstance(exc, SpecError):
        raise BadInput(str(exc))
    raise click.ClickException(str(exc))


def say(message: str) -> None:
    """One line on stderr, never markup-interpreted (messages carry user text)."""
    err.print(message, markup=False, soft_wrap=True)


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "BadInput", "EvalfleetError",
           "apply_settings", "err", "fail", "say", "settings_options"]
