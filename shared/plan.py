"""The evaluation as resolved: every reference replaced by what it names, task configs validated
and defaults filled in. This is what the database keeps, what workers execute and what the
task result log records. It never holds a credential, only the name of the variable holding it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.spec import CachePolicy, GenerationSettings, Pricing, PromptLogging, Provider, Subsampling


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResolvedModel(Frozen):
    key: str
    provider: Provider
    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    max_connections: int = 32
    requests_per_minute: int | None = None
    queue: str | None = None
    timeout: float = 120.0
    latency_ms: float = 0
    max_attempts: int = 6
    retry_timeout: float = 600.0
    pricing: Pricing | None = None


class ResolvedDataset(Frozen):
    key: str
    path: str = Field(description="Absolute path or s3:// URL.")
    id_field: str = "id"
    input_field: str = "input"
    target_field: str = "target"


class ResolvedTask(Frozen):
    key: str
    template: str | None = None
    entrypoint: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class ResolvedStarMetric(Frozen):
    """A star metric checked against its task: `scorer` and `name` exist in the task's results."""

    metric: str = Field(description="`<scorer>/<metric>`.")
    scorer: str
    name: str
    threshold: float = Field(description="Pass when the metric is at least this (a fraction for a percentage).")

    def passes(self, metrics: dict[str, dict[str, float | None]]) -> bool:
        value = self.value(metrics)
        return value is not None and value >= self.threshold

    def value(self, metrics: dict[str, dict[str, float | None]]) -> float | None:
        return (metrics.get(self.scorer) or {}).get(self.name)


class ResolvedTaskSpec(Frozen):
    key: str
    display_name: str
    task: ResolvedTask
    model: ResolvedModel | None = None
    dataset: ResolvedDataset
    num_samples: int | None = None
    subsampling: Subsampling = "head"
    task_result_log_path: str | None = None
    star_metric: ResolvedStarMetric | None = None
    # The judge models that model-graded scorers name, by key.
    judges: dict[str, ResolvedModel] = Field(default_factory=dict)
    epochs: int = 1
    epoch_reducer: str = "mean"


class ResolvedEvaluation(Frozen):
    key: str
    display_name: str
    description: str | None = None
    long_description: str | None = None
    tags: list[str] = Field(default_factory=list)
    cache_policy: CachePolicy = "reuse"
    log_prompts: PromptLogging = "full"
    fail_on_error: bool | float = 0.1
    source_file: str | None = None
    task_specifications: list[ResolvedTaskSpec]
    # The version of each registered entity the run used, by "<kind>:<key>" (services.registry).
    entity_versions: dict[str, int] = Field(default_factory=dict)
