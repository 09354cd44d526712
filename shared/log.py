"""The task result log: its pydantic models (the JSON Schema is generated from them), and the
few functions that write, read and list logs. Non-finite numbers (NaN, infinity) are written as
`null`, so every log parses with a strict JSON parser."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.plan import ResolvedTaskSpec
from shared.storage import store_for

LOG_VERSION = 1
LOG_FILE_SUFFIX = ".json"
TaskStatus = Literal["started", "success", "error", "cancelled"]


class LogModel(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="null", extra="forbid")


class Score(LogModel):
    value: float | None = Field(description="The score; 1.0 correct, 0.0 incorrect for accuracy scorers.")
    answer: str | None = Field(None, description="What the scorer read from the output.")
    explanation: str | None = None


class SampleError(LogModel):
    type: str
    message: str
    status_code: int | None = Field(None, description="HTTP status of a provider error.")
    attempts: int = 1
    traceback: str | None = None


class TokenUsage(LogModel):
    input_tokens: int = 0
    output_tokens: int = 0


class SampleRecord(LogModel):
    id: str
    position: int = Field(description="Place of the sample in the selection.")
    input: str | None
    target: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = Field(None, description="What was sent to the model, when it differs from input.")
    output: str | None = None
    scores: dict[str, Score] = Field(default_factory=dict)
    error: SampleError | None = None
    usage: TokenUsage | None = None
    latency_ms: float | None = Field(None, description="Time of the model call.")
    model_calls: int = 0
    cached: bool = Field(False, description="The output came from the result store, not a model call.")
    worker: str | None = None
    started_at: datetime
    completed_at: datetime


class ScorerResult(LogModel):
    metrics: dict[str, float | None]
    scored: int
    errors: int


class ModelUsage(LogModel):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


class LogStats(LogModel):
    started_at: datetime
    completed_at: datetime
    duration_s: float
    model_calls: int = 0
    cache_hits: int = 0
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict)


class LogError(LogModel):
    message: str
    traceback: str | None = None


class EvaluationHeader(LogModel):
    key: str
    display_name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    cache_policy: str = "reuse"


class TaskResultLog(LogModel):
    version: int = LOG_VERSION
    status: TaskStatus
    error: LogError | None = None
    run_id: str
    retry_of: str | None = Field(None, description="The run this one retried, keeping its task identity.")
    evaluation: EvaluationHeader
    task_specification: ResolvedTaskSpec
    sample_count: int
    samples_errored: int = 0
    sample_ids: list[str]
    subsampling: str
    samples: list[SampleRecord]
    results: dict[str, ScorerResult]
    stats: LogStats


# Written before the samples; `status`, `error`, `samples_errored`, `results` and `stats` are known
# only after them and come last.
HEADER_FIELDS = ("version", "run_id", "retry_of", "evaluation", "task_specification", "sample_count", "subsampling")


def log_relpath(evaluation_key: str, run_id: str, spec_key: str) -> str:
    return f"{evaluation_key}/{run_id}/{spec_key}{LOG_FILE_SUFFIX}"


def write_task_result_log(
    log_dir: str,
    relpath: str,
    header: dict[str, Any],
    sample_ids: Iterable[str],
    samples: Iterable[SampleRecord],
    footer: Any,
) -> str:
    """Stream a log to the store: header fields, then ids and samples one at a time, then the
    fields known only at the end (`footer()` returns `results` and `stats`). Returns its URI."""
    store = store_for(log_dir)
    with store.writer(relpath) as out:
        out.write("{")
        for name in HEADER_FIELDS:
            out.write(f"{json.dumps(name)}: {_to_json(header[name])}, ")
        out.write('"sample_ids": [')
        for number, sample_id in enumerate(sample_ids):
            out.write((", " if number else "") + json.dumps(sample_id))
        out.write('], "samples": [\n')
        for number, sample in enumerate(samples):
            out.write((",\n" if number else "") + sample.model_dump_json())
        out.write("\n]")
        for name, value in footer().items():
            out.write(f", {json.dumps(name)}: {_to_json(value)}")
        out.write("}\n")
    return store.uri(relpath)


def _to_json(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_to_json(v)}" for k, v in value.items()) + "}"
    return json.dumps(finite_or_none(value))


def finite_or_none(value: Any) -> Any:
    """NaN and infinity as None, recursively: what strict JSON can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def read_task_result_log(location: str) -> TaskResultLog:
    """Read a whole log from a path or an s3:// URL and validate it against the schema."""
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
