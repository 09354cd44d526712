"""Reading task result logs from a path or an s3:// URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.log.models import LOG_FILE_SUFFIX, TaskResultLog
from shared.storage import store_for


def read_task_result_log(location: str) -> TaskResultLog:
    """Read a whole log and validate it against the schema."""
    directory, _, name = location.rstrip("/").rpartition("/")
    with store_for(directory or ".").open(name) as handle:
        return TaskResultLog.model_validate_json(handle.read())


def list_task_result_logs(log_dir: str) -> Iterator[str]:
    """URIs of the logs under a log directory."""
    store = store_for(log_dir)
    for relpath in store.list():
        if relpath.endswith(LOG_FILE_SUFFIX):
            yield store.uri(relpath)


def task_result_log_schema() -> dict[str, Any]:
    return TaskResultLog.model_json_schema()
