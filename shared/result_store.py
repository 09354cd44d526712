"""The result store: model outputs and scores kept across runs so no one pays twice for the same
inference. One entry per inference key holds the model output and the scores computed from it,
one per scorer identity (score key).

Where an entry lives, in the order it is written:

1. the process's journal (shared.store_journal), a local append-only file: durable before the
   sample's result is committed and its message acknowledged;
2. Redis, when there is one: the hash `keys.cached_result(key)` with the whole entry inline, so a
   lookup is one round trip;
3. a pack (shared.packs) in the blob store (a directory, or S3), `packs/<name>.pack`, a few
   hundred entries written at once by a background thread, with the pack registered in the
   database's durable index (shared.store_index) in the same step; then the journal file goes.

A Redis miss is a miss while `keys.STORE_INDEX_COMPLETE` is set. Without it (Redis flushed or
restarted), or without Redis, a lookup reads the durable index (one query) and then the entry
(one ranged read of its pack), and a background reindex refills Redis. Stores written before
packs existed (one `results/<k[:2]>/<k>.json` per entry) are still read, and `evalfleet store
migrate` packs them."""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, Field

from shared import keys, packs, store_index
from shared.coalescing import Coalescer
from shared.errors import StoreError
from shared.log import Score, TokenUsage
from shared.settings import Settings, get_settings
from shared.storage import LocalStore, S3Store, store_for
from shared.store_journal import Journal, Sealed

