"""SQL over results with DuckDB. The views `runs`, `task_results`, `samples` and `scores` (their
columns: services.analysis.tables.TABLES) read Parquet files: a directory given with `--parquet`
(`evalfleet export parquet` wrote it), or else this installation's results exported to
`EVALFLEET_HOME/parquet`, refreshed whenever the database has changed since."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from services.analysis.tables import TABLES, export_parquet
from shared.db import get_engine, runs, sample_results, task_results
from shared.errors import SpecError
from shared.settings import get_settings

STAMP = "export.json"


def _fingerprint() -> dict[str, Any]:
    """What changes whenever results do: counts and the newest ids and statuses."""
    with get_engine().connect() as connection:
        run_count, newest = connection.execute(select(func.count(), func.max(runs.c.created_at))).one()
        statuses = connection.execute(select(func.count(), func.sum(task_results.c.done)).where(
            task_results.c.status.in_(("success", "error", "cancelled")))).one()
        rows = connection.execute(select(func.count(), func.max(sample_results.c.id))).one()
    return {"runs": run_count, "newest": str(newest), "finished": list(statuses), "samples": list(rows)}


def current_parquet() -> Path:
    """EVALFLEET_HOME/parquet, exported again when the database changed since the last export."""
    directory = get_settings().home.resolve() / "parquet"
    stamp = directory / STAMP
    fingerprint = _fingerprint()
    if not stamp.exists() or json.loads(stamp.read_text()) != fingerprint or not all(
            (directory / f"{name}.parquet").exists() for name in TABLES):
        export_parquet(directory)
        stamp.write_text(json.dumps(fingerprint))
    return directory


def connect(parquet: str | Path | None = None):  # noqa: ANN201 - a duckdb connection
    """A DuckDB connection with the four views over `parquet` (default: `current_parquet()`)."""
    import duckdb

    directory = Path(parquet) if parquet is not None else current_parquet()
    missing = [name for name in TABLES if not (directory / f"{name}.parquet").exists()]
    if missing:
        raise SpecError(str(directory), None, f"no {', '.join(f'{m}.parquet' for m in missing)} here: write them with "
                                              "`evalfleet export parquet --output DIR`")
    connection = duckdb.connect()
    for name in TABLES:
        path = str(directory / f"{name}.parquet").replace("'", "''")
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    return connection


def run_query(sql: str, parquet: str | Path | None = None) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of a query over the views."""
    import duckdb

    connection = connect(parquet)
    try:
        result = connection.execute(sql)
    except duckdb.Error as exc:
        raise SpecError("query", None, str(exc).splitlines()[0]) from None
    columns = [d[0] for d in result.description] if result.description else []
    return columns, result.fetchall()
