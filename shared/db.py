"""The database: SQLAlchemy Core tables, the engine (SQLite embedded, PostgreSQL in a cluster) and
schema migrations with alembic, applied on first use.

The database is the truth about a run: which samples finished (one row each, unique per task
result), how many, and whether aggregation was claimed. Redis and the broker only carry work."""

from __future__ import annotations

import fcntl
import logging
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)
metadata = MetaData()

# Registered datasets, models and tasks. Each registration of a changed definition adds a version;
# a key resolves to its newest version that is not removed.
entities = Table(
    "entities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("key", String(250), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("body", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("kind", "key", "version", name="uq_entities_kind_key_version"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("evaluation_key", String(250), nullable=False, index=True),
    Column("display_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("plan", Text, nullable=False),
    Column("retry_of", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # The evaluation's tags, comma-separated with a comma at each end, for `LIKE '%,tag,%'`.
    Column("tags", Text, nullable=True),
    # The process enqueuing the run's samples (services.feeding) and its last heartbeat; a
    # worker takes over the feeding of a run whose feeder went quiet.
    Column("feeder", String(250), nullable=True),
    Column("fed_at", DateTime(timezone=True), nullable=True),
)

task_results = Table(
    "task_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("spec_key", String(250), nullable=False),
    Column("plan", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, default=0),
    Column("errors", Integer, nullable=False, default=0),
    Column("model_calls", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("cache_hits", Integer, nullable=False, default=0),
    # running -> aggregating (claimed once, by whoever saw the last sample) -> success | error | cancelled
    Column("status", String(16), nullable=False),
    Column("log_path", Text, nullable=True),
    Column("metrics", Text, nullable=True),
    Column("error", Text, nullable=True),
    # The most frequent sample errors, once the task result is final (JSON; see services.runs).
    Column("error_summary", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # Aggregation: claimed when the last sample is recorded; `aggregator` names the process writing
    # the log, which keeps `claimed_at` fresh while it works, so a dead one's claim goes stale.
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("aggregator", String(64), nullable=True),
    # When a sample was last recorded: a running task result with no progress for a while is
    # checked for samples that nobody holds any more (services.recovery).
    Column("progress_at", DateTime(timezone=True), nullable=True),
    # The results API's `evaluation_run_uuid`: one task result is one DigitalOcean "evaluation run".
    Column("uuid", String(36), nullable=True, unique=True, index=True),
    # The star metric met its threshold (None: no star metric, or not finished).
    Column("pass_status", Boolean, nullable=True),
    Column("model_key", String(250), nullable=True),
    # Samples at selection positions below this were enqueued (or recorded at submission); None:
    # all of them. Recovery never enqueues a sample the feeder has not reached yet.
    Column("enqueued", Integer, nullable=True),
)

sample_results = Table(
    "sample_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_result_id", Integer, ForeignKey("task_results.id"), nullable=False),
    Column("sample_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    # Which run of the sample (shared.epochs); `position` is then the work position.
    Column("epoch", Integer, nullable=False, server_default="1"),
    Column("is_error", Boolean, nullable=False),
    # Tasks that score against the whole population (uniqueness) group samples by this value.
    Column("group_key", String(64), nullable=True),
    # A failed sample's error, for summaries by type and message without reading the bodies.
    Column("error_type", String(100), nullable=True),
    Column("error_message", String(300), nullable=True),
    # Typed copies of what summaries, charts and the viewer sort and filter by. `score` is the
    # primary scorer's value (the star metric's scorer, else the task's first).
    Column("score", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("cached", Boolean, nullable=True),
    # What the sample's judge calls cost, from the judge models' pricing (null: no judge, or unpriced).
    Column("judge_cost_usd", Float, nullable=True),
    Column("body", Text, nullable=False),
    UniqueConstraint("task_result_id", "sample_id", "epoch", name="uq_sample_results_sample_epoch"),
    Index("ix_sample_results_position", "task_result_id", "position"),
)

# Worker processes, by node name: each one refreshes its row every few seconds (workers.heartbeat),
# naming the samples it holds, so others can tell a live worker from a dead one.
worker_processes = Table(
    "workers",
    metadata,
    Column("name", String(250), primary_key=True),
    Column("hostname", String(250), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", Text, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False, index=True),
    Column("active", Integer, nullable=False, default=0),
    # JSON {task_result_id: [positions]}: the samples this worker has received and not finished.
    Column("holding", Text, nullable=False, default="{}"),
)

# Bearer tokens of the results API: only a SHA-256 of each token is kept, and its first characters
# (`prefix`) so people can tell their tokens apart.
tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(250), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

# The result store's durable index (shared.result_store): its packs, and where the current entry
# of each inference key is. Every pack also carries its own index, so both can be rebuilt from
# the packs alone (`evalfleet store reindex`).
store_packs = Table(
    "store_packs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("entries", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

store_entries = Table(
    "store_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("pack_id", Integer, nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("length", Integer, nullable=False),
    # Orders the versions of one key (`update` replaces outputs): the newest wins everywhere.
    Column("written_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

FINAL_STATUSES = ("success", "error", "cancelled")
# A run being cancelled: workers drop its remaining samples, then its logs are written.
CANCELLING = "cancelling"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def now() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime | None) -> datetime | None:
    """A datetime read back from the database, as UTC: SQLite hands back naive datetimes."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process, migrated to the newest schema on first use."""
    if url is None:
        from shared.settings import get_settings

        url = get_settings().effective_database_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            migrate(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A pool large enough for every thread that reads at once (the result writer, store lookups
        # and packs, the feeder, progress): a connection opened past it costs its pragmas each time.
        # No statement cache: a cached SQLite statement keeps a copy of its last bound values
        # until it runs again, so every pooled connection that once wrote a plan with a
        # megabyte prompt template held one more copy of it (measured: 5 MB per connection).
        # Preparing a statement costs microseconds; the pipeline executes few per batch.
        engine = create_engine(url, pool_size=16, max_overflow=32,
                               connect_args={"timeout": 60, "check_same_thread": False, "cached_statements": 0})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            # WAL lets readers (progress, status) run beside the writer; NORMAL sync is durable
            # against process crashes, which is the failure that matters for sample accounting.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # A bounded connect: an unreachable server is an outage to wait out (shared.outages), not a
    # thread stuck in the kernel's SYN retries for minutes.
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True,
                           connect_args={"connect_timeout": 10})
    from shared.settings import get_settings

    dead_client = dead_client_settings(get_settings().visibility_timeout)
    statement = "SELECT " + ", ".join(f"set_config('{name}', '{value}', false)" for name, value in dead_client.items())

    @event.listens_for(engine, "connect")
    def _drop_when_silent(dbapi_connection, _record):  # noqa: ANN001
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
            dbapi_connection.commit()
        except Exception as exc:  # noqa: BLE001 - a server before PostgreSQL 12, or a pooler that refuses it
            dbapi_connection.rollback()
            logger.debug("the database did not take the dead-client settings: %s", exc)
        finally:
            cursor.close()

    return engine


def dead_client_settings(visibility_timeout: int) -> dict[str, int]:
    """PostgreSQL session settings under which the server drops a client silent for about
    `visibility_timeout` seconds. A host that drops off the network mid-transaction otherwise keeps
    its row locks, and every other worker's commits wait on them, until the server's TCP gives up:
    two hours for an idle connection (keepalive), about 15 minutes for one with a reply not yet
    acknowledged (retransmissions). After the visibility timeout the cluster treats that host's
    worker as dead anyway: its samples are delivered again."""
    return {"tcp_keepalives_idle": max(1, visibility_timeout // 3),
            "tcp_keepalives_interval": max(1, visibility_timeout // 6),
            "tcp_keepalives_count": 3,
            "tcp_user_timeout": visibility_timeout * 1000}


def _alembic_config():  # noqa: ANN202 - alembic is imported lazily
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def schema_revision(engine: Engine) -> str | None:
    """The alembic revision the database is at (None: no schema yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision, once even when processes start together."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    if schema_revision(engine) == ScriptDirectory.from_config(config).get_current_head():
        return
    with _migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def _migration_lock(engine: Engine):
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(7242001)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(7242001)"))
                connection.commit()
    elif engine.url.database and engine.url.database != ":memory:":
        with open(f"{engine.url.database}.migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
    else:
        yield


@contextmanager
def exclusive(name: str, engine: Engine | None = None):
    """A lock held by at most one process among all that share the database, taken without
    waiting: yields True when this process holds it. PostgreSQL advisory lock, or a file lock
    beside a SQLite database (whose users all share one host)."""
    engine = engine or get_engine()
    key = int.from_bytes(name.encode()[:7].ljust(7, b"\0"), "big")
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    with open(f"{database}.{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
