"""The task result log: models (`shared.log.models`), writing (`shared.log.writer`) and reading
(`shared.log.reader`). The public Python API is re-exported by the `evalfleet` package."""

from shared.log.models import *  # noqa: F403
from shared.log.models import __all__ as _models
from shared.log.reader import list_task_result_logs, read_task_result_log, task_result_log_schema
from shared.log.writer import SampleSpool, finite_or_none, log_relpath, write_task_result_log

__all__ = [*_models, "SampleSpool", "finite_or_none", "list_task_result_logs", "log_relpath",
           "read_task_result_log", "task_result_log_schema", "write_task_result_log"]
