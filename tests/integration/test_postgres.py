"""PostgreSQL as the database of the embedded pipeline, and schema migrations on an empty database."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import assert_complete_log, only_log, qa_run_file, read_log

pytestmark = pytest.mark.services

TABLES = {"entities", "runs", "task_results", "sample_results", "alembic_version"}


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import shared.db

    config = Config()
    config.set_main_option("script_location", str(Path(shared.db.__file__).parent / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def tables_and_revision(url: str) -> tuple[set[str], list[str]]:
    with psycopg.connect(url) as connection:
        tables = {name for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        revisions = []
        if "alembic_version" in tables:
            revisions = [r for (r,) in connection.execute("SELECT version_num FROM alembic_version")]
    return tables, revisions


def test_embedded_run_via_cli(sandbox, postgres_url, cli):
    sandbox.setenv("EVALFLEET_DATABASE_URL", postgres_url)
    count = 300
    run_file = qa_run_file(sandbox.root, count, key="pgcli")

    report = cli("run", "-f", str(run_file), "--json", check=0).json()

    assert report["status"] == "success"
    assert_complete_log(only_log(report), count, None)
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT count(*) FROM sample_results").fetchone() == (count,)
        assert connection.execute("SELECT status, done, total FROM task_results").fetchall() == [
            ("success", count, count)]
    # Nothing went to the default SQLite database.
    assert not (sandbox.home / "evalfleet.db").exists()
    # `status` reads the same run back from PostgreSQL.
    status = cli("status", report["run_id"], "--json", check=0).json()
    assert status["status"] == "success" and status["task_results"][0]["done"] == count


def test_embedded_pipeline_in_process(sandbox, postgres_url):
    """The library path the CLI wraps: submit, an in-process worker, wait for the run."""
    from services.embedded import embedded_worker
    from services.runs import wait_for_run
    from services.submitter import submit

    sandbox.setenv("EVALFLEET_DATABASE_URL", postgres_url)
    count = 50
    run_file = qa_run_file(sandbox.root, count, key="pginproc")

    with embedded_worker(8):
        run_id = submit(run_file)
        report = wait_for_run(run_id, timeout_s=60)

    assert report.status == "success", report
    [task_result] = report.task_results
    assert (task_result.done, task_result.errors) == (count, 0)
    assert_complete_log(read_log(task_result.log_path), count, None)
    tables, _ = tables_and_revision(postgres_url)
    assert TABLES <= tables


def test_embedded_samples_name_the_embedded_worker(sandbox, postgres_url):
    from services.embedded import embedded_worker
    from services.runs import wait_for_run
    from services.submitter import submit

    sandbox.setenv("EVALFLEET_DATABASE_URL", postgres_url)
    run_file = qa_run_file(sandbox.root, 3, key="pgname")
    with embedded_worker(2):
        report = wait_for_run(submit(run_file), timeout_s=60)
    assert report.status == "success", report
    workers = {s["worker"] for s in read_log(report.task_results[0].log_path)["samples"]}
    assert workers == {"embedded@localhost"}


def test_migrations_apply_to_an_empty_database(sandbox, postgres_url):
    from sqlalchemy import inspect

    from shared.db import dispose_engines, get_engine, metadata

    assert tables_and_revision(postgres_url) == (set(), [])

    engine = get_engine(postgres_url)

    tables, revisions = tables_and_revision(postgres_url)
    assert TABLES <= tables
    assert revisions == [head_revision()]
    # The migrated schema is the one the code declares: every table and column.
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
    unique = {u["name"] for u in inspector.get_unique_constraints("sample_results")}
    assert "uq_sample_results_sample_epoch" in unique

    # Applying again (a new process, the same database) changes nothing.
    dispose_engines()
    get_engine(postgres_url)
    assert tables_and_revision(postgres_url) == (tables, revisions)


def test_concurrent_first_use_migrates_once(sandbox, postgres_url):
    """Several processes starting together on an empty database: one migrates, all succeed."""
    script = textwrap.dedent(f"""
        from shared.db import get_engine
        engine = get_engine({postgres_url!r})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM sample_results")
        print("ok")
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=sandbox.root, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=sandbox.env())
                 for _ in range(3)]
    outputs = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        outputs.append((process.returncode, output))
    assert all(code == 0 and "ok" in out for code, out in outputs), outputs
    _, revisions = tables_and_revision(postgres_url)
    assert revisions == [head_revision()]
