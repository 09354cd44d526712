"""Zip archives member by member, in memory that does not grow with the member count: a writer
(DEFLATE, the central directory spooled to a temporary file, ZIP64 when sizes or counts need it)
and readers of one member at a time that also handle Zstandard (method 93), which the standard
library of Python before 3.14 cannot decompress."""

from __future__ import annotations

import io
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

STORED, DEFLATED, ZSTANDARD = 0, 8, 93
_LOCAL_HEADER = struct.Struct("<4s2H3HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_ZIP64_EXTRA = 0x0001
_MAX_32 = 0xFFFFFFFF
_MAX_16 = 0xFFFF
_UTF8_NAMES = 0x0800
_UNIX = 3
# Regular file, rw-r--r--, in the high half of the external attributes (as `zip` and Python write it).
_FILE_ATTRIBUTES = (0o100644 & 0xFFFF) << 16
_CHUNK = 1024 * 1024


def _dos_time(moment: time.struct_time) -> tuple[int, int]:
    year = max(moment.tm_year, 1980)
    return (moment.tm_hour << 11 | moment.tm_min << 5 | moment.tm_sec // 2,
            (year - 1980) << 9 | moment.tm_mon << 5 | moment.tm_mday)


class ZipWriter:
    """Writes `path` as a zip archive of DEFLATE members, each written whole (`write`) or streamed
    (`open`). Members and their central directory records go to disk as they are made, so a
    million members cost no more memory than one. A context manager; the archive is complete once
    it exits without an exception."""

    def __init__(self, path: Path, modified: float | None = None):
        self._out = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._directory = tempfile.TemporaryFile()
        self._count = 0
        self._dos_time, self._dos_date = _dos_time(time.gmtime(modified if modified is not None else time.time()))

    def __enter__(self) -> ZipWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._out.close()
            self._directory.close()

    def write(self, name: str, data: bytes) -> None:
        """A member whose bytes are all at hand."""
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        packed = compressor.compress(data) + compressor.flush()
        crc = zlib.crc32(data)
        zip64 = len(data) >= _MAX_32 or len(packed) >= _MAX_32
        offset = self._out.tell()
        encoded, flags = self._name(name)
        extra = struct.pack("<2H2Q", _ZIP64_EXTRA, 16, len(data), len(packed)) if zip64 else b""
        sizes = (_MAX_32, _MAX_32) if zip64 else (len(packed), len(data))
        self._out.write(_LOCAL_HEADER.pack(_LOCAL_SIGNATURE, 45 if zip64 else 20, flags, DEFLATED, self._dos_time,
                                           self._dos_date, crc, *sizes, len(encoded), len(extra)))
        self._out.write(encoded + extra)
        self._out.write(packed)
        self._record(encoded, flags, crc, len(packed), len(data), offset, zip64)

    @contextmanager
    def open(self, name: str) -> Iterator[_MemberWriter]:
        """A member written in pieces (`.write(bytes)`), for members too large to hold at once. Its
        local header reserves ZIP64 sizes (its length is unknown until the end) and is completed
        in place when the member is."""
        offset = self._out.tell()
        encoded, flags = self._name(name)
        self._out.write(_LOCAL_HEADER.pack(_LOCAL_SIGNATURE, 45, flags, DEFLATED, self._dos_time, self._dos_date,
                                           0, _MAX_32, _MAX_32, len(encoded), 20))
        self._out.write(encoded)
        extra_at = self._out.tell()
        self._out.write(struct.pack("<2H2Q", _ZIP64_EXTRA, 16, 0, 0))
        member = _MemberWriter(self._out)
        yield member
        packed_size = member.finish()
        end = self._out.tell()
        self._out.seek(offset + 14)
        self._out.write(struct.pack("<L", member.crc))
        self._out.seek(extra_at + 4)
        self._out.write(struct.pack("<2Q", member.size, packed_size))
        self._out.seek(end)
        self._record(encoded, flags, member.crc, packed_size, member.size, offset, True)

    def close(self) -> None:
        if self._out.closed:
            return
        start = self._out.tell()
        self._directory.seek(0)
        while chunk := self._directory.read(_CHUNK):
            self._out.write(chunk)
        size = self._out.tell() - start
        if self._count >= _MAX_16 or size >= _MAX_32 or start >= _MAX_32:
            end64 = self._out.tell()
            self._out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, _UNIX << 8 | 45, 45, 0, 0,
                                        self._count, self._count, size, start))
            self._out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
        self._out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(self._count, _MAX_16),
                                    min(self._count, _MAX_16), min(size, _MAX_32), min(start, _MAX_32), 0))
        self._out.close()
        self._directory.close()

    @staticmethod
    def _name(name: str) -> tuple[bytes, int]:
        try:
            return name.encode("ascii"), 0
        except UnicodeEncodeError:
            return name.encode("utf-8"), _UTF8_NAMES

    def _record(self, encoded: bytes, flags: int, crc: int, packed: int, size: int, offset: int,
                zip64_local: bool) -> None:
        # The central record carries ZIP64 fields only for the values that need them (as Python's
        # zipfile does); readers compare its name and method with the local header's, not its extras.
        large = [value for value in (size, packed, offset) if value >= _MAX_32]
        extra = struct.pack(f"<2H{len(large)}Q", _ZIP64_EXTRA, 8 * len(large), *large) if large else b""
        needed = 45 if (large or zip64_local) else 20
        self._directory.write(_CENTRAL_HEADER.pack(
            _CENTRAL_SIGNATURE, needed, _UNIX, needed, 0, flags, DEFLATED, self._dos_time, self._dos_date, crc,
            min(packed, _MAX_32), min(size, _MAX_32), len(encoded), len(extra), 0, 0, 0, _FILE_ATTRIBUTES,
            min(offset, _MAX_32)))
        self._directory.write(encoded + extra)
        self._count += 1


