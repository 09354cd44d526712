"""Maintenance of the result store, all safe while runs are going on: rebuilding the indexes
from the packs, compacting packs whose entries were superseded, packing a store written before
packs existed, and its figures (`evalfleet store reindex|compact|migrate|stats`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared import keys, packs, store_index
from shared.result_store import PACK_ENTRIES, ResultStore, StoreEntry, _parse, legacy_path, pack_path

logger = logging.getLogger(__name__)
Progress = Callable[[int], None]
# Packs with fewer entries than this are merged by compaction (a pack written on a timer at the
# end of a run, or by a worker that had little to do).
SMALL_PACK = PACK_ENTRIES // 4


def pack_names(store: ResultStore) -> list[str]:
    return sorted(path[len("packs/"):-len(".pack")] for path in store.blobs.list("packs")
                  if path.endswith(".pack"))


def reindex(store: ResultStore, on_pack: Progress | None = None) -> int:
    """Rebuild the durable index and the Redis index from the packs themselves (journals of
    stopped processes are packed first), then mark the Redis index complete. Returns how many
    keys the store holds."""
    store.flush()
    started_ns = time.time_ns()
    names = pack_names(store)
    done: set[str] = set()
    todo = list(names)
    number = 0
    while todo:
        name = todo.pop(0)
        done.add(name)
        number += 1
        if not todo:
            # Packs written since the listing (compaction moves entries into new packs before it
            # deletes the old ones): indexed too, so nothing is left out of a complete index.
            todo = [later for later in pack_names(store) if later not in done]
        data = store.blobs.read_bytes(pack_path(name))
        if data is None:
            continue  # compacted away since the listing
        try:
            index = packs.read_index(data, len(data))
            if index is None:
                raise packs.CorruptPack("truncated")
            store_index.record_pack(store.engine, name, index, len(data))
            if store.redis is not None:
                _refill(store, ((key, at, packs.read_frame(data[offset:offset + length]))
                                for key, (offset, length, at) in index.items()))
        except packs.CorruptPack as exc:
            logger.warning("skipping unreadable pack %s: %s", name, exc)
        if on_pack is not None:
            on_pack(number)
    store_index.forget_missing(store.engine, names, started_ns)
    if store.redis is not None:
        if store.blobs.any_under("results"):
            _refill(store, ((path.rsplit("/", 1)[-1][:-5], 0, raw) for path, raw in _legacy_files(store)))
        store.redis.set(keys.STORE_INDEX_COMPLETE, "1")
    return store_index.totals(store.engine)[2] + _legacy_count(store)


def refill_redis(store: ResultStore, on_pack: Progress | None = None) -> int:
    """What a process does in the background when it finds the Redis index incomplete."""
    count = reindex(store, on_pack)
    logger.info("result store reindexed: %d entries", count)
    return count


def _refill(store: ResultStore, entries: Iterator[tuple[str, int, bytes]]) -> None:
    pipe = store.redis.pipeline(transaction=False)
    pending = 0
    for key, written_at, raw in entries:
        entry = _parse(raw)
        if entry is None:
            continue
        store._index(key, written_at, entry, pipe)
        pending += 1
        if pending >= 500:
            pipe.execute()
            pending = 0
    pipe.execute()


def _legacy_files(store: ResultStore) -> Iterator[tuple[str, bytes]]:
    for path in store.blobs.list("results"):
        if path.endswith(".json"):
            raw = store.blobs.read_bytes(path)
            if raw is not None:
                yield path, raw


def _legacy_count(store: ResultStore) -> int:
    if not store.blobs.any_under("results"):
        return 0
    return sum(1 for path in store.blobs.list("results") if path.endswith(".json"))


@dataclass
class Compaction:
    packs_before: int
    packs_after: int
    entries_moved: int
    bytes_before: int
    bytes_after: int
    packs_deleted: int


def compact(store: ResultStore, *, min_dead: float = 0.5, on_pack: Progress | None = None) -> Compaction:
    """Rewrite the current entries of packs that are mostly superseded (a fraction `min_dead` or
    more of their entries replaced by newer ones) or small, into full packs, then delete the old
    packs. Keys move only if they still point at the copied entry, so a key written meanwhile
    keeps its newer entry; a reader that looked up an old pack just before it went looks again."""
    store.flush()
    uses = store_index.pack_uses(store.engine)
    before = (len(uses), sum(use.bytes for use in uses))
    wasteful = [use for use in uses if use.live == 0 or (use.entries - use.live) / use.entries >= min_dead]
    small = [use for use in uses if use not in wasteful and use.entries < SMALL_PACK]
    # One small pack alone is already as packed as it gets.
    chosen = wasteful + (small if len(small) + sum(1 for use in wasteful if use.live) >= 2 else [])
    buffer: list[tuple[str, int, bytes]] = []
    origins: dict[str, tuple[int, int]] = {}
    moved = 0

    def write() -> None:
        nonlocal moved, buffer
        if not buffer:
            return
        data, index = packs.build_pack(buffer)
        name = packs.new_pack_id()
        store.blobs.write_bytes(pack_path(name), data)
        moved += store_index.move_entries(store.engine, name, index, len(data), origins)
        buffer = []
        origins.clear()

    for number, use in enumerate(chosen, 1):
        live = store_index.live_keys(store.engine, use.id) if use.live else {}
        if live:
            data = store.blobs.read_bytes(pack_path(use.name))
            if data is not None:
                for key, (offset, length, written_at) in live.items():
                    try:
                        raw = packs.read_frame(data[offset:offset + length])
                    except packs.CorruptPack:
                        logger.warning("pack %s: an unreadable entry is dropped by compaction", use.name)
                        continue
                    buffer.append((key, written_at, raw))
                    origins[key] = (use.id, written_at)
                    if len(buffer) >= PACK_ENTRIES:
                        write()
        if on_pack is not None:
            on_pack(number)
    write()
    deleted = 0
    for use in chosen:
        if store_index.forget_pack(store.engine, use.id):
            store.blobs.delete(pack_path(use.name))
            deleted += 1
    after = store_index.pack_uses(store.engine)
    return Compaction(before[0], len(after), moved, before[1], sum(use.bytes for use in after), deleted)


def migrate(store: ResultStore, on_entry: Progress | None = None) -> int:
    """Pack a store written one file per entry, then delete those files. Entries written since
    (in packs) are newer and stay current. Returns how many entries were packed."""
    buffer: list[tuple[str, int, bytes]] = []
    paths: list[str] = []
    count = 0

    def write() -> None:
        nonlocal buffer, paths
        if buffer:
            data, index = packs.build_pack(buffer)
            name = packs.new_pack_id()
            store.blobs.write_bytes(pack_path(name), data)
            store_index.record_pack(store.engine, name, index, len(data))
            for path in paths:
                store.blobs.delete(path)
        buffer, paths = [], []

    for path, raw in _legacy_files(store):
        if _parse(raw) is None:
            logger.warning("skipping an unreadable result store entry %s", path)
            continue
        key = path.rsplit("/", 1)[-1][:-len(".json")]
        if legacy_path(key) != path:
            continue
        buffer.append((key, 0, raw))
        paths.append(path)
        count += 1
        if len(buffer) >= PACK_ENTRIES:
            write()
        if on_entry is not None:
            on_entry(count)
    write()
    store._legacy = None
    return count


@dataclass
class StoreStats:
    location: str
    packs: int
    entries: int
    current_entries: int
    bytes: int
    unpacked_files: int
    legacy_entries: int
    redis_index_complete: bool | None


def stats(store: ResultStore) -> StoreStats:
    packs_count, entries, current = store_index.totals(store.engine)
    size = sum(use.bytes for use in store_index.pack_uses(store.engine))
    journals = sum(1 for _ in store.journal.directory.glob("*.journal")) if store.journal.directory.exists() else 0
    return StoreStats(
        location=store.blobs.uri("packs").rsplit("/", 1)[0], packs=packs_count, entries=entries,
        current_entries=current, bytes=size, unpacked_files=journals, legacy_entries=_legacy_count(store),
        redis_index_complete=None if store.redis is None else bool(store.redis.exists(keys.STORE_INDEX_COMPLETE)),
    )


__all__ = ["Compaction", "StoreEntry", "StoreStats", "compact", "migrate", "reindex", "stats"]
