"""What a task is: a config model, how a sample becomes a prompt, and how an output is scored.
A user-defined task (`entrypoint: package.module:Name`) subclasses `Task`."""

from __future__ import annotations

import string
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared.log import Score
from shared.plan import ResolvedDataset
from shared.samples import ChatMessage, Prompt, Sample

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

    @property
    def needs_target(self) -> bool:
        return False

    def metrics(self) -> dict[str, tuple[str, ...]]:
        """Scorer label -> the metrics reported for it."""
        raise NotImplementedError

    def prompt(self, sample: Sample) -> Prompt:
        return sample.input or ""

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


def template_fields(template: str) -> set[str]:
    """The sample fields a format template reads (`{topic}`, `{meta[x]}` and `{meta.x}` read `meta`)."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            names.add(name.split(".", 1)[0].split("[", 1)[0])
    return names


def render_template(template: str, sample: Sample, **extra: str) -> Prompt:
    """The template over the sample's fields. For a conversation (a list of messages) `{input}` is
    the text of its last user message, and the rendered template replaces that message; the
    other messages are sent as they are."""
    messages = sample.input if isinstance(sample.input, list) else None
    last_user = None
    if messages is not None:
        last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
        text_input = messages[last_user].content if last_user is not None else ""
    else:
        text_input = sample.input or ""
    fields = {**sample.metadata, "id": sample.id, "input": text_input, "target": sample.target or "", **extra}
    try:
        rendered = template.format_map(fields)
    except KeyError as exc:
        raise ValueError(f"prompt_template refers to {{{exc.args[0]}}}, which the sample lacks") from None
    if messages is None:
        return rendered
    message = ChatMessage(role="user", content=rendered)
    if last_user is None:
        return [*messages, message]
    return [*messages[:last_user], message, *messages[last_user + 1:]]
