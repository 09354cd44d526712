"""evalfleet's Python API: task result logs, read and written in bounded memory from a path or
an s3:// URL.

    from evalfleet import read_log, iter_samples, list_logs, write_log

    for summary in list_logs("s3://bucket/evalfleet/logs", status="error"):
        header = read_log(summary.location, header_only=True)   # a byte range, not the samples
        for sample in iter_samples(summary.location):            # one at a time
            ...
"""

from shared.log.models import (
    ErrorSummary,
    LogHeader,
    LogStats,
    PromptRef,
    SampleError,
    SampleRecord,
    Score,
    ScorerResult,
    TaskResultLog,
)
from shared.log.reader import (
    LogError,
    LogSummary,
    iter_samples,
    list_logs,
    read_log,
    read_log_header,
    retryable,
)
from shared.log.writer import write_log
from shared.prompts import prompt_of

__all__ = [
    "ErrorSummary",
    "LogError",
    "LogHeader",
    "LogStats",
    "LogSummary",
    "PromptRef",
    "SampleError",
    "SampleRecord",
    "Score",
    "ScorerResult",
    "TaskResultLog",
    "iter_samples",
    "list_logs",
    "prompt_of",
    "read_log",
    "read_log_header",
    "retryable",
    "write_log",
]
