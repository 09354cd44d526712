"""Reading large JSON documents of other tools in pieces, with ijson: the top-level fields before a
given key (skipping bulky ones), and the items of a top-level array one at a time. Other tools
write NaN and Infinity as bare tokens, which ijson refuses; those documents are read through a
filter that turns the tokens into null (what evalfleet writes for them anyway)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import ijson

_OUTSIDE_STRINGS = re.compile(rb'"|-?Infinity|NaN')
# The rest of a string after its opening quote, up to (not including) the closing quote; stops
# early at a backslash that ends the buffer, whose escaped character is still to come.
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)
# Long enough to hold "-Infinity" but one byte: what may be a token cut by a buffer boundary.
_TOKEN_TAIL = len(b"-Infinity") - 1
_READ_SIZE = 256 * 1024


class NonFiniteAsNull:
    """A JSON byte stream in which NaN, Infinity and -Infinity outside strings read as null."""

    def __init__(self, source: IO[bytes]):
        self._source = source
        self._carry = b""
        self._in_string = False
        self._pending = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            data = self._source.read(_READ_SIZE)
            self._done = not data
            self._pending += self._transform(data, final=self._done)
        if size < 0:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def _transform(self, data: bytes, final: bool) -> bytes:
        buffer = self._carry + data
        end = len(buffer)
        out: list[bytes] = []
        position = 0
        while position < end:
            if self._in_string:
                stop = _STRING_BODY.match(buffer, position).end()  # type: ignore[union-attr]
                if stop < end and buffer[stop] == 0x22:
                    out.append(buffer[position:stop + 1])
                    position = stop + 1
                    self._in_string = False
                    continue
                out.append(buffer[position:stop])  # the string goes on in the next buffer
                position = stop
                break
            found = _OUTSIDE_STRINGS.search(buffer, position)
            if found is None:
                keep = end if final else max(position, end - _TOKEN_TAIL)
                out.append(buffer[position:keep])
                position = keep
                break
            if found.group() == b'"':
                out.append(buffer[position:found.end()])
                self._in_string = True
            else:
                out.append(buffer[position:found.start()] + b"null")
            position = found.end()
        self._carry = buffer[position:]
        if final and self._carry:
            out.append(self._carry)
            self._carry = b""
        return b"".join(out)


def top_level_fields(stream: Any, stop_at: str, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of a top-level JSON object up to the key `stop_at` (or the end), without the
    values at the dotted paths in `skip` (ijson prefixes, e.g. `eval.dataset.sample_ids`).
    Raises ValueError when the document is not an object, and ijson's errors when it is not JSON."""
    skipped = tuple(skip)
    fields: dict[str, Any] = {}
    key: str | None = None
    builder: ijson.ObjectBuilder | None = None
    for prefix, event, value in ijson.parse(stream, use_float=True):
        if prefix == "":
            if event == "map_key":
                if value == stop_at:
                    return fields
                key, builder = value, ijson.ObjectBuilder()
            elif event == "end_map":
                return fields
            elif event != "start_map":
                raise ValueError("the document is not a JSON object")
            continue
        if any(prefix == path or prefix.startswith(path + ".") for path in skipped):
            continue
        if event == "map_key" and f"{prefix}.{value}" in skipped:
            continue
        assert builder is not None
        builder.event(event, value)
        if prefix == key and event not in ("start_map", "start_array", "map_key"):
            fields[key] = builder.value
    return fields


def array_items(path: Path, prefix: str) -> Iterator[Any]:
    """The items of the array at `prefix` (e.g. `samples.item`), one at a time. A document with
    NaN or Infinity is read again through `NonFiniteAsNull`, from where the first pass stopped;
    the second pass raises whatever makes the document unreadable."""
    yielded = 0
    try:
        with open(path, "rb") as handle:
            for item in ijson.items(handle, prefix, use_float=True):
                yield item
                yielded += 1
        return
    except ijson.JSONError:
        pass
    with open(path, "rb") as handle:
        for index, item in enumerate(ijson.items(NonFiniteAsNull(handle), prefix, use_float=True)):
            if index >= yielded:
                yield item
