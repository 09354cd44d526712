"""The stream helpers under the format modules: NaN and Infinity in other tools' JSON read as
null, arrays read item by item, and zip archives written and read one member at a time (ZIP64
past 65,535 members; Zstandard members, which Python's zipfile cannot read before 3.14)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

from shared.interop import jsonstream
from shared.interop.jsonstream import NonFiniteAsNull, array_items, top_level_fields
from shared.interop.zipstream import ZipWriter, latest_members, read_member

DOCUMENT = ('{"a": [NaN, Infinity, -Infinity, 1.5], "text": "NaN \\" Infinity \\\\", '
            '"more": ["ends in a backslash \\\\", "-Infinity"], "b": {"c": NaN, "sample_ids": [1, 2]}, '
            '"samples": [{"id": 1, "v": NaN}]}')


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 64, 1 << 20])
def test_nan_and_infinity_outside_strings_read_as_null_whatever_the_buffer_size(monkeypatch, read_size):
    monkeypatch.setattr(jsonstream, "_READ_SIZE", read_size)
    filtered = NonFiniteAsNull(io.BytesIO(DOCUMENT.encode())).read()
    assert json.loads(filtered) == json.loads(DOCUMENT, parse_constant=lambda token: None)


def test_top_level_fields_stop_at_a_key_and_skip_paths():
    fields = top_level_fields(NonFiniteAsNull(io.BytesIO(DOCUMENT.encode())), "samples", skip=("b.sample_ids",))
    assert fields == {"a": [None, None, None, 1.5], "text": 'NaN " Infinity \\',
                      "more": ["ends in a backslash \\", "-Infinity"], "b": {"c": None}}


def test_array_items_read_a_document_with_nan_once_each(tmp_path):
    path = tmp_path / "log.json"
    path.write_text('{"samples": [{"id": 1}, {"id": 2}, {"id": 3, "v": NaN}, {"id": 4}]}', encoding="utf-8")
    assert list(array_items(path, "samples.item")) == [{"id": 1}, {"id": 2}, {"id": 3, "v": None}, {"id": 4}]


def test_archives_of_more_than_65535_members_use_zip64_and_read_back(tmp_path):
    path = tmp_path / "many.zip"
    with ZipWriter(path) as archive:
        for index in range(70_000):
            archive.write(f"m/{index}.json", b'{"i":%d}' % index)
        with archive.open("streamed.json") as member:
            for _ in range(3):
                member.write(b"x" * 100_000)
    with zipfile.ZipFile(path) as read:
        assert len(read.infolist()) == 70_001
        assert read.read("m/69999.json") == b'{"i":69999}'
        assert read.read("streamed.json") == b"x" * 300_000
        assert read.testzip() is None


def _zip_with_zstd_member(path: Path, name: str, data: bytes, crc: int | None = None) -> None:
    """A one-member archive compressed as Inspect compresses its members: Zstandard (method 93),
    here in two concatenated frames, as Inspect writes large members."""
    packed = zstandard.ZstdCompressor().compress(data[:10]) + zstandard.ZstdCompressor().compress(data[10:])
    encoded = name.encode()
    crc = zlib.crc32(data) if crc is None else crc
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 63, 0, 93, 0, 0x21, crc, len(packed), len(data), len(encoded), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 63, 63, 0, 93, 0, 0x21, crc, len(packed), len(data),
                          len(encoded), 0, 0, 0, 0, 0, 0)
    body = local + encoded + packed
    directory = central + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    path.write_bytes(body + directory + end)


def test_zstandard_members_are_read_and_checked(tmp_path):
    data = json.dumps({"id": 1, "input": "x" * 500}).encode()
    path = tmp_path / "zstd.eval"
    _zip_with_zstd_member(path, "samples/1_epoch_1.json", data)
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        [info] = latest_members(archive)
        assert info.compress_type == 93
        assert read_member(archive, handle, info) == data
    _zip_with_zstd_member(path, "samples/1_epoch_1.json", data, crc=12345)
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive, pytest.raises(zipfile.BadZipFile, match="CRC"):
        read_member(archive, handle, archive.infolist()[0])


def test_a_name_written_twice_counts_once_the_last_time(tmp_path):
    path = tmp_path / "twice.zip"
    with ZipWriter(path) as archive:
        archive.write("samples/1_epoch_1.json", b"first")
        archive.write("samples/2_epoch_1.json", b"other")
        archive.write("samples/1_epoch_1.json", b"second")
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        assert [(i.filename, read_member(archive, handle, i)) for i in latest_members(archive)] == [
            ("samples/2_epoch_1.json", b"other"), ("samples/1_epoch_1.json", b"second")]