logger = logging.getLogger(__name__)
INFERENCE_FIELD = "inference"
WRITTEN_AT_FIELD = "at"
# The lock of a background reindex, refreshed after every pack: a process that dies mid-way
# leaves it to another within a minute.
REINDEX_LOCK_S = 60
REINDEX_CHECK_S = 2.0
REINDEX_BATCH = 500
# A pack is written when the journal holds this many entries, or its oldest is this old.
PACK_ENTRIES = 256
PACK_MAX_WAIT_S = 2.0
PACKER_TICK_S = 0.25
ORPHAN_CHECK_S = 30.0
# Set the Redis hash to an entry unless it already holds a newer one (concurrent writers and a
# reindex never put an older entry back).
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'at')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'at', ARGV[1], unpack(ARGV, 2))
return 1
"""


class CachedInference(BaseModel):
    output: str
    usage: TokenUsage | None = None
    latency_ms: float | None = None


class CachedScores(BaseModel):
    scores: dict[str, Score]


class StoreEntry(BaseModel):
    """What the store keeps per inference key."""

    inference: CachedInference
    scores: dict[str, CachedScores] = Field(default_factory=dict, description="By score key.")


Found = tuple[CachedInference | None, CachedScores | None]


class StoreWrite(NamedTuple):
    """One `save`: see ResultStore.save."""

    inference_key: str
    inference: CachedInference
    score_key: str
    scores: CachedScores | None
    known: bool = False


def pack_path(name: str) -> str:
    return f"packs/{name}.pack"


def legacy_path(key: str) -> str:
    return f"results/{key[:2]}/{key}.json"


def _parse(raw: bytes | None) -> StoreEntry | None:
    if raw is None:
        return None
    try:
        return StoreEntry.model_validate_json(raw)
    except ValueError:
        return None


class ResultStore:
    def __init__(self, blobs: LocalStore | S3Store, redis=None, *, engine=None,  # noqa: ANN001
                 journal_dir: Path, auto_reindex: bool = True):
        self.blobs = blobs
        self.redis = redis
        self._engine = engine
        self.journal = Journal(journal_dir)
        self.auto_reindex = auto_reindex and redis is not None
        self._next_index_check = 0.0
        # Entries saved here and not yet in the durable index: key -> (written_at, entry JSON).
        self._unpacked: dict[str, tuple[int, bytes]] = {}
        self._unpacked_lock = threading.Lock()
        self._failed: list[Sealed] = []
        self._pack_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._packer: threading.Thread | None = None
        self._next_orphan_check = 0.0
        self._legacy: bool | None = None
        self._set_if_newer = redis.register_script(_SET_IF_NEWER) if redis is not None else None
        # Concurrent lookups of a process's threads share one round trip.
        self._lookups = Coalescer(self.lookup_many, "evalfleet-store-lookups")
        if self.auto_reindex:
            self._ensure_index()

    @property
    def engine(self):  # noqa: ANN201
        if self._engine is None:
            from shared.db import get_engine

            self._engine = get_engine()
        return self._engine

    # -- reading ------------------------------------------------------------------------------

    def lookup(self, inference_key: str, score_key: str) -> Found:
        """The cached output of a sample and, if computed before, its scores under `score_key`.
        Concurrent lookups of a process's threads share one round trip (`Coalescer`)."""
        unpacked = self._unpacked.get(inference_key)
        if unpacked is not None:
            return _found(_parse(unpacked[1]), score_key)
        return self._lookups.call((inference_key, score_key))

    def lookup_many(self, pairs: list[tuple[str, str]]) -> list[Found]:
        """`lookup` for many samples at once: one Redis round trip (or one index query) for all."""
        found: list[Found | None] = [None] * len(pairs)
        unknown: list[int] = []
        for index, (ikey, skey) in enumerate(pairs):
            unpacked = self._unpacked.get(ikey)
            if unpacked is not None:
                found[index] = _found(_parse(unpacked[1]), skey)
            else:
                unknown.append(index)
        if unknown and self.redis is not None:
            pipe = self.redis.pipeline(transaction=False)
            for index in unknown:
                ikey, skey = pairs[index]
                pipe.hmget(keys.cached_result(ikey), [INFERENCE_FIELD, skey])
            pipe.exists(keys.STORE_INDEX_COMPLETE)
            *replies, complete = pipe.execute()
            still = []
            for index, (raw_inference, raw_scores) in zip(unknown, replies, strict=True):
                if raw_inference is not None:
                    found[index] = (CachedInference.model_validate_json(raw_inference),
                                    CachedScores.model_validate_json(raw_scores) if raw_scores else None)
                elif complete:
                    found[index] = (None, None)
                else:
                    still.append(index)
            unknown = still
            if unknown:
                self._ensure_index()
        if unknown:
            entries = self.durable_entries([pairs[index][0] for index in unknown])
            for index in unknown:
                ikey, skey = pairs[index]
                entry = entries.get(ikey)
                found[index] = _found(entry[1] if entry else None, skey)
            if self.redis is not None and entries:
                pipe = self.redis.pipeline(transaction=False)
                for ikey, (written_at, entry) in entries.items():
                    self._index(ikey, written_at, entry, pipe)
                pipe.execute()
        return found  # type: ignore[return-value]

    def entry(self, inference_key: str) -> StoreEntry | None:
        """The whole entry of an inference key (every score key), wherever it is."""
        unpacked = self._unpacked.get(inference_key)
        if unpacked is not None:
            return _parse(unpacked[1])
        if self.redis is not None:
            fields = self.redis.hgetall(keys.cached_result(inference_key))
            if fields.get(INFERENCE_FIELD.encode()) is not None:
                return StoreEntry(
                    inference=CachedInference.model_validate_json(fields.pop(INFERENCE_FIELD.encode())),
                    scores={name.decode(): CachedScores.model_validate_json(value) for name, value in fields.items()
                            if name.decode() != WRITTEN_AT_FIELD})
            if self.redis.exists(keys.STORE_INDEX_COMPLETE):
                return None
        found = self.durable_entries([inference_key]).get(inference_key)
        return found[1] if found else None

    def durable_entries(self, inference_keys: list[str]) -> dict[str, tuple[int, StoreEntry]]:
        """Entries from the packs (one index query, one ranged read per pack involved), and from
        a store written before packs existed. Key -> (written_at, entry)."""
        found: dict[str, tuple[int, StoreEntry]] = {}
        wanted_keys = inference_keys
        # A pack compacted away between the index query and the read: its entries are in a newer
        # pack by then, so the index is asked once more for them.
        for _ in range(2):
            gone = self._read_located(store_index.locate(self.engine, wanted_keys), found)
            if not gone:
                break
            wanted_keys = gone
        missing = [key for key in inference_keys if key not in found]
        if missing and self._has_legacy():
            for key in missing:
                entry = _parse(self.blobs.read_bytes(legacy_path(key)))
                if entry is not None:
                    found[key] = (0, entry)
        return found

    def _read_located(self, located: dict[str, store_index.Location],
                      found: dict[str, tuple[int, StoreEntry]]) -> list[str]:
        """Read located entries into `found`; returns the keys whose pack no longer exists."""
        by_pack: dict[str, list[tuple[str, store_index.Location]]] = defaultdict(list)
        for key, location in located.items():
            by_pack[location.pack].append((key, location))
        gone: list[str] = []
        for pack, wanted in by_pack.items():
            start = min(location.offset for _, location in wanted)
            end = max(location.offset + location.length for _, location in wanted)
            span = self.blobs.read_range(pack_path(pack), start, end - start)
            if span is None:
                gone += [key for key, _ in wanted]
                continue
            for key, location in wanted:
                frame = span[location.offset - start:location.offset - start + location.length]
                try:
                    entry = _parse(packs.read_frame(frame))
                except packs.CorruptPack:
                    entry = None
                if entry is None:
                    logger.warning("ignoring an unreadable entry of pack %s", pack)
                    continue
                found[key] = (location.written_at, entry)
        return gone

    def _has_legacy(self) -> bool:
        if self._legacy is None:
            self._legacy = self.blobs.any_under("results")
        return self._legacy

    # -- writing ------------------------------------------------------------------------------

    def save(self, inference_key: str, inference: CachedInference, score_key: str,
             scores: CachedScores | None, *, known: bool = False) -> None:
        """Store an output and its scores: journal, then Redis; a pack follows within seconds.
        `known`: the output may be cached already; if it is the same output, the new scores join
        the ones there, otherwise the entry is replaced (scores belong to the output they were
        computed from)."""
        self.save_many([StoreWrite(inference_key, inference, score_key, scores, known)])

    def save_many(self, writes: list[StoreWrite]) -> None:
        """`save` for many entries at once: one journal write and one Redis round trip."""
        entries: list[tuple[str, StoreEntry]] = []
        for write in writes:
            entry = self.entry(write.inference_key) if write.known else None
            if entry is None or entry.inference.output != write.inference.output:
                entry = StoreEntry(inference=write.inference)
            if write.scores is not None:
                entry.scores[write.score_key] = write.scores
            entries.append((write.inference_key, entry))
        self.put_many(entries)

    def put_many(self, entries: list[tuple[str, StoreEntry]]) -> None:
        written_at = time.time_ns()
        lines = [(key, written_at, entry.model_dump_json().encode()) for key, entry in entries]
        with self._unpacked_lock:
            for key, at, raw in lines:
                self._unpacked[key] = (at, raw)
        pending = self.journal.append_many(lines)
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=False)
            for key, entry in entries:
                self._index(key, written_at, entry, pipe)
            pipe.execute()
        self._start_packer()
        if pending >= PACK_ENTRIES:
            self._wake.set()

    def _index(self, inference_key: str, written_at: int, entry: StoreEntry, pipe=None) -> None:  # noqa: ANN001
        fields = [INFERENCE_FIELD, entry.inference.model_dump_json()]
        for name, value in entry.scores.items():
            fields += [name, value.model_dump_json()]
        self._set_if_newer(keys=[keys.cached_result(inference_key)], args=[written_at, *fields],
                           client=pipe if pipe is not None else self.redis)

    # -- packing ------------------------------------------------------------------------------

    def start_packing(self) -> None:
        """Start the packer now (a worker at start: it packs journals that stopped processes
        left on this host, without waiting for a first sample)."""
        self._start_packer()
        self._wake.set()

    def _start_packer(self) -> None:
        if self._packer is None:
            with self._pack_lock:
                if self._packer is None and not self._closed:
                    self._packer = threading.Thread(target=self._pack_loop, name="evalfleet-store-packer",
                                                    daemon=True)
                    self._packer.start()

    def _pack_loop(self) -> None:
        while not self._closed:
            self._wake.wait(PACKER_TICK_S)
            self._wake.clear()
            try:
                self.pack_due()
            except Exception:  # noqa: BLE001 - the packer must outlive any one failure
                logger.exception("result store packer")

    def pack_due(self, *, everything: bool = False) -> int:
        """Write the packs that are due (all pending entries with `everything`); returns how many
        packs were written."""
        with self._pack_lock:
            written = 0
            journal = self.journal
            due = journal.pending >= PACK_ENTRIES or (
                journal.pending and (everything or time.monotonic() - journal.opened_at >= PACK_MAX_WAIT_S))
            sealed = journal.seal() if due else None
            batches = self._failed + ([sealed] if sealed else [])
            self._failed = []
            if time.monotonic() >= self._next_orphan_check or everything:
                self._next_orphan_check = time.monotonic() + ORPHAN_CHECK_S
                batches += list(journal.orphans())
            for batch in batches:
                if self._write_pack(batch):
                    written += 1
                else:
                    self._failed.append(batch)
            return written

    def _write_pack(self, sealed: Sealed) -> bool:
        """One pack from a sealed journal: blob, durable index, Redis (for a dead process's
        journal), then the journal goes. False (and the journal kept) when any step failed."""
        name = sealed.path.name.rsplit(".", 1)[0]
        orphan = sealed.orphan
        try:
            if sealed.entries:
                data, index = packs.build_pack(sealed.entries)
                self.blobs.write_bytes(pack_path(name), data)
                store_index.record_pack(self.engine, name, index, len(data))
                if orphan and self.redis is not None:
                    pipe = self.redis.pipeline(transaction=False)
                    for key, written_at, raw in sealed.entries:
                        entry = _parse(raw)
                        if entry is not None and index[key][2] == written_at:
                            self._index(key, written_at, entry, pipe)
                    pipe.execute()
        except Exception as exc:  # noqa: BLE001 - kept and tried again next tick
            logger.warning("could not write result store pack %s (kept, will retry): %s", name, exc)
            return False
        with self._unpacked_lock:
            for key, written_at, _ in sealed.entries:
                held = self._unpacked.get(key)
                if held is not None and held[0] == written_at:
                    del self._unpacked[key]
        sealed.discard()
        if orphan:
            logger.warning("packed %d result store entries left by a process that stopped", len(sealed.entries))
        return True

    def flush(self) -> None:
        """Pack everything saved so far (tests, maintenance commands, and process exit)."""
        self.pack_due(everything=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._packer is not None:
            self._packer.join(5)
        try:
            self.pack_due(everything=True)
        except Exception:  # noqa: BLE001 - at exit: the journal stays and is packed later
            logger.exception("could not pack the result store's last entries; they stay in its journal")

    # -- the Redis index ----------------------------------------------------------------------

    def _ensure_index(self) -> None:
        """Start rebuilding Redis in the background when it is incomplete and nobody else is;
        asked at most every REINDEX_CHECK_S seconds."""
        if not self.auto_reindex or time.monotonic() < self._next_index_check:
            return
        self._next_index_check = time.monotonic() + REINDEX_CHECK_S
        if self.redis.exists(keys.STORE_INDEX_COMPLETE):
            return
        if self.redis.set(keys.STORE_REINDEX_LOCK, "1", nx=True, ex=REINDEX_LOCK_S):
            from shared.store_upkeep import refill_redis

            def refill() -> None:
                try:
                    refill_redis(self, on_pack=lambda _: self.redis.expire(keys.STORE_REINDEX_LOCK, REINDEX_LOCK_S))
                except Exception:  # noqa: BLE001 - lookups read through meanwhile; another process retries
                    logger.exception("background reindex of the result store failed")
                finally:
                    self.redis.delete(keys.STORE_REINDEX_LOCK)

            threading.Thread(target=refill, name="evalfleet-store-reindex", daemon=True).start()


def _found(entry: StoreEntry | None, score_key: str) -> Found:
    if entry is None:
        return None, None
    return entry.inference, entry.scores.get(score_key)


_store: ResultStore | None = None
_store_lock = threading.Lock()


def redis_client(settings: Settings):  # noqa: ANN201
    url = settings.effective_redis_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30,
                                retry_on_timeout=True)


def journal_dir(settings: Settings, blobs: LocalStore | S3Store) -> Path:
    """Beside a local store, the journal is in it; an S3 store's journal is in this host's home."""
    if isinstance(blobs, LocalStore):
        return blobs.root / "journal"
    digest = hashlib.sha256(settings.effective_store_url.encode()).hexdigest()[:16]
    return (settings.home / "store-journal" / digest).resolve()


def result_store(*, auto_reindex: bool = True) -> ResultStore:
    """This process's result store, built from the settings on first use."""
    global _store
    with _store_lock:
        if _store is None:
            settings = get_settings()
            blobs = store_for(settings.effective_store_url)
            _store = ResultStore(blobs, redis_client(settings), journal_dir=journal_dir(settings, blobs),
                                 auto_reindex=auto_reindex)
        return _store


def reset_result_store() -> None:
    """Pack what this process saved and forget the store (the settings changed)."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None:
        store.close()


@atexit.register
def _close_at_exit() -> None:
    if _store is not None:
        _store.close()


__all__ = ["CachedInference", "CachedScores", "ResultStore", "StoreEntry", "StoreError", "result_store"]
