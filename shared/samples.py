"""Samples and datasets: reading rows (.jsonl, .json list, .csv) as a stream, mapping fields, and
selecting which samples a task specification evaluates (`head` or seeded `random`)."""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import SpecError, StoreError
from shared.plan import ResolvedDataset

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
# Part of the documented contract: changing it changes every `random` selection.
RANDOM_SUBSAMPLING_SEED = "evalfleet-subsampling-v1"


class ChatMessage(BaseModel):
    """One message of a conversation, in the OpenAI shape: a dataset's `input` may be a list of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str


# What a task sends to a model: one user message's text, or a whole conversation.
Prompt = str | list[ChatMessage]


class Sample(BaseModel):
    id: str
    input: str | list[ChatMessage] | None = None
    target: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def field(self, name: str, dataset: ResolvedDataset) -> Any:
        """The value of a dataset column by its name in the file, or None when absent."""
        if name == dataset.input_field:
            return self.input
        if name == dataset.target_field:
            return self.target
        if name == dataset.id_field:
            return self.id
        return self.metadata.get(name)


def dataset_format(path: str) -> str:
    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise SpecError(path, "path", f"unknown dataset format {suffix!r}; use .jsonl, .json or .csv")
    return FORMATS[suffix]


def iter_rows(path: str) -> Iterator[dict[str, Any]]:
    """Rows of a dataset file as dicts, streamed where the format allows it."""
    fmt = dataset_format(path)
    try:
        handle = _open_dataset(path, fmt)
    except FileNotFoundError:
        raise SpecError(path, "path", "dataset file not found") from None
    except OSError as exc:
        raise SpecError(path, "path", f"cannot read dataset: {exc}") from None
    try:
        yield from _rows(handle, fmt, path)
    except UnicodeDecodeError as exc:
        raise SpecError(path, None, f"not UTF-8 text: byte {exc.start}: {exc.reason}") from None


def _rows(handle: IO[str], fmt: str, path: str) -> Iterator[dict[str, Any]]:
    with handle:
        if fmt == "csv":
            for number, row in enumerate(csv.DictReader(handle)):
                if None in row:
                    raise SpecError(path, f"row {number}", "more values than the header has columns")
                yield row
        elif fmt == "json":
            try:
                rows = json.load(handle)
            except json.JSONDecodeError as exc:
                raise SpecError(path, None, f"malformed JSON: line {exc.lineno}: {exc.msg}") from None
            if not isinstance(rows, list):
                raise SpecError(path, None, "a .json dataset is a list of objects")
            for number, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise SpecError(path, f"row {number}", "each row must be an object")
                yield row
        else:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SpecError(path, f"line {number}", f"malformed JSON: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise SpecError(path, f"line {number}", "each line must be a JSON object")
                yield row


# `utf-8-sig` reads plain UTF-8 too, and drops the byte-order mark that spreadsheet programs put
# first: read as `utf-8`, the mark would become part of the first column's name.
DATASET_ENCODING = "utf-8-sig"


def _open_dataset(path: str, fmt: str) -> IO[str]:
    newline = "" if fmt == "csv" else None
    if not path.startswith("s3://"):
        return open(path, encoding=DATASET_ENCODING, newline=newline)  # noqa: SIM115
    # Spooled to a temporary file (not memory) so a large dataset streams like a local one.
    from shared.storage import store_for

    directory, _, name = path.rpartition("/")
    try:
        body = store_for(directory).open(name)
    except StoreError as exc:
        raise SpecError(path, "path", f"cannot read dataset: {exc}") from None
    spool = tempfile.TemporaryFile()
    shutil.copyfileobj(body, spool, 1024 * 1024)
    spool.seek(0)
    return io.TextIOWrapper(spool, encoding=DATASET_ENCODING, newline=newline)


def sample_id(row: dict[str, Any], index: int, dataset: ResolvedDataset) -> str:
    """A row's id field, or its row index when the field is missing or empty."""
    value = row.get(dataset.id_field)
    identifier = str(index) if value is None or value == "" else str(value)
    if "\x00" in identifier:
        # Databases refuse NUL in text: such an id could never be recorded.
        raise SpecError(dataset.path, f"row {index}: {dataset.id_field}",
                        "the sample id contains a NUL character (\\x00), which cannot be stored")
    try:
        identifier.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(dataset.path, f"row {index}: {dataset.id_field}",
                        "the sample id is not valid Unicode (a lone surrogate escape such as \\ud800)") from None
    return identifier


