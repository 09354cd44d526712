"""Opening an Inspect log for reading, `.eval` or `.json` (told apart by their content): its header
(everything but the samples; the list of sample ids is skipped) and its samples as plain JSON
objects, one at a time. For a `.eval`, one member at a time, whatever its compression (its central
directory, an index entry per member, is read whole, as Inspect's own reader reads it); for a
`.json`, incrementally with ijson. Anything unreadable is a `LogError` naming the file."""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import ijson

from shared.interop.inspect.format import (
    HEADER_MEMBER,
    LOG_VERSION,
    READABLE_VERSIONS,
    SAMPLES_PREFIX,
    START_MEMBER,
    STATUSES,
    Document,
    parse_time,
)
from shared.interop.jsonstream import NonFiniteAsNull, array_items, top_level_fields
from shared.interop.zipstream import latest_members, open_member, read_member
from shared.log.reader import LogError
from shared.log.writer import finite_or_none

# What the header does not need and can be long: one entry per sample.
SKIPPED_HEADER_FIELDS = ("eval.dataset.sample_ids",)
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
_JSON_LEADS = b"\xef\xbb\xbf \t\r\n"


class InspectLogFile:
    """An Inspect log opened for reading; a context manager. `header` is read on opening and
    checked (an Inspect log of a version this reads); `samples()` streams the samples."""

    def __init__(self, path: Path, header: Document, samples: Callable[[], Iterator[Document]],
                 close: Callable[[], None]):
        self.path = path
        self.header = header
        self.samples = samples
        self._close = close

    def __enter__(self) -> InspectLogFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    @classmethod
    def open(cls, path: Path) -> InspectLogFile:
        try:
            with open(path, "rb") as handle:
                start = handle.read(4096)
        except OSError as exc:
            raise LogError(str(path), f"cannot read: {exc.strerror or exc}") from None
        if start.startswith(_ZIP_STARTS):
            log = _open_eval(path)
        elif start.lstrip(_JSON_LEADS).startswith(b"{"):
            log = _open_json(path)
        else:
            raise LogError(str(path), "not an Inspect log (neither a .eval zip archive nor a JSON document)")
        try:
            _check_header(path, log.header)
        except LogError:
            log._close()
            raise
        return log


def _check_header(path: Path, header: Document) -> None:
    spec = header.get("eval")
    if not isinstance(spec, dict) or not isinstance(spec.get("task"), str) or not isinstance(spec.get("model"), str):
        raise LogError(str(path), "not an Inspect log (no `eval` with a task and a model before the samples)")
    if parse_time(spec.get("created")) is None:
        raise LogError(str(path), f"not an Inspect log (`eval.created` is not an ISO-8601 time: {spec.get('created')!r})")
    found = header.get("version", LOG_VERSION)  # Inspect reads a missing version as the current one
    if not isinstance(found, int) or isinstance(found, bool) or found not in READABLE_VERSIONS:
        raise LogError(str(path), f"Inspect log version {found} is not supported "
                                  f"(versions {', '.join(map(str, READABLE_VERSIONS))} are)")
    if header.get("status", "started") not in STATUSES:
        raise LogError(str(path), f"not an Inspect log (unknown status {header.get('status')!r})")


def _open_eval(path: Path) -> InspectLogFile:
    handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed with the log
    name = HEADER_MEMBER
    try:
        archive = zipfile.ZipFile(handle)
        members = {info.filename: info for info in latest_members(archive)}
        if HEADER_MEMBER not in members:
            name = START_MEMBER  # a run that has not finished: its journal's start record
        if name not in members:
            raise LogError(str(path), f"not an Inspect log (a zip archive without {HEADER_MEMBER} or {START_MEMBER})")
        with open_member(archive, handle, members[name]) as stream:
            header = top_level_fields(NonFiniteAsNull(stream), "samples", skip=SKIPPED_HEADER_FIELDS)
        if name == START_MEMBER:
            header.setdefault("status", "started")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        handle.close()
        raise LogError(str(path), f"truncated or damaged .eval archive: {exc}") from None
    except (ijson.JSONError, ValueError) as exc:
        handle.close()
        raise LogError(str(path), f"not an Inspect log (its {name} is not a JSON object: {_first_line(exc)})") from None
    except BaseException:
        handle.close()
        raise
    sample_members = sorted((info for info in members.values()
                             if info.filename.startswith(SAMPLES_PREFIX) and info.filename.endswith(".json")),
                            key=_member_order)

    def samples() -> Iterator[Document]:
        for info in sample_members:
            try:
                sample = json.loads(read_member(archive, handle, info))
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise LogError(str(path), f"truncated or damaged .eval archive: {info.filename}: {exc}") from None
            except NotImplementedError as exc:
                raise LogError(str(path), f"{info.filename}: unsupported compression: {exc}") from None
            except ValueError as exc:
                raise LogError(str(path), f"{info.filename} is not JSON: {exc}") from None
            if not isinstance(sample, dict):
                raise LogError(str(path), f"{info.filename} is not a sample (a JSON object)")
            yield finite_or_none(sample)  # as the .json reader reads NaN and Infinity

    def close() -> None:
        archive.close()
        handle.close()

    return InspectLogFile(path, header, samples, close)


def _open_json(path: Path) -> InspectLogFile:
    try:
        with open(path, "rb") as handle:
            header = top_level_fields(NonFiniteAsNull(handle), "samples", skip=SKIPPED_HEADER_FIELDS)
    except ijson.IncompleteJSONError as exc:
        raise LogError(str(path), f"truncated or malformed JSON: {_first_line(exc)}") from None
    except (ijson.JSONError, ValueError) as exc:
        raise LogError(str(path), f"not an Inspect log (malformed JSON: {_first_line(exc)})") from None

    def samples() -> Iterator[Document]:
        try:
            for sample in array_items(path, "samples.item"):
                if not isinstance(sample, dict):
                    raise LogError(str(path), "not an Inspect log (a sample is not a JSON object)")
                yield sample
        except ijson.IncompleteJSONError as exc:
            raise LogError(str(path), f"truncated or malformed JSON: {_first_line(exc)}") from None
        except ijson.JSONError as exc:
            raise LogError(str(path), f"malformed JSON: {_first_line(exc)}") from None

    return InspectLogFile(path, header, samples, lambda: None)


def _member_order(info: zipfile.ZipInfo) -> tuple[int, str]:
    """Inspect's order of samples, (epoch, id with numbers padded), from a member's name: archives
    hold them in the order they finished."""
    stem = info.filename[len(SAMPLES_PREFIX):-len(".json")]
    sample_id, _, epoch = stem.rpartition("_epoch_")
    return (int(epoch) if epoch.isdigit() else 0, sample_id.zfill(20) if sample_id.isdigit() else sample_id)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
