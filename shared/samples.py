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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, Field

from shared.errors import SpecError, StoreError
from shared.plan import ResolvedDataset

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
# Part of the documented contract: changing it changes every `random` selection.
RANDOM_SUBSAMPLING_SEED = "evalfleet-subsampling-v1"


class Sample(BaseModel):
    id: str
    input: str | None = None
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


def _open_dataset(path: str, fmt: str) -> IO[str]:
    newline = "" if fmt == "csv" else None
    if not path.startswith("s3://"):
        return open(path, encoding="utf-8", newline=newline)  # noqa: SIM115
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
    return io.TextIOWrapper(spool, encoding="utf-8", newline=newline)


def sample_id(row: dict[str, Any], index: int, dataset: ResolvedDataset) -> str:
    """A row's id field, or its row index when the field is missing or empty."""
    value = row.get(dataset.id_field)
    return str(index) if value is None or value == "" else str(value)


def to_sample(row: dict[str, Any], index: int, dataset: ResolvedDataset, *, needs_input: bool,
              needs_target: bool) -> Sample:
    where = f"row {index}"
    metadata = {
        k: v for k, v in row.items() if k not in (dataset.id_field, dataset.input_field, dataset.target_field)
    }
    raw_input = row.get(dataset.input_field)
    if raw_input is None and needs_input:
        raise SpecError(dataset.path, f"{where}: {dataset.input_field}", "input field is missing")
    target = row.get(dataset.target_field)
    if target is None and needs_target:
        raise SpecError(
            dataset.path, f"{where}: {dataset.target_field}", "target field is missing and the task needs one"
        )
    return Sample(
        id=sample_id(row, index, dataset),
        input=_text(raw_input),
        target=_text(target),
        metadata=metadata,
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


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
                   needs_input: bool, needs_target: bool) -> Selection:
    """Validate every row and choose the samples.

    `random` keeps the `num_samples` rows with the smallest seeded hash of their sample id: the same
    choice on every run and machine, independent of row order, in memory bounded by `num_samples`.
    """
    ids = DuplicateIds()
    heap: list[tuple[int, int]] = []  # (-rank, index): a max-heap of the smallest ranks
    count = 0
    for index, row in enumerate(iter_rows(dataset.path)):
        sample = to_sample(row, index, dataset, needs_input=needs_input, needs_target=needs_target)
        ids.add(sample.id)
        count += 1
        if subsampling == "random" and num_samples is not None:
            rank = random_rank(sample.id)
            if len(heap) < num_samples:
                heapq.heappush(heap, (-rank, index))
            elif -heap[0][0] > rank:
                heapq.heapreplace(heap, (-rank, index))
    if count == 0:
        raise SpecError(dataset.path, None, "the dataset has no rows")
    duplicate = ids.confirm((index, sample_id(row, index, dataset)) for index, row in enumerate(iter_rows(dataset.path)))
    if duplicate is not None:
        index, repeated = duplicate
        raise SpecError(dataset.path, f"row {index}: {dataset.id_field}", f"duplicate sample id {repeated!r}")
    if subsampling == "random" and num_samples is not None and num_samples < count:
        return Selection(total=len(heap), positions=frozenset(index for _, index in heap))
    return Selection(total=min(count, num_samples or count), positions=None)


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