def to_sample(row: dict[str, Any], index: int, dataset: ResolvedDataset, *, needs_input: bool,
              needs_target: bool) -> Sample:
    where = f"row {index}"
    metadata = {
        k: v for k, v in row.items() if k not in (dataset.id_field, dataset.input_field, dataset.target_field)
    }
    raw_input = row.get(dataset.input_field)
    if raw_input is None and needs_input:
        raise SpecError(dataset.path, f"{where}: {dataset.input_field}",
                        f"no input field {dataset.input_field!r} in {where} (its fields: {', '.join(row) or 'none'}"
                        f"{_closest(dataset.input_field, row)}); set the dataset's `input_field` to the column that "
                        "holds the input")
    target = row.get(dataset.target_field)
    if target is None and needs_target:
        raise SpecError(
            dataset.path, f"{where}: {dataset.target_field}",
            f"no target field {dataset.target_field!r} in {where}, and the task needs one (its fields: "
            f"{', '.join(row) or 'none'}{_closest(dataset.target_field, row)}); set the dataset's `target_field` to "
            "the column that holds the target")
    return Sample(
        id=sample_id(row, index, dataset),
        input=_input(raw_input, dataset.path, f"{where}: {dataset.input_field}"),
        target=_text(target),
        metadata=metadata,
    )


def _closest(name: str, row: dict[str, Any]) -> str:
    from shared.spec import did_you_mean

    hint = did_you_mean(name, [str(k) for k in row])
    return f"{hint.replace('; ', ' ')}" if hint else ""


def _input(value: Any, path: str, field: str) -> str | list[ChatMessage] | None:
    """Text, or a conversation (a list of {role, content} messages); anything else is refused
    rather than sent to the model as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        messages = []
        for number, message in enumerate(value):
            try:
                messages.append(ChatMessage.model_validate(message))
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(part) for part in problem["loc"])
                raise SpecError(path, field, f"message {number}{'.' + where if where else ''}: {problem['msg']}; "
                                             "a list input is chat messages, each with a `role` (system, developer, "
                                             "user or assistant) and a text `content`") from None
        return messages
    raise SpecError(path, field, f"the input is {_kind(value)}; it must be text or a list of chat messages "
                                 "({role, content})")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, dict):
        return "an object"
    return "an empty list" if value == [] else f"a {type(value).__name__}"


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class MissingSampleField(SpecError):
    """A selected sample lacks a field the task needs (a prompt template placeholder, say). Raised
    against the dataset; the resolver re-raises it against the run file's config field."""

    def __init__(self, dataset: ResolvedDataset, index: int, name: str, config_field: str, present: list[str]):
        self.name = name
        self.config_field = config_field
        self.row = index
        self.present = present
        mapped = {dataset.id_field: "id", dataset.input_field: "input", dataset.target_field: "target"}
        hint = f" (`{name}` is the dataset's {mapped[name]} field: write {{{mapped[name]}}})" if name in mapped else ""
        super().__init__(dataset.path, f"row {index}",
                         f"{config_field} refers to {{{name}}}, which row {index} of {dataset.path} lacks{hint}; "
                         f"its fields: {', '.join(present)}")


def missing_field(row: dict[str, Any], dataset: ResolvedDataset, required: dict[str, str]) -> tuple[str, str] | None:
    """The first (field, config field) of `required` that a row does not offer as a sample field."""
    mapped = (dataset.id_field, dataset.input_field, dataset.target_field)
    for name, config_field in required.items():
        if name not in row or name in mapped:
            return name, config_field
    return None


def _present_fields(row: dict[str, Any], dataset: ResolvedDataset) -> list[str]:
    mapped = (dataset.id_field, dataset.input_field, dataset.target_field)
    return ["id", "input", "target"] + [name for name in row if name not in mapped]


@dataclass(frozen=True)
class Selection:
    """Which rows of a dataset a task specification evaluates, found by one validating pass."""

    total: int
    positions: frozenset[int] | None  # None: the first `total` rows

    def includes(self, index: int) -> bool:
        return index < self.total if self.positions is None else index in self.positions


