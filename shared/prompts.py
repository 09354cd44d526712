"""Prompts rendered from a task's template: the rendering itself, and the prompt of a log record
logged by reference (`log_prompts: reference`), rebuilt from the template in its header."""

from __future__ import annotations

import hashlib
import string
from typing import TYPE_CHECKING

from shared.samples import ChatMessage, Prompt, Sample

if TYPE_CHECKING:
    from shared.log.models import LogHeader, SampleRecord
    from shared.plan import ResolvedTaskSpec


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


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def prompt_of(record: SampleRecord, header: LogHeader) -> Prompt | None:
    """What was sent to the model for a sample: its `prompt`, else the template its `prompt_ref`
    names rendered again over the sample's fields, else its input."""
    return prompt_sent(record, header.task_specification)


def prompt_sent(record: SampleRecord, spec: ResolvedTaskSpec) -> Prompt | None:
    """`prompt_of` with the task specification the record was produced under."""
    if record.prompt is not None:
        return record.prompt
    if record.prompt_ref is None:
        return record.input
    template = spec.task.config.get("prompt_template")
    if not isinstance(template, str) or template_sha256(template) != record.prompt_ref.template_sha256:
        raise ValueError(f"sample {record.id!r}: its prompt template (sha256 {record.prompt_ref.template_sha256[:12]}) "
                         "is not the one in the log's task specification")
    sample = Sample(id=record.id, input=record.input, target=record.target, metadata=record.metadata)
    return render_template(template, sample, **record.prompt_ref.fields)
