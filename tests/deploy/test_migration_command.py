"""`evalfleet db upgrade`, the command of the Kubernetes migration Job and the compose `migrate`
service: it brings an empty database to the newest schema revision and prints it, and does
nothing more when run again."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic.config import Config
from alembic.script import ScriptDirectory

import shared


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(Path(shared.__file__).parent / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_empty_sqlite_database_is_brought_to_the_newest_schema(cli, sqlite_url):
    first = cli("db", "upgrade", env={"EVALFLEET_DATABASE_URL": sqlite_url}, check=0)
    assert first.stdout.strip() == head_revision()
    assert {"runs", "task_results", "workers", "alembic_version"} <= tables(sqlite_url)
    again = cli("db", "upgrade", "--database-url", sqlite_url, check=0)
    assert again.stdout.strip() == head_revision()


def test_an_empty_postgresql_database_is_brought_to_the_newest_schema_without_showing_its_password(
        cli, postgres_url):
    assert tables(postgres_url) == set()
    url = postgres_url.replace("postgres@", "postgres:not-shown@")  # trust auth ignores the password
    result = cli("db", "upgrade", env={"EVALFLEET_DATABASE_URL": url}, check=0)
    assert result.stdout.strip() == head_revision()
    assert "not-shown" not in result.stdout + result.stderr
    assert {"runs", "task_results", "workers", "alembic_version"} <= tables(postgres_url)
