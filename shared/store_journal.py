"""The result store's journal: entries a process saved and has not packed yet, in a local
append-only file, so a sample's cache entry is durable (it survives the process being killed)
before its result is committed and its message acknowledged, while packs still gather a few
hundred entries each.

Each process appends to its own file, `<directory>/<name>.journal`, one line per entry:
`{"k": key, "at": written_at_ns, "e": entry}`. The process holds an exclusive `flock` on every
journal file it owns until the file is packed and deleted; the kernel drops the lock when the
process dies, so any other process on the host can tell an orphan (a lock it can take) from a
live journal, and packs it. A line cut short by a kill was never acknowledged, and is skipped."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.packs import new_pack_id

logger = logging.getLogger(__name__)
SUFFIX = ".journal"
OPENING_SUFFIX = ".opening"


@dataclass
class Sealed:
    """A journal file closed to new entries, still locked by its owner until packed."""

    path: Path
    fd: int
    entries: list[tuple[str, int, bytes]] = field(default_factory=list)
    # Left by a process that died: its entries may be missing from Redis too.
    orphan: bool = False

    def discard(self) -> None:
        """Delete the file (its entries are in a pack now), then drop the lock."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Journal:
    """This process's journal in `directory`. Thread-safe."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._entries: list[tuple[str, int, bytes]] = []
        self.opened_at = 0.0

    def append(self, key: str, written_at: int, entry: bytes) -> int:
        """Write one entry through to the file; returns how many the open file holds."""
        return self.append_many([(key, written_at, entry)])

    def append_many(self, entries: list[tuple[str, int, bytes]]) -> int:
        """Write entries through to the file in one write; returns how many the open file holds."""
        data = b"".join(b'{"k":"%s","at":%d,"e":%s}\n' % (key.encode(), at, entry) for key, at, entry in entries)
        with self._lock:
            if self._fd is None:
                self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]  # type: ignore[arg-type]
            self._entries.extend(entries)
            return len(self._entries)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{new_pack_id()}{SUFFIX}"
        # Created and locked under another name, then renamed: a `.journal` file is locked from
        # the moment it exists, so no other packer can take a just-created one for an orphan.
        opening = path.with_suffix(OPENING_SUFFIX)
        fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(opening, path)
        self._fd, self._path, self._entries = fd, path, []
        self.opened_at = time.monotonic()

    @property
    def pending(self) -> int:
        return len(self._entries)

    def seal(self) -> Sealed | None:
        """Close the open file to new entries (the next append opens another) and hand it over."""
        with self._lock:
            if self._fd is None or not self._entries:
                return None
            sealed = Sealed(self._path, self._fd, self._entries)  # type: ignore[arg-type]
            self._fd = self._path = None
            self._entries = []
            return sealed

    def orphans(self) -> Iterator[Sealed]:
        """Journal files of processes that died before packing them, each locked for the caller."""
        try:
            names = sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return
        for path in names:
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # its owner is alive (or another process is packing it)
                continue
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)  # packed and deleted by its owner just now
                continue
            yield Sealed(path, fd, list(read_journal(fd)), orphan=True)


def read_journal(fd: int) -> Iterator[tuple[str, int, bytes]]:
    """The entries of a journal file; a line cut short (the writer was killed) is skipped."""
    with os.fdopen(os.dup(fd), "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                logger.info("skipping a journal entry cut short (line %d)", number)
                continue
            try:
                document = json.loads(line)
                yield document["k"], int(document["at"]), json.dumps(document["e"], separators=(",", ":")).encode()
            except (ValueError, KeyError, TypeError):
                logger.warning("skipping an unreadable journal line %d", number)