class DuplicateIds:
    """Finds duplicate sample ids in one pass with memory that does not grow with the dataset: a
    fixed Bloom filter (2 MB, three bits per id) names the ids that may repeat, and only those are
    kept and checked exactly by `confirm`, over the rows once more. A set of every id would cost
    about 90 bytes per sample: 90 MB for a million."""

    BITS = 1 << 24

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)
        self.suspects: set[str] = set()

    def add(self, identifier: str) -> None:
        digest = hash(identifier) & 0xFFFFFFFFFFFFFFFF
        first, step = digest & 0xFFFFFFFF, (digest >> 32) | 1
        present = True
        for k in range(3):
            bit = (first + k * step) % self.BITS
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                present = False
                self._bits[byte] |= mask
        if present:
            self.suspects.add(identifier)

    def confirm(self, ids: Iterator[tuple[int, str]]) -> tuple[int, str] | None:
        """The (row index, id) of the first row repeating an earlier row's id, if any."""
        if not self.suspects:
            return None
        seen: set[str] = set()
        for index, identifier in ids:
            if identifier in self.suspects:
                if identifier in seen:
                    return index, identifier
                seen.add(identifier)
        return None


def select_samples(dataset: ResolvedDataset, num_samples: int | None, subsampling: str, *,
                   needs_input: bool, needs_target: bool, required: dict[str, str] | None = None) -> Selection:
    """Validate every row and choose the samples. `required`: fields (by name, each with the config
    field that needs it) every selected sample must have; see `MissingSampleField`.

    `random` keeps the `num_samples` rows with the smallest seeded hash of their sample id: the same
    choice on every run and machine, independent of row order, in memory bounded by `num_samples`.
    """
    ids = DuplicateIds()
    heap: list[tuple[int, int, bool]] = []  # (-rank, index, lacks a field): a max-heap of the smallest ranks
    count = 0
    first_lacking: int | None = None
    randomly = subsampling == "random" and num_samples is not None
    for index, row in enumerate(iter_rows(dataset.path)):
        sample = to_sample(row, index, dataset, needs_input=needs_input, needs_target=needs_target)
        ids.add(sample.id)
        count += 1
        lacking = bool(required) and missing_field(row, dataset, required) is not None
        if lacking and not randomly and (num_samples is None or index < num_samples):
            _raise_missing(dataset, index, row, required)
        if randomly:
            rank = random_rank(sample.id)
            if len(heap) < num_samples:
                heapq.heappush(heap, (-rank, index, lacking))
            elif -heap[0][0] > rank:
                heapq.heapreplace(heap, (-rank, index, lacking))
    if randomly:
        first_lacking = min((index for _, index, lacking in heap if lacking), default=None)
    if first_lacking is not None:
        row = next(r for i, r in enumerate(iter_rows(dataset.path)) if i == first_lacking)
        _raise_missing(dataset, first_lacking, row, required)
    if count == 0:
        raise SpecError(dataset.path, None, "the dataset has no rows")
    duplicate = ids.confirm((index, sample_id(row, index, dataset)) for index, row in enumerate(iter_rows(dataset.path)))
    if duplicate is not None:
        index, repeated = duplicate
        raise SpecError(dataset.path, f"row {index}: {dataset.id_field}", f"duplicate sample id {repeated!r}")
    if randomly and num_samples < count:
        return Selection(total=len(heap), positions=frozenset(index for _, index, _ in heap))
    return Selection(total=min(count, num_samples or count), positions=None)


def _raise_missing(dataset: ResolvedDataset, index: int, row: dict[str, Any], required: dict[str, str]) -> None:
    name, config_field = missing_field(row, dataset, required)
    raise MissingSampleField(dataset, index, name, config_field, _present_fields(row, dataset))


def random_rank(sample_id: str) -> int:
    digest = hashlib.blake2b(f"{RANDOM_SUBSAMPLING_SEED}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def iter_selected(dataset: ResolvedDataset, selection: Selection, *, needs_input: bool,
                  needs_target: bool) -> Iterator[tuple[int, Sample]]:
    """The selected samples in dataset order, with their position in the selection."""
    position = 0
    for index, row in enumerate(iter_rows(dataset.path)):
        if position >= selection.total:
            return
        if selection.includes(index):
            yield position, to_sample(row, index, dataset, needs_input=needs_input, needs_target=needs_target)
            position += 1


def with_epochs(selected: Iterable[tuple[int, Sample]], epochs: int) -> Iterator[tuple[int, Sample]]:
    """Each selected sample once per epoch, at its work positions: epoch e (from 1) of the sample
    at place p is position p * epochs + e - 1 (see shared.epochs)."""
    if epochs == 1:
        yield from selected
        return
    for place, sample in selected:
        for epoch in range(epochs):
            yield place * epochs + epoch, sample


T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last one shorter), taken from a stream as it goes."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
