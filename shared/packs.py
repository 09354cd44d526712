"""The pack format of the result store: many entries in one object, so a million samples cost
thousands of writes, not a million.

    [frame 0][frame 1]...[frame N-1][index][footer]

Each frame is one entry's JSON, zstd-compressed on its own, so one entry is read with one ranged
read of (offset, length). The index is the JSON `{"version": 1, "entries": {key: [offset, length,
written_at_ns], ...}}` (zstd-compressed; `written_at_ns` orders versions of one key across packs), and the footer is 16 bytes: the magic `EFPACK01` and the index's
length (8 bytes, big-endian). A pack is written whole (a temporary file renamed into place, or
one PUT), so a reader sees a complete pack or none; anything that does not parse is treated as
absent (a cache miss), never as an error."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable

import zstandard

MAGIC = b"EFPACK01"
FOOTER_BYTES = 16
INDEX_VERSION = 1
# Enough of a pack's tail to hold the index of a few hundred entries in one ranged read.
TAIL_GUESS = 64 * 1024
_compressors = threading.local()
_sequence = 0
_sequence_lock = threading.Lock()


class CorruptPack(ValueError):
    """A pack (or one of its frames) that does not parse."""


def _compressor() -> zstandard.ZstdCompressor:
    found = getattr(_compressors, "c", None)
    if found is None:
        found = _compressors.c = zstandard.ZstdCompressor(level=3)
    return found


def _decompress(data: bytes) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptPack(str(exc)) from None


def new_pack_id() -> str:
    """Sortable by time, unique across hosts and processes."""
    global _sequence
    with _sequence_lock:
        _sequence += 1
        sequence = _sequence
    return f"{time.time_ns():020d}-{socket.gethostname()[:24]}-{os.getpid()}-{sequence}"


Located = tuple[int, int, int]  # offset, length, written_at_ns


def build_pack(entries: Iterable[tuple[str, int, bytes]]) -> tuple[bytes, dict[str, Located]]:
    """The pack bytes of (key, written_at_ns, entry JSON) triples, and where each entry is. A key
    given twice keeps its newest entry."""
    frames = bytearray()
    index: dict[str, Located] = {}
    compressor = _compressor()
    for key, written_at, data in entries:
        if key in index and index[key][2] > written_at:
            continue
        frame = compressor.compress(data)
        index[key] = (len(frames), len(frame), written_at)
        frames += frame
    encoded = compressor.compress(json.dumps({"version": INDEX_VERSION, "entries": index},
                                             separators=(",", ":")).encode())
    frames += encoded
    frames += MAGIC + len(encoded).to_bytes(8, "big")
    return bytes(frames), index


def read_index(tail: bytes, total_size: int | None = None) -> dict[str, Located] | None:
    """The index of a pack from its last bytes (at least its index and footer), or None when the
    bytes given end before the index starts (read more). Raises CorruptPack."""
    if len(tail) < FOOTER_BYTES or tail[-FOOTER_BYTES:-8] != MAGIC:
        raise CorruptPack("no pack footer")
    length = int.from_bytes(tail[-8:], "big")
    if length + FOOTER_BYTES > len(tail):
        if total_size is not None and length + FOOTER_BYTES > total_size:
            raise CorruptPack("the index is longer than the pack")
        return None
    raw = tail[-FOOTER_BYTES - length:-FOOTER_BYTES]
    try:
        document = json.loads(_decompress(raw))
        return {key: (int(at[0]), int(at[1]), int(at[2])) for key, at in document["entries"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptPack(f"unreadable index: {exc}") from None


def index_length(tail: bytes) -> int:
    """How many bytes the index and footer take (from a tail holding at least the footer)."""
    if len(tail) < FOOTER_BYTES or tail[-FOOTER_BYTES:-8] != MAGIC:
        raise CorruptPack("no pack footer")
    return int.from_bytes(tail[-8:], "big") + FOOTER_BYTES


def read_frame(frame: bytes) -> bytes:
    """One entry's JSON from its frame."""
    return _decompress(frame)


def entries_of(pack: bytes) -> dict[str, tuple[int, bytes]]:
    """Every entry of a whole pack: key -> (written_at_ns, entry JSON)."""
    index = read_index(pack, len(pack))
    if index is None:
        raise CorruptPack("truncated")
    return {key: (at, read_frame(pack[offset:offset + length])) for key, (offset, length, at) in index.items()}
