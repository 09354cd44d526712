"""Inspect -> evalfleet, one sample: an Inspect `EvalSample` (as parsed JSON) as evalfleet's
`SampleRecord`. Inputs keep their shape (text, or chat messages as {role, content}), scores become
numbers (C/I/P/N letters 1/0/0.5/0), errors keep their message and traceback. A sample written by
`convert_to_inspect` gets back, from its `metadata.evalfleet`, what Inspect has no field for."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.interop.inspect.format import METADATA_KEY, Document, parse_time
from shared.log.models import SampleError, SampleRecord, Score, TokenUsage
from shared.log.writer import finite_or_none
from shared.samples import ChatMessage

# Inspect's letter scores as numbers (inspect_ai.scorer.value_to_float).
LETTER_VALUES = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
TRUE_WORDS, FALSE_WORDS = ("yes", "true"), ("no", "false")
EVALFLEET_ROLES = ("system", "developer", "user", "assistant")


def sample_record(raw: Document, position: int, label_for: Callable[[str], str], *, from_evalfleet: bool,
                  reserved: set[str], default_time: datetime) -> SampleRecord:
    """`raw` as a record at `position`; `label_for` names each score, `reserved` are the dataset's
    id, input and target columns (metadata keys that collide are renamed), `default_time` stands
    in for missing times. Raises pydantic's ValidationError for what evalfleet cannot hold."""
    metadata = dict(raw.get("metadata") or {})
    extras = metadata.pop(METADATA_KEY, None) if from_evalfleet else None
    extras = extras if isinstance(extras, dict) else {}
    if not from_evalfleet:
        metadata = without_reserved(metadata, reserved)
    sample_input = extras["input"] if "input" in extras else evalfleet_input(raw.get("input"))
    output_document = raw.get("output") or {}
    output: str | None = output_text(output_document)
    error = sample_error(raw.get("error"), extras.get("error"))
    if error is not None and not output:
        output = None
    started = parse_time(raw.get("started_at")) or default_time
    calls = model_events(raw)
    # Without events (a log written by a program, not a run), an output with choices is one call.
    answered = len(calls) or int(bool(output_document.get("choices")))
    return SampleRecord(
        id=sample_id(raw), position=position, input=sample_input,
        target=extras["target"] if "target" in extras else target_text(raw.get("target")),
        metadata=finite_or_none(metadata),
        prompt=_prompt(extras["prompt"]) if "prompt" in extras else sent_prompt(raw.get("messages"), sample_input),
        output=output,
        scores={label_for(name): evalfleet_score(score) for name, score in (raw.get("scores") or {}).items()
                if isinstance(score, dict)},
        error=error, usage=token_usage(raw),
        latency_ms=extras.get("latency_ms", _latency_ms(output_document)),
        model_calls=extras.get("model_calls", answered),
        attempts=extras.get("attempts", answered + len(raw.get("error_retries") or [])),
        cached=extras.get("cached", bool(calls) and all(event.get("cache") == "read" for event in calls)),
        worker=extras.get("worker"), started_at=started,
        completed_at=parse_time(raw.get("completed_at")) or started,
    )


def sample_id(raw: Document) -> str:
    """The id as text; samples of an Inspect log's later epochs are imported as samples of their
    own, `id@2`."""
    epoch = raw.get("epoch", 1)
    return str(raw.get("id")) if epoch == 1 else f"{raw.get('id')}@{epoch}"


def evalfleet_input(value: Any) -> str | list[ChatMessage] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        messages = [chat_message(m) for m in value if isinstance(m, dict)]
        return messages or ""
    return json.dumps(value, ensure_ascii=False)


def chat_message(message: Document) -> ChatMessage:
    role = message.get("role")
    original = (message.get("metadata") or {}).get("evalfleet_role")
    if original in EVALFLEET_ROLES:
        role = original
    elif role not in EVALFLEET_ROLES:
        role = "user"  # a tool's answer: evalfleet's conversations have no tool role
    return ChatMessage(role=role, content=content_text(message.get("content")))


def content_text(content: Any) -> str:
    """A message's text: its text parts; media evalfleet cannot carry as Inspect's summaries show
    them, `(Image)`; reasoning left out."""
    if isinstance(content, str):
        return content
    parts = []
    for item in content or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "text":
            parts.append(item.get("text") or "")
        elif item.get("type") not in ("reasoning", None):
            parts.append(f"({str(item['type']).capitalize()})")
    return "\n".join(parts)


