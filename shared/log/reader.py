"""Reading task result logs from a path or an s3:// URL, in bounded memory:

* `read_log_header` reads the summary at the head of a log (version 2): the first kilobytes
  (on S3, a byte range), never the samples;
* `iter_samples` streams the samples one at a time, one line each as evalfleet writes them (any
  other JSON layout is parsed incrementally);
* `read_log` reads it all (or the header only); `list_logs` summarises every log under a
  directory or prefix, reading headers only (in parallel on S3).

Version 1 logs (summary after the samples) are read too: their header needs a pass over the
samples. A file that is not a log, a truncated log or a log of a newer version is a `LogError`
naming the file and what is wrong."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from shared.errors import SpecError, StoreError
from shared.log.models import (
    LOG_FILE_SUFFIX,
    LOG_VERSION,
    READABLE_VERSIONS,
    LogHeader,
    SampleRecord,
    TaskResultLog,
)
from shared.storage import store_for

HEAD_CHUNK = 64 * 1024
SAMPLE_IDS_MARKER = b'\n"sample_ids": ['
SAMPLES_MARKERS = (b'\n"samples": [\n', b'"samples": [\n')
LIST_THREADS = 16


class LogError(SpecError):
    """A file that is not a readable task result log: names the file and what is wrong."""

    def __init__(self, location: str, message: str):
        super().__init__(location, None, message)


def split_location(location: str) -> tuple[str, str]:
    """(directory or s3://bucket/prefix, file name) of a log's location."""
    location = location.rstrip("/")
    if location.startswith("s3://"):
        directory, _, name = location.rpartition("/")
        return directory, name
    path = os.path.abspath(location)
    return os.path.dirname(path), os.path.basename(path)


def open_log(location: str) -> IO[bytes]:
    """A log opened for reading (buffered; streamed from S3), or a LogError naming it."""
    directory, name = split_location(location)
    try:
        return store_for(directory).open(name)
    except FileNotFoundError:
        raise LogError(location, "no such file") from None
    except (OSError, StoreError) as exc:
        raise LogError(location, f"cannot read: {exc}") from None


def _head_bytes(location: str, size: int) -> bytes:
    """The first `size` bytes of a log: a ranged GET on S3, a short read elsewhere."""
    directory, name = split_location(location)
    try:
        head = store_for(directory).read_range(name, 0, size)
    except (OSError, StoreError) as exc:
        raise LogError(location, f"cannot read: {exc}") from None
    if head is None:
        raise LogError(location, "no such file")
    return head


def read_log_header(location: str) -> LogHeader:
    """The header of a log (everything but `sample_ids` and `samples`), reading only its head."""
    size = HEAD_CHUNK
    while True:
        head = _head_bytes(location, size)
        if not head.lstrip().startswith(b"{"):
            raise LogError(location, "not a task result log (not a JSON object)")
        marker = head.find(SAMPLE_IDS_MARKER)
        if marker >= 0:
            return _header_from(location, head[:marker].rstrip().rstrip(b",") + b"}")
        if len(head) < size:
            break  # the whole file, and no marker: another layout (version 1, or reformatted)
        size *= 4
    return _header_by_parsing(location)


def _header_from(location: str, data: bytes) -> LogHeader:
    try:
        document = json.loads(data)
    except json.JSONDecodeError:
        return _header_by_parsing(location)
    return _validate_header(location, document)


def _first_line(exc: Exception) -> str:
    """yajl's messages quote the document over several lines; a message is one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_version(location: str, document: Any) -> None:
    if not isinstance(document, dict) or "task_specification" not in document or "version" not in document:
        raise LogError(location, "not a task result log (no `version` and `task_specification`)")
    version = document["version"]
    if not isinstance(version, int) or version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > LOG_VERSION
        raise LogError(location, f"log version {version!r} is " + (
            f"newer than this evalfleet reads (up to {LOG_VERSION}): upgrade evalfleet" if newer
            else f"not one this evalfleet reads ({', '.join(map(str, READABLE_VERSIONS))})"))


def _validate_header(location: str, document: dict[str, Any]) -> LogHeader:
    _check_version(location, document)
    fields = {k: v for k, v in document.items() if k not in ("sample_ids", "samples")}
    try:
        return LogHeader.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(location, exc) from None


def _invalid(location: str, exc: ValidationError) -> LogError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return LogError(location, f"not a valid task result log: {where}: {first['msg']}")


def _header_by_parsing(location: str) -> LogHeader:
    """Any JSON layout: top-level fields parsed incrementally, the samples skipped as they stream."""
    import ijson

    document: dict[str, Any] = {}
    with open_log(location) as handle:
        try:
            for key, value in ijson.kvitems(handle, "", use_float=True):
                if key in ("sample_ids", "samples"):
                    continue
                document[key] = value
                if key == "version":
                    _check_version(location, {"version": value, "task_specification": None})
        except ijson.IncompleteJSONError as exc:
            raise LogError(location, f"truncated or malformed JSON: {_first_line(exc)}") from None
        except ijson.JSONError as exc:
            raise LogError(location, f"not a task result log (malformed JSON: {_first_line(exc)})") from None
    return _validate_header(location, document)


def iter_samples(location: str) -> Iterator[SampleRecord]:
    """The samples of a log, one at a time, in order; memory does not grow with the log."""
    for raw in iter_raw_samples(location):
        try:
            yield SampleRecord.model_validate(raw) if isinstance(raw, dict) else SampleRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise _invalid(location, exc) from None


def iter_raw_samples(location: str) -> Iterator[bytes | dict[str, Any]]:
    """Each sample as its JSON text (evalfleet's one-per-line layout) or, for other layouts, as a
    parsed dict; no validation."""
    handle = open_log(location)
    with handle:
        reader = io.BufferedReader(handle, 1024 * 1024) if not isinstance(handle, io.BufferedReader) else handle
        found = _skip_to_samples(reader)
        if found:
            lines = _sample_lines(location, reader)
            first = next(lines, None)
            if first is None or first.startswith(b"{"):
                if first is not None:
                    yield first
                yield from lines
                return
    # Not evalfleet's line layout: parse the whole document incrementally.
    yield from _parsed_samples(location)


def _skip_to_samples(reader: io.BufferedReader) -> bool:
    """Read up to the line after `"samples": [`. False when the layout is not evalfleet's."""
    start = reader.peek(16)[:16].lstrip()
    if not start.startswith(b"{"):
        return False
    for line in reader:
        if line.endswith(b'"samples": [\n') and (line == b'"samples": [\n' or line.endswith(b', "samples": [\n')):
            return True
    return False


def _sample_lines(location: str, reader: io.BufferedReader) -> Iterator[bytes]:
    for line in reader:
        if not line.endswith(b"\n"):
            raise LogError(location, "truncated: the file ends inside the samples")
        stripped = line.rstrip(b"\n")
        if stripped.startswith(b"]"):
            return
        if stripped.endswith(b","):
            stripped = stripped[:-1]
        if stripped:
            yield stripped
    raise LogError(location, "truncated: the samples end before the log does")


def _parsed_samples(location: str) -> Iterator[dict[str, Any]]:
    import ijson

    with open_log(location) as handle:
        try:
            yield from ijson.items(handle, "samples.item", use_float=True)
        except ijson.IncompleteJSONError as exc:
            raise LogError(location, f"truncated or malformed JSON: {_first_line(exc)}") from None
        except ijson.JSONError as exc:
            raise LogError(location, f"not a task result log (malformed JSON: {_first_line(exc)})") from None


def read_log(location: str, header_only: bool = False) -> TaskResultLog:
    """A whole log, validated against the schema; `header_only`: without `sample_ids` and
    `samples` (None), reading only the head of the file."""
    if header_only:
        return TaskResultLog(**dict(read_log_header(location)), sample_ids=None, samples=None)
    # A whole read checks every top-level field, also any written after the samples.
    header = _header_by_parsing(location)
    samples = list(iter_samples(location))
    return TaskResultLog(**dict(header), sample_ids=[s.id for s in samples], samples=samples)


def read_task_result_log(location: str) -> TaskResultLog:
    """`read_log(location)`, kept for callers of earlier versions."""
    return read_log(location)


class LogSummary(BaseModel):
    """One line of `evalfleet logs list`: where a log is and what its header says."""

    location: str
    version: int
    evaluation_key: str
    spec_key: str
    display_name: str
    run_id: str
    retry_of: str | None
    status: str
    sample_count: int
    samples_errored: int
    metrics: dict[str, dict[str, float | None]]
    started_at: datetime
    completed_at: datetime
    model: str | None
    task: str
    dataset: str

    @classmethod
    def of(cls, location: str, header: LogHeader) -> LogSummary:
        spec = header.task_specification
        return cls(
            location=location, version=header.version, evaluation_key=header.evaluation.key, spec_key=spec.key,
            display_name=spec.display_name, run_id=header.run_id, retry_of=header.retry_of, status=header.status,
            sample_count=header.sample_count, samples_errored=header.samples_errored,
            metrics={label: result.metrics for label, result in header.results.items()},
            started_at=header.stats.started_at, completed_at=header.stats.completed_at,
            model=spec.model.key if spec.model else None, task=spec.task.key, dataset=spec.dataset.key,
        )


def log_locations(log_dir: str, recursive: bool = True) -> Iterator[str]:
    """Paths or URLs of the `.json` files under a log directory or S3 prefix."""
    store = store_for(log_dir)
    for relpath in store.list():
        if not relpath.endswith(LOG_FILE_SUFFIX) or (not recursive and "/" in relpath):
            continue
        yield store.uri(relpath)


def list_logs(log_dir: str, recursive: bool = True, status: str | None = None) -> list[LogSummary]:
    """Every task result log under a directory or s3:// prefix (files that are not logs are
    skipped), from their headers, oldest first."""
    locations = list(log_locations(log_dir, recursive))

    def summary(location: str) -> LogSummary | None:
        try:
            return LogSummary.of(location, read_log_header(location))
        except LogError:
            return None

    if log_dir.startswith("s3://"):
        with ThreadPoolExecutor(LIST_THREADS) as pool:
            found = list(pool.map(summary, locations))
    else:
        found = [summary(location) for location in locations]
    logs = [s for s in found if s is not None and (status is None or s.status == status)]
    return sorted(logs, key=lambda s: (s.started_at, s.location))


def retryable(logs: list[LogSummary]) -> list[LogSummary]:
    """Logs whose task failed or has missing samples (status error, cancelled or started) and that
    no successful retry (of this run, or of a retry of it) has superseded."""
    parent = {log.run_id: log.retry_of for log in logs}

    def ancestors(run_id: str) -> set[str]:
        seen: set[str] = set()
        while run_id in parent and parent[run_id] and parent[run_id] not in seen:
            run_id = parent[run_id]
            seen.add(run_id)
        return seen

    superseded = {(ancestor, log.spec_key) for log in logs if log.status == "success"
                  for ancestor in ancestors(log.run_id)}
    return [log for log in logs if log.status != "success" and (log.run_id, log.spec_key) not in superseded]


def task_result_log_schema() -> dict[str, Any]:
    return TaskResultLog.model_json_schema()


def list_task_result_logs(log_dir: str) -> Iterator[str]:
    """URIs of the `.json` files under a log directory (see `list_logs` for their headers)."""
    return log_locations(log_dir)
