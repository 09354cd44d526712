"""`evalfleet db`: the database schema, for a deployment's migration step (every process also
migrates on first use; a step of its own lets a cluster do it once, before anything starts)."""

from __future__ import annotations

import click

from services.cli.common import apply_settings, say, settings_options


@click.group()
def db() -> None:
    """The database schema (alembic migrations in shared/migrations/)."""


@db.command()
@settings_options
def upgrade(**options: str | None) -> None:
    """Bring the database to the newest schema revision and print that revision."""
    from shared.db import get_engine, schema_revision
    from shared.redact import mask_url
    from shared.settings import get_settings

    apply_settings(**options)
    engine = get_engine()
    revision = schema_revision(engine)
    click.echo(revision)
    say(f"database {mask_url(get_settings().effective_database_url)} at schema revision {revision}")


COMMANDS = [db]
