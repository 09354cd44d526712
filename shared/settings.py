"""The one settings object: EVALFLEET_* variables, a `.env` file in the working directory,
and CLI options layered on top (see `configure`)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVALFLEET_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".evalfleet"), description="Directory of the embedded database and local state.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under `home`.")
    log_dir: str = Field("logs", description="Where task result logs are written.")
    broker_url: str | None = Field(
        None, description="Celery broker (redis:// or amqp://). Unset: embedded mode, one process."
    )
    store_url: str | None = Field(
        None, description="Result store: a directory or s3://bucket/prefix; default: `home`/store."
    )
    redis_url: str | None = Field(
        None, description="Redis index of the result store; default: the broker when it is Redis."
    )
    concurrency: int = Field(32, ge=1, description="Samples in flight per worker process.")
    prefetch_multiplier: int = Field(4, ge=1, description="Messages reserved per concurrency slot.")
    queue: str = Field("evalfleet", description="Default queue of sample and aggregation tasks.")
    visibility_timeout: int = Field(
        30, ge=10, description="Redis broker: seconds after its worker's last heartbeat before a sample "
        "held by a worker that died is delivered again. Live workers refresh their samples every few "
        "seconds, so a long sample is never delivered twice. PostgreSQL drops a client silent for about as "
        "long (a host lost mid-transaction releases its locks).",
    )
    outage_budget: float = Field(
        300.0, gt=0, description="Seconds a sample waits for the database, Redis or the store to come back "
        "before its worker hands it back to the broker.",
    )
    worker_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker (SIGTERM) gives its in-flight samples before "
        "handing them back to the broker.",
    )
    prompt_budget_mb: float = Field(
        8, gt=0, description="Megabytes of prompts a worker process renders and holds at once; a "
        "sample larger than this runs alone. Bounds memory when prompt templates are megabytes long.")
    result_batch_size: int = Field(200, ge=1, description="Sample results committed per transaction.")
    submit_window: int = Field(
        10_000, ge=0, description="Samples a run may have in flight (enqueued, not yet recorded); the submitter "
        "enqueues more as results come in, so memory and broker size stay flat. Raised to twice what the live "
        "workers can hold when that is more. 0: no limit (everything is enqueued at once).",
    )
    data_roots: str = Field(
        "", description="Comma-separated directories of the server whose datasets a run file submitted over HTTP "
        "may read (s3://, inline rows and registered datasets are always allowed). Empty: none.",
    )
    api_rate_limit: int = Field(600, ge=1, description="Requests per minute per API token (or per client "
                                "without auth); past it the API answers 429.")
    metrics_auth: bool = Field(False, description="`evalfleet serve`: `/metrics` needs a token of scope read "
                               "(otherwise it is open, like a worker's `--metrics-port`).")
    allowed_modules: str = Field(
        "",
        description="Comma-separated modules (and their submodules) from which user task entrypoints and "
        "`python` models may be imported. Empty: none. Importing runs that code with the worker's rights.",
    )

    @cached_property
    def effective_database_url(self) -> str:
        # Cached: every sample asks for its engine, and resolving the path is a few system calls.
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'evalfleet.db').resolve()}"

    @property
    def effective_store_url(self) -> str:
        return self.store_url or str((self.home / "store").resolve())

    @property
    def effective_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def allowed_module_prefixes(self) -> list[str]:
        return [m.strip() for m in self.allowed_modules.split(",") if m.strip()]

    @property
    def data_root_paths(self) -> list[Path]:
        return [Path(p.strip()).expanduser() for p in self.data_roots.split(",") if p.strip()]

    @property
    def embedded(self) -> bool:
        return not self.broker_url


_current: Settings | None = None


def get_settings() -> Settings:
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure(**overrides: object) -> Settings:
    """Apply CLI options over the environment; later calls to `get_settings` see the result."""
    global _current
    values = {k: v for k, v in overrides.items() if v is not None}
    _current = get_settings().model_copy(update=values)
    return _current


def reset_settings() -> None:
    """Forget the current settings so the next `get_settings` re-reads the environment."""
    global _current
    _current = None
