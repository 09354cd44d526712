"""Writing task result logs: samples stream into a spool while their summary is folded, then the
log is written header first (`LogHeader` in field order), then `sample_ids` and `samples`, one
sample per line. Memory stays flat whatever the sample count; the file appears whole or not at all
(a temporary file renamed into place, or one S3 upload). NaN and infinity are written as `null`."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from typing import Any

from shared.log.models import LOG_FILE_SUFFIX, LogHeader, TaskResultLog
from shared.storage import store_for

COPY_CHUNK = 1024 * 1024


class SampleSpool:
    """A log's sample ids and samples (as JSON text), kept in temporary files until the header,
    which summarises them, is known. A context manager."""

    def __init__(self) -> None:
        self._ids = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._samples = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.count = 0

    def __enter__(self) -> SampleSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ids.close()
        self._samples.close()

    def add(self, sample_id: str, sample_json: str) -> None:
        separator = ",\n" if self.count else ""
        self._ids.write((", " if self.count else "") + json.dumps(sample_id))
        self._samples.write(separator + sample_json)
        self.count += 1

    def copy_ids(self, out) -> None:  # noqa: ANN001
        self._ids.flush()
        self._ids.seek(0)
        shutil.copyfileobj(self._ids, out, COPY_CHUNK)

    def copy_samples(self, out) -> None:  # noqa: ANN001
        self._samples.flush()
        self._samples.seek(0)
        shutil.copyfileobj(self._samples, out, COPY_CHUNK)


def log_relpath(evaluation_key: str, run_id: str, spec_key: str) -> str:
    return f"{evaluation_key}/{run_id}/{spec_key}{LOG_FILE_SUFFIX}"


def write_task_result_log(log_dir: str, relpath: str, header: LogHeader, spool: SampleSpool) -> str:
    """Write a log under a log directory (a path or s3:// URL); returns its URI."""
    store = store_for(log_dir)
    head = header.model_dump_json()
    with store.writer(relpath) as out:
        out.write(head[:-1] + ',\n"sample_ids": [')
        spool.copy_ids(out)
        out.write('],\n"samples": [\n')
        spool.copy_samples(out)
        out.write("\n]}\n")
    return store.uri(relpath)


def write_log(log: TaskResultLog, location: str) -> str:
    """Write a whole log object to a path or an s3:// URL (atomically); returns its URI."""
    from shared.log.reader import split_location

    if log.samples is None:
        raise ValueError("a log read header-only has no samples to write; read it whole")
    header = LogHeader.model_validate({name: getattr(log, name) for name in LogHeader.model_fields})
    with SampleSpool() as spool:
        for sample in log.samples:
            spool.add(sample.id, sample.model_dump_json())
        directory, name = split_location(location)
        return write_task_result_log(directory, name, header, spool)


def finite_or_none(value: Any) -> Any:
    """NaN and infinity as None, recursively: what strict JSON can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