def target_text(target: Any) -> str | None:
    if target is None or isinstance(target, str):
        return target
    # A list of acceptable answers: one stays itself (so scorers still read it), several become
    # their JSON text, as evalfleet reads a target that is not text from a dataset.
    if isinstance(target, list) and len(target) == 1 and isinstance(target[0], str):
        return target[0]
    return json.dumps(target, ensure_ascii=False)


def output_text(output: Document) -> str:
    completion = output.get("completion")
    if isinstance(completion, str) and completion:
        return completion
    for choice in output.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            return content_text(choice["message"].get("content"))
    return ""


def sent_prompt(messages: Any, sample_input: str | list[ChatMessage] | None) -> str | list[ChatMessage] | None:
    """What was sent to the model: the messages before its first answer, when they differ from the
    input (a system message a solver added, say)."""
    if not isinstance(messages, list):
        return None
    sent = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant" and message.get("source", "generate") == "generate":
            break
        sent.append(chat_message(message))
    if not sent:
        return None
    if len(sent) == 1 and sent[0].role == "user" and isinstance(sample_input, str):
        return None if sent[0].content == sample_input else sent[0].content
    return None if sent == sample_input else sent


def _prompt(value: Any) -> str | list[ChatMessage] | None:
    if value is None or isinstance(value, str):
        return value
    return [ChatMessage.model_validate(m) for m in value]


def evalfleet_score(score: Document) -> Score:
    answer, explanation = score.get("answer"), score.get("explanation")
    return Score(value=score_value(score.get("value")), answer=answer if isinstance(answer, str) else None,
                 explanation=explanation if isinstance(explanation, str) else None)


def score_value(value: Any) -> float | None:
    """An Inspect score value as evalfleet's number: C/I/P/N letters 1/0/0.5/0, yes/true 1, no/false
    0, numbers (and numeric text) as they are; anything else (lists, dicts, NaN) has none."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in LETTER_VALUES:
        return LETTER_VALUES[text]
    if text.lower() in TRUE_WORDS:
        return 1.0
    if text.lower() in FALSE_WORDS:
        return 0.0
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def sample_error(error: Any, details: Any) -> SampleError | None:
    """Inspect's EvalError as evalfleet's; `details` (from `metadata.evalfleet.error`) restore the
    type, status and attempts it has no field for."""
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    details = details if isinstance(details, dict) else {}
    traceback = details["traceback"] if "traceback" in details else (error.get("traceback") or None)
    kind = details.get("type") or exception_type(error.get("traceback")) or "Error"
    return SampleError(type=kind, message=message, status_code=details.get("status_code"),
                       attempts=details.get("attempts", 1), traceback=traceback)


def exception_type(traceback: Any) -> str | None:
    """The exception's class from the last line of a Python traceback (`ValueError: ...`)."""
    if not isinstance(traceback, str) or not traceback.strip():
        return None
    found = re.match(r"([A-Za-z_][\w.]*)(?::|$)", traceback.strip().splitlines()[-1])
    return found.group(1).rsplit(".", 1)[-1] if found else None


def model_events(raw: Document) -> list[Document]:
    return [e for e in raw.get("events") or [] if isinstance(e, dict) and e.get("event") == "model"]


def token_usage(raw: Document) -> TokenUsage | None:
    usage = (raw.get("output") or {}).get("usage")
    if isinstance(usage, dict):
        return TokenUsage(input_tokens=usage.get("input_tokens") or 0, output_tokens=usage.get("output_tokens") or 0)
    per_model = [u for u in (raw.get("model_usage") or {}).values() if isinstance(u, dict)]
    if not per_model:
        return None
    return TokenUsage(input_tokens=sum(u.get("input_tokens") or 0 for u in per_model),
                      output_tokens=sum(u.get("output_tokens") or 0 for u in per_model))


def _latency_ms(output: Document) -> float | None:
    seconds = output.get("time")
    return seconds * 1000 if isinstance(seconds, int | float) else None


def without_reserved(metadata: Document, reserved: set[str]) -> Document:
    """Metadata whose keys would collide with the dataset's id, input or target columns, renamed
    `inspect_<key>` (the dataset row holds both)."""
    if not reserved & set(metadata):
        return metadata
    renamed: Document = {}
    for key, value in metadata.items():
        new = key
        while new in reserved or (new != key and new in metadata):
            new = f"inspect_{new}"
        renamed[new] = value
    return renamed
