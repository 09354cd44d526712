"""What a task is: a config model, how a sample becomes a prompt, and how an output is scored.
A user-defined task (`entrypoint: package.module:Name`) subclasses `Task`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared.log import Score
from shared.plan import ResolvedDataset
from shared.samples import Sample


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Task:
    config_model: ClassVar[type[TaskConfig]] = TaskConfig
    needs_model: ClassVar[bool] = True
    needs_input: ClassVar[bool] = True
    # Tasks scored against the whole selection (uniqueness) group samples by `group_key`.
    scores_population: ClassVar[bool] = False
    # Config fields that change scoring only: a change there reuses cached model outputs.
    scorer_config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TaskConfig, dataset: ResolvedDataset):
        self.config = config
        self.dataset = dataset

    @property
    def needs_target(self) -> bool:
        return False

    def metrics(self) -> dict[str, tuple[str, ...]]:
        """Scorer label -> the metrics reported for it."""
        raise NotImplementedError

    def prompt(self, sample: Sample) -> str:
        return sample.input or ""

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        raise NotImplementedError

    def group_key(self, sample: Sample) -> str | None:
        return None

    def score_in_population(self, scores: dict[str, Score], duplicated: bool) -> dict[str, Score]:
        return scores

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> TaskConfig:
        return cls.config_model.model_validate(config)
