"""`multiple-choice`: choices from a field, the model answers with a letter, accuracy.

The target may be the letter (`B`), the index of the choice (`1`), or the choice's text."""

from __future__ import annotations

import json
import re
import string

from pydantic import Field

from shared.log import Score
from shared.samples import Prompt, Sample
from workers.scorers import ACCURACY_METRICS
from workers.tasks.base import ALWAYS_PRESENT_FIELDS, Task, TaskConfig, render_template, template_fields

LETTERS = string.ascii_uppercase
DEFAULT_TEMPLATE = (
    "Answer the following multiple choice question with the letter of the correct choice.\n\n"
    "{input}\n\n{choices}\n\nAnswer with a single letter."
)
_ANSWER = re.compile(r"(?:answer\s*(?:is)?\s*[:\-]?\s*\(?([A-Z])\)?)|\b([A-Z])\b")


class MultipleChoiceConfig(TaskConfig):
    choices_field: str = Field("choices", description="A list, or a JSON list in a string.")
    prompt_template: str = Field(DEFAULT_TEMPLATE, description="Fields: input, choices and the sample's fields.")


class MultipleChoiceTask(Task):
    config_model = MultipleChoiceConfig
    config: MultipleChoiceConfig

    @property
    def needs_target(self) -> bool:
        return True

    def metrics(self) -> dict[str, tuple[str, ...]]:
        return {"choice": ACCURACY_METRICS}

    def choices(self, sample: Sample) -> list[str]:
        value = sample.field(self.config.choices_field, self.dataset)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, list) or not value or len(value) > len(LETTERS):
            raise ValueError(f"field {self.config.choices_field!r} must be a non-empty list of choices")
        return [str(choice) for choice in value]

    def prompt(self, sample: Sample) -> Prompt:
        template, fields = self.prompt_reference(sample)
        return render_template(template, sample, **fields)

    def prompt_reference(self, sample: Sample) -> tuple[str, dict[str, str]]:
        rendered = "\n".join(f"{LETTERS[i]}) {choice}" for i, choice in enumerate(self.choices(sample)))
        return self.config.prompt_template, {"choices": rendered}

    def required_fields(self) -> dict[str, str]:
        fields = {name: "prompt_template"
                  for name in template_fields(self.config.prompt_template) - ALWAYS_PRESENT_FIELDS - {"choices"}}
        fields[self.config.choices_field] = "choices_field"
        return fields

    def expected_letter(self, sample: Sample, choices: list[str]) -> str | None:
        target = (sample.target or "").strip()
        if len(target) == 1 and target.upper() in LETTERS[: len(choices)]:
            return target.upper()
        if target.isdigit() and int(target) < len(choices):
            return LETTERS[int(target)]
        for index, choice in enumerate(choices):
            if choice.strip().lower() == target.lower():
                return LETTERS[index]
        return None

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        choices = self.choices(sample)
        expected = self.expected_letter(sample, choices)
        if expected is None:
            raise ValueError(f"target {sample.target!r} is not a letter, index or text of a choice")
        answer = None
        for match in _ANSWER.finditer((output or "").strip()):
            letter = match.group(1) or match.group(2)
            if letter in LETTERS[: len(choices)]:
                answer = letter
                break
        return {"choice": Score(value=float(answer == expected), answer=answer,
                                explanation=f"expected {expected}")}
