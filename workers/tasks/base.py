"""What a task is: a config model, how a sample becomes a prompt, and how an output is scored.
A user-defined task (`entrypoint: package.module:Name`) subclasses `Task`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared.log import Score
from shared.plan import ResolvedDataset
from shared.prompts import render_template, template_fields
from shared.samples import Prompt, Sample

# Fields every sample offers to a prompt template, whatever its dataset's columns.
ALWAYS_PRESENT_FIELDS = frozenset({"id", "input", "target"})


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
        # The judge models of model-graded scorers (workers.judges.Judges), set by the worker.
        self.judges: Any = None

    def scorers(self) -> list[Any]:
        """The task's scorer options (`workers.scorers`), for judges and user scorers."""
        return list(getattr(self.config, "scorers", None) or [])

    @property
    def needs_target(self) -> bool:
        return False

    def metrics(self) -> dict[str, tuple[str, ...]]:
        """Scorer label -> the metrics reported for it."""
        raise NotImplementedError

    def prompt(self, sample: Sample) -> Prompt:
        return sample.input or ""

    def prompt_reference(self, sample: Sample) -> tuple[str, dict[str, str]] | None:
        """(the template, the fields beyond the sample's own) when `prompt` renders a template
        with `shared.prompts.render_template`: what a log records with log_prompts: reference."""
        return None

    def required_fields(self) -> dict[str, str]:
        """Dataset fields every sample must have, each with the config field that asks for it;
        checked on the selected samples before anything is submitted."""
        return {}

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        raise NotImplementedError

    def group_key(self, sample: Sample) -> str | None:
        return None

    def score_in_population(self, scores: dict[str, Score], duplicated: bool) -> dict[str, Score]:
        return scores

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> TaskConfig:
        return cls.config_model.model_validate(config)


__all__ = ["ALWAYS_PRESENT_FIELDS", "Task", "TaskConfig", "render_template", "template_fields"]
