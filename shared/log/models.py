"""The task result log's pydantic models; the JSON Schema is generated from them. The field order
of `TaskResultLog` is the order in the file: everything that summarises the log comes before
`sample_ids` and `samples`, so a reader learns the status, results and stats of a million-sample
log from its first kilobytes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.plan import ResolvedTaskSpec
from shared.samples import ChatMessage

# 2: summary fields (status, results, stats, error_summary) before the samples; `attempts`.
# 1: summary fields after the samples. Both are read.
LOG_VERSION = 2
READABLE_VERSIONS = (1, 2)
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


class PromptRef(LogModel):
    """A prompt logged by reference: the task's `prompt_template` (in the header's
    task_specification) rendered over the sample's fields and these extra ones."""

    template_sha256: str = Field(description="SHA-256 (hex) of the UTF-8 template.")
    fields: dict[str, str] = Field(default_factory=dict, description="Fields beyond the sample's own "
                                                                     "(multiple_choice: `choices`).")


class JudgeUsage(LogModel):
    """The calls a sample's judge scorers made to one judge model."""

    model: str = Field(description="The judge's model key.")
    calls: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None


class SampleRecord(LogModel):
    id: str
    position: int = Field(description="Place of the sample in the selection; with epochs, the work position: "
                                      "place x epochs + epoch - 1.")
    epoch: int = Field(1, description="Which run of the sample this is, from 1.")
    input: str | list[ChatMessage] | None = Field(description="Text, or a conversation (chat messages).")
    target: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    prompt: str | list[ChatMessage] | None = Field(
        None, description="What was sent to the model, when it differs from input.")
    prompt_ref: PromptRef | None = Field(None, description="Instead of `prompt`, with log_prompts: reference.")
    output: str | None = None
    scores: dict[str, Score] = Field(default_factory=dict)
    reduced_scores: dict[str, Score] | None = Field(
        None, description="With epochs, on the last epoch's record of each sample: its scores over all epochs, "
                          "reduced by the epoch_reducer; the metrics are computed over these.")
    error: SampleError | None = None
    usage: TokenUsage | None = None
    latency_ms: float | None = Field(None, description="Time of the model call.")
    model_calls: int = Field(0, description="Requests that got a response from the model server.")
    attempts: int = Field(0, description="Requests tried, including those that got no response "
                                         "(connection failures, timeouts).")
    cached: bool = Field(False, description="The output came from the result store, not a model call.")
    judges: list[JudgeUsage] = Field(default_factory=list, description="Calls of model-graded scorers (a judge "
                                     "model), one entry per call; none when the scores came from the store.")
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
    model_calls: int = Field(0, description="Requests that got a response from a model server.")
    attempts: int = Field(0, description="Requests tried, with those that got no response.")
    cache_hits: int = 0
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict)


class LogError(LogModel):
    message: str
    traceback: str | None = None


class ErrorCount(LogModel):
    type: str
    message: str = Field(description="Scrubbed of credentials, at most 300 characters.")
    count: int


class ErrorSummary(LogModel):
    """Why samples failed, at a glance: the most frequent (type, message) pairs."""

    samples_errored: int = 0
    most_frequent: list[ErrorCount] = Field(default_factory=list)
    task_error: str | None = Field(None, description="The task's own error, when it failed as a whole.")


class StarMetricResult(LogModel):
    """The task result's star metric and whether it met its threshold."""

    metric: str = Field(description="`<scorer>/<metric>`.")
    value: float | None
    threshold: float
    pass_status: bool


class EvaluationHeader(LogModel):
    key: str
    display_name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    cache_policy: str = "reuse"
    log_prompts: str = Field("full", description="full, or reference: samples carry `prompt_ref` instead of "
                                                 "`prompt` when the prompt was rendered from the task's template.")
    fail_on_error: bool | float | None = Field(None, description="The evaluation's budget of failed samples.")


class LogHeader(LogModel):
    """Everything in a log but its samples, in file order."""

    version: int = LOG_VERSION
    status: TaskStatus
    error: LogError | None = None
    run_id: str
    retry_of: str | None = Field(None, description="The run this one retried, keeping its task identity.")
    evaluation: EvaluationHeader
    task_specification: ResolvedTaskSpec
    sample_count: int
    samples_errored: int = 0
    subsampling: str
    results: dict[str, ScorerResult]
    star_metric: StarMetricResult | None = None
    stats: LogStats
    error_summary: ErrorSummary | None = None


class TaskResultLog(LogHeader):
    """One task specification of one run: its header, then its samples in selection order.
    `sample_ids` and `samples` are None only when read header-only."""

    sample_ids: list[str] | None
    samples: list[SampleRecord] | None


__all__ = ["LOG_FILE_SUFFIX", "LOG_VERSION", "READABLE_VERSIONS", "ErrorCount", "ErrorSummary", "EvaluationHeader",
           "JudgeUsage", "LogError", "LogHeader", "LogModel", "LogStats", "ModelUsage", "PromptRef", "SampleError", "SampleRecord", "Score",
           "ScorerResult", "StarMetricResult", "TaskResultLog", "TaskStatus", "TokenUsage"]