class _MemberWriter:
    def __init__(self, out: IO[bytes]):
        self._out = out
        self._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.crc = 0
        self.size = 0
        self._packed = 0

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        packed = self._compressor.compress(data)
        self._packed += len(packed)
        self._out.write(packed)

    def finish(self) -> int:
        tail = self._compressor.flush()
        self._out.write(tail)
        return self._packed + len(tail)


def latest_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members in archive order, each name once: where a name repeats (a sample appended again
    by a resumed run), the last entry is the one that counts, as for Inspect's own readers."""
    latest = archive.NameToInfo
    return [info for info in archive.infolist() if latest.get(info.filename) is info]


def open_member(archive: zipfile.ZipFile, handle: IO[bytes], info: zipfile.ZipInfo) -> IO[bytes]:
    """A member's decompressed bytes as a stream. `handle` is the archive's file, opened for
    reading; Zstandard members are read from it directly (their frames may be concatenated)."""
    if info.compress_type != ZSTANDARD:
        return archive.open(info)
    import zstandard

    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_length, extra_length = struct.unpack("<2H", header[26:30])
    handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    compressed = _Window(handle, info.compress_size)
    reader = zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True)
    return _CheckedStream(reader, info)


def read_member(archive: zipfile.ZipFile, handle: IO[bytes], info: zipfile.ZipInfo) -> bytes:
    with open_member(archive, handle, info) as stream:
        return stream.read()


class _Window(io.RawIOBase):
    """The next `size` bytes of a file, as a stream of their own."""

    def __init__(self, handle: IO[bytes], size: int):
        self._handle = handle
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        data = self._handle.read(min(len(buffer), self._left))
        if not data:
            raise zipfile.BadZipFile("the archive ends inside a member")
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


class _CheckedStream(io.RawIOBase):
    """Decompressed member bytes, checked against the member's size and CRC-32 at the end (as
    zipfile checks the members it decompresses itself)."""

    def __init__(self, reader: IO[bytes], info: zipfile.ZipInfo):
        self._reader = reader
        self._info = info
        self._crc = 0
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._reader.read(len(buffer))
        except Exception as exc:  # zstandard.ZstdError, and the archive ending early
            raise zipfile.BadZipFile(f"cannot decompress {self._info.filename}: {exc}") from exc
        if not data:
            if self._size != self._info.file_size or self._crc != self._info.CRC:
                raise zipfile.BadZipFile(f"bad CRC-32 or size for {self._info.filename}")
            return 0
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._reader.close()
        super().close()
