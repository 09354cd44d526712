"""`qa`: a prompt template over the sample's fields, the model, then one or more scorers."""

from __future__ import annotations

import string
from typing import Any

from pydantic import Field, SerializeAsAny, field_validator

from shared.log import Score
from shared.samples import Prompt, Sample
from workers.scorers import ACCURACY_METRICS, ScorerOptions, parse_scorer, run_scorer, scorer_labels
from workers.tasks.base import ALWAYS_PRESENT_FIELDS, Task, TaskConfig, render_template, template_fields


class QAConfig(TaskConfig):
    prompt_template: str = Field("{input}", description="Python format string over the sample's fields.")
    scorers: list[SerializeAsAny[ScorerOptions]] = Field(default_factory=lambda: [parse_scorer("includes")], min_length=1)

    @field_validator("scorers", mode="before")
    @classmethod
    def _parse(cls, items: Any) -> Any:
        if not isinstance(items, list):
            raise ValueError("a list of scorer names or mappings")
        return [item if isinstance(item, ScorerOptions) else parse_scorer(item) for item in items]

    @field_validator("prompt_template")
    @classmethod
    def _parses(cls, template: str) -> str:
        try:
            list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"invalid template: {exc}") from None
        return template


class QATask(Task):
    config_model = QAConfig
    config: QAConfig
    scorer_config_fields = ("scorers",)

    @property
    def needs_target(self) -> bool:
        return True

    def metrics(self) -> dict[str, tuple[str, ...]]:
        return {label: ACCURACY_METRICS for label in scorer_labels(self.config.scorers)}

    def prompt(self, sample: Sample) -> Prompt:
        return render_template(self.config.prompt_template, sample)

    def prompt_reference(self, sample: Sample) -> tuple[str, dict[str, str]] | None:
        return self.config.prompt_template, {}

    def required_fields(self) -> dict[str, str]:
        return {name: "prompt_template"
                for name in template_fields(self.config.prompt_template) - ALWAYS_PRESENT_FIELDS}

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        labels = scorer_labels(self.config.scorers)
        return {
            label: run_scorer(scorer, output or "", sample.target or "", sample, self.judges)
            for label, scorer in zip(labels, self.config.scorers, strict=True)
        }
