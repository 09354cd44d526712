"""What evalfleet knows of Inspect's log format (inspect-ai 0.3.285, the version tests run against):
versions, member names, file names and ids, how models are spelled, and how its JSON is written
(compact, UTF-8, NaN and Infinity as bare tokens), with the streamed writing of documents whose
parts grow with the sample count."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from shared.plan import ResolvedModel

Document = dict[str, Any]
Write = Callable[[bytes], Any]

LOG_VERSION = 2
READABLE_VERSIONS = (1, 2)
STATUSES = ("started", "success", "cancelled", "error")
HEADER_MEMBER = "header.json"
START_MEMBER = "_journal/start.json"  # the only header of a log whose run has not finished
SUMMARIES_MEMBER = "summaries.json"
SAMPLES_PREFIX = "samples/"
# evalfleet's own data in Inspect's `metadata` (the log's, each sample's), under this key.
METADATA_KEY = "evalfleet"
# Inspect's spelling of evalfleet's providers (`mock` is Inspect's `mockllm`).
PROVIDERS = {"openai": "openai", "mock": "mockllm", "python": "python"}
NO_MODEL = "none/none"  # Inspect's model of a task that uses none
# shortuuid's alphabet, which Inspect's ids use: no `-` or `_`, the separators of its file names.
ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ID_LENGTH = 22
_SENTINEL = "\ue000evalfleet-stream:{}\ue000"


def sample_member(sample_id: str, epoch: int) -> str:
    """The member of a sample in a `.eval` archive; the viewer fetches it by exactly this name."""
    return f"{SAMPLES_PREFIX}{sample_id}_epoch_{epoch}.json"


def short_id(seed: str) -> str:
    """A 22-character id in shortuuid's alphabet, derived from `seed` (the same seed, the same id)."""
    number = int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest()[:17], "big")
    digits = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, len(ID_ALPHABET))
        digits.append(ID_ALPHABET[digit])
    return "".join(digits)


def clean_filename_component(component: str) -> str:
    """As inspect_ai._util.file.clean_filename_component."""
    return component.replace("_", "-").replace("/", "-").replace(":", "-").replace("+", "-")


def log_file_stem(created: datetime, task: str, task_id: str) -> str:
    """Inspect's log name, `<created>_<task>_<id>` (its default INSPECT_EVAL_LOG_FILE_PATTERN):
    `inspect log list` reads the task and task id back from it."""
    stamp = created.isoformat(timespec="seconds")
    task_name = task if task.startswith("hf/") else task.rsplit("/", 1)[-1]
    return "_".join(clean_filename_component(part) for part in (stamp, task_name, task_id))


def inspect_model_name(model: ResolvedModel | None) -> str:
    """The model as Inspect spells it: `provider/name`."""
    if model is None:
        return NO_MODEL
    return f"{PROVIDERS[model.provider]}/{model.name}"


def utc(moment: datetime) -> datetime:
    """Inspect's times are UTC; a naive time is taken to be UTC, as Inspect takes it."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 time as Inspect reads it; None for anything else (Inspect's `""` included)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def dumps(value: Any) -> bytes:
    """Compact JSON as Inspect writes it: UTF-8, NaN and Infinity as bare tokens. Text that is not
    valid Unicode (a lone surrogate) is written escaped rather than refused."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def streamed(name: str) -> str:
    """A placeholder for a value `write_document` streams in place (see there)."""
    return _SENTINEL.format(name)


def write_document(write: Write, document: Document, streams: dict[str, Callable[[Write], None]]) -> None:
    """Write `document` as JSON, each `streamed(name)` placeholder replaced by what
    `streams[name]` writes: the parts that grow with the sample count never sit in memory."""
    text = dumps(document)
    markers = {dumps(streamed(name)): copy for name, copy in streams.items()}
    while True:
        found = [(text.find(marker), marker) for marker in markers if marker in text]
        if not found:
            break
        at, marker = min(found)
        write(text[:at])
        markers.pop(marker)(write)
        text = text[at + len(marker):]
    write(text)


class ArraySpool:
    """JSON values kept in a temporary file until they are written as one JSON array. A context
    manager."""

    def __init__(self, separator: bytes = b","):
        self._file: IO[bytes] = tempfile.TemporaryFile()
        self._separator = separator
        self.count = 0

    def __enter__(self) -> ArraySpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def add(self, value: bytes) -> None:
        if self.count:
            self._file.write(self._separator)
        self._file.write(value)
        self.count += 1

    def write_array(self, write: Write, opening: bytes = b"[", closing: bytes = b"]") -> None:
        self._file.flush()
        self._file.seek(0)
        write(opening if self.count else b"[")
        while chunk := self._file.read(1024 * 1024):
            write(chunk)
        write(closing if self.count else b"]")
