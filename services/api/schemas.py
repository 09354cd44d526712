"""The shapes the results API sends and accepts: DigitalOcean GenAI's evaluation-run API (field
names, nesting, enum names, token counts as strings), plus a few evalfleet fields beside them
(`run_id`, `sample_id`, progress). These pydantic models are the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.runs import RunSummary


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationRunStatus(StrEnum):
    UNSPECIFIED = "EVALUATION_RUN_STATUS_UNSPECIFIED"
    QUEUED = "EVALUATION_RUN_QUEUED"
    RUNNING = "EVALUATION_RUN_RUNNING_DATASET"
    EVALUATING_RESULTS = "EVALUATION_RUN_EVALUATING_RESULTS"
    CANCELLING = "EVALUATION_RUN_CANCELLING"
    CANCELLED = "EVALUATION_RUN_CANCELLED"
    SUCCESSFUL = "EVALUATION_RUN_SUCCESSFUL"
    PARTIALLY_SUCCESSFUL = "EVALUATION_RUN_PARTIALLY_SUCCESSFUL"
    FAILED = "EVALUATION_RUN_FAILED"


# evalfleet's phase names (services.results.PHASES) -> DigitalOcean's.
STATUS_OF_PHASE = {
    "queued": EvaluationRunStatus.QUEUED, "running": EvaluationRunStatus.RUNNING,
    "evaluating_results": EvaluationRunStatus.EVALUATING_RESULTS, "cancelling": EvaluationRunStatus.CANCELLING,
    "cancelled": EvaluationRunStatus.CANCELLED, "successful": EvaluationRunStatus.SUCCESSFUL,
    "partially_successful": EvaluationRunStatus.PARTIALLY_SUCCESSFUL, "failed": EvaluationRunStatus.FAILED,
}


class MetricValueType(StrEnum):
    UNSPECIFIED = "METRIC_VALUE_TYPE_UNSPECIFIED"
    NUMBER = "METRIC_VALUE_TYPE_NUMBER"
    STRING = "METRIC_VALUE_TYPE_STRING"
    PERCENTAGE = "METRIC_VALUE_TYPE_PERCENTAGE"


class MetricResultStatus(StrEnum):
    COMPLETED = "EVALUATION_METRIC_RESULT_STATUS_COMPLETED"
    FAILED = "EVALUATION_METRIC_RESULT_STATUS_FAILED"
    SKIPPED = "EVALUATION_METRIC_RESULT_STATUS_SKIPPED"


class EvaluationMetricResult(Shape):
    """At run level: one metric of one scorer (`<scorer>/<metric>`); a PERCENTAGE is in percent
    (accuracy 0.9 is 90.0). At prompt level: one scorer: `number_value` the score, `string_value`
    the answer it read, `reasoning` its explanation."""

    metric_name: str
    metric_value_type: MetricValueType
    number_value: float | None = None
    string_value: str | None = None
    reasoning: str | None = None
    error_description: str | None = None
    status: MetricResultStatus = MetricResultStatus.COMPLETED


class EvaluationRun(Shape):
    """One evaluation run in DigitalOcean's terms: one task specification of one evalfleet run."""

    evaluation_run_uuid: str
    run_name: str = Field(description="The task specification's display name.")
    status: EvaluationRunStatus
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_description: str | None = None
    pass_status: bool | None = Field(None, description="The star metric met its threshold; absent without one.")
    star_metric_result: EvaluationMetricResult | None = None
    run_level_metric_results: list[EvaluationMetricResult] = Field(default_factory=list)
    test_case_name: str = Field(description="The evaluation's display name.")
    test_case_description: str | None = None
    agent_name: str | None = Field(None, description="The model under evaluation (its key).")
    run_id: str = Field(description="evalfleet's run (one submission), which may hold several evaluation runs.")
    evaluation_key: str
    task_specification_key: str
    total_samples: int
    completed_samples: int
    errored_samples: int
    model_calls: int
    cache_hits: int


class Prompt(Shape):
    """One sample: `prompt_id` is its position in the selection, `sample_id` its id."""

    prompt_id: int
    sample_id: str
    input: str
    output: str | None = None
    ground_truth: str | None = None
    input_tokens: str | None = Field(None, description="A count, as a string (as DigitalOcean sends it).")
    output_tokens: str | None = None
    prompt_level_metric_results: list[EvaluationMetricResult] = Field(default_factory=list)
    error_description: str | None = None
    cached: bool = False
    latency_ms: float | None = None
    epoch: int = Field(1, description="Which run of the sample (with epochs, prompt_id is the work position).")


class Pages(Shape):
    first: str | None = None
    previous: str | None = None
    next: str | None = None
    last: str | None = None


class Links(Shape):
    pages: Pages


class Meta(Shape):
    page: int
    pages: int
    total: int


class EvaluationRunOutput(Shape):
    evaluation_run: EvaluationRun


class EvaluationRunResultsOutput(Shape):
    evaluation_run: EvaluationRun
    prompts: list[Prompt]
    links: Links
    meta: Meta


class PromptOutput(Shape):
    prompt: Prompt


class EvaluationRunsOutput(Shape):
    evaluation_runs: list[EvaluationRun]
    links: Links
    meta: Meta


class CreateEvaluationRunOutput(Shape):
    run_id: str
    evaluation_run_uuids: list[str]


class ApiError(Shape):
    """DigitalOcean's error body."""

    id: str = Field(description="A short name: unauthorized, forbidden, not_found, unprocessable_entity...")
    message: str
    request_id: str | None = None


class Token(Shape):
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreateToken(Shape):
    name: str = Field(min_length=1, max_length=250)
    scope: str = Field(pattern="^(read|submit|admin)$")


class CreatedToken(Shape):
    token: str = Field(description="Shown this once; only its hash is kept.")
    info: Token


class TokensOutput(Shape):
    tokens: list[Token]


class Health(Shape):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class RunsOutput(Shape):
    """Runs (one submission of a run file each), newest first."""

    runs: list[RunSummary]
    links: Links
    meta: Meta


class TrendsOutput(Shape):
    """An evaluation's trend: `evalfleet summary`'s document (by day), and every run's scores."""

    summary: dict[str, Any]
    runs: list[dict[str, Any]]


class BenchmarksOutput(Shape):
    """A run's model comparisons (`evalfleet benchmark`'s documents), one per group of specifications
    that differ only by model."""

    benchmarks: list[dict[str, Any]]


class SampleOutput(Shape):
    """One sample as evalfleet records it (every field of the log's record), with the prompt that
    was sent, rebuilt when the evaluation logs prompts by reference."""

    sample: dict[str, Any]
    prompt_sent: str | list[dict[str, Any]] | None
