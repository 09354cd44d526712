"""The result store: model outputs and scores kept across runs so no one pays twice for the same
inference. Durable blobs (a local directory, or S3 in a cluster) are the truth; Redis, when there
is one, is the index and the fast path.

One entry per inference key holds the model output and the scores computed from it, one per
scorer identity (score key): `results/<key[:2]>/<key>.json` in the blob store, and the Redis hash
`keys.cached_result(key)` with the field `inference` and one field per score key. A lookup is one
Redis round trip or one blob read. A Redis miss counts as a miss only while
`keys.STORE_INDEX_COMPLETE` is set; after a flush or a restart lookups read the durable store (and
write back to Redis) while one process reindexes."""

from __future__ import annotations

import logging
import threading
import time

from pydantic import BaseModel, Field

from shared import keys
from shared.log import Score, TokenUsage
from shared.settings import Settings, get_settings
from shared.storage import LocalStore, S3Store, store_for

logger = logging.getLogger(__name__)
REINDEX_LOCK_S = 3600
REINDEX_BATCH = 500
INFERENCE_FIELD = "inference"


class CachedInference(BaseModel):
    output: str
    usage: TokenUsage | None = None
    latency_ms: float | None = None


class CachedScores(BaseModel):
    scores: dict[str, Score]


class StoreEntry(BaseModel):
    """What the durable store keeps per inference key."""

    inference: CachedInference
    scores: dict[str, CachedScores] = Field(default_factory=dict, description="By score key.")


def _relpath(key: str) -> str:
    return f"results/{key[:2]}/{key}.json"


REINDEX_CHECK_S = 2.0


class ResultStore:
    def __init__(self, blobs: LocalStore | S3Store, redis=None, *, auto_reindex: bool = True):  # noqa: ANN001
        self.blobs = blobs
        self.redis = redis
        self.auto_reindex = auto_reindex and redis is not None
        self._next_index_check = 0.0
        if self.auto_reindex:
            self._ensure_index()

    def lookup(self, inference_key: str, score_key: str) -> tuple[CachedInference | None, CachedScores | None]:
        """The cached output of a sample and, if computed before, its scores under `score_key`."""
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(keys.cached_result(inference_key), [INFERENCE_FIELD, score_key])
            pipe.exists(keys.STORE_INDEX_COMPLETE)
            (raw_inference, raw_scores), index_complete = pipe.execute()
            if raw_inference is not None:
                return (CachedInference.model_validate_json(raw_inference),
                        CachedScores.model_validate_json(raw_scores) if raw_scores else None)
            if index_complete:
                return None, None
            self._ensure_index()
        entry = self._read_entry(inference_key)
        if entry is None:
            return None, None
        if self.redis is not None:
            self._index(inference_key, entry)
        return entry.inference, entry.scores.get(score_key)

    def lookup_many(self, pairs: list[tuple[str, str]]) -> list[tuple[CachedInference | None, CachedScores | None]]:
        """`lookup` for many samples at once: one Redis round trip for all of them."""
        if self.redis is None or not pairs:
            return [self.lookup(ikey, skey) for ikey, skey in pairs]
        pipe = self.redis.pipeline(transaction=False)
        for ikey, skey in pairs:
            pipe.hmget(keys.cached_result(ikey), [INFERENCE_FIELD, skey])
        pipe.exists(keys.STORE_INDEX_COMPLETE)
        *replies, index_complete = pipe.execute()
        found = []
        for (ikey, skey), (raw_inference, raw_scores) in zip(pairs, replies, strict=True):
            if raw_inference is not None:
                found.append((CachedInference.model_validate_json(raw_inference),
                              CachedScores.model_validate_json(raw_scores) if raw_scores else None))
            elif index_complete:
                found.append((None, None))
            else:
                found.append(self.lookup(ikey, skey))
        return found

    def save(self, inference_key: str, inference: CachedInference, score_key: str,
             scores: CachedScores | None, *, known: bool = False) -> None:
        """Store an output and its scores. Durable first, then the index, so Redis never names a
        result the durable store lacks. `known`: the output may be cached already; if it is the
        same output, the new scores join the ones there, otherwise the entry is replaced (scores
        belong to the output they were computed from)."""
        entry = self._read_entry(inference_key) if known else None
        extends = entry is not None and entry.inference.output == inference.output
        if not extends:
            entry = StoreEntry(inference=inference)
        if scores is not None:
            entry.scores[score_key] = scores
        self.blobs.write_bytes(_relpath(inference_key), entry.model_dump_json().encode())
        if self.redis is None:
            return
        if extends and scores is not None:
            self.redis.hset(keys.cached_result(inference_key), score_key, scores.model_dump_json())
        elif not extends:
            self._index(inference_key, entry)

    def _read_entry(self, inference_key: str) -> StoreEntry | None:
        raw = self.blobs.read_bytes(_relpath(inference_key))
        if raw is None:
            return None
        try:
            return StoreEntry.model_validate_json(raw)
        except ValueError:
            logger.warning("ignoring an unreadable result store entry %s", _relpath(inference_key))
            return None

    def _index(self, inference_key: str, entry: StoreEntry, pipe=None) -> None:  # noqa: ANN001
        """Make the Redis hash exactly the entry: fields of an older entry must not survive."""
        fields = {INFERENCE_FIELD: entry.inference.model_dump_json()}
        fields.update({k: v.model_dump_json() for k, v in entry.scores.items()})
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        target.delete(keys.cached_result(inference_key))
        target.hset(keys.cached_result(inference_key), mapping=fields)
        if pipe is None:
            target.execute()

    def _ensure_index(self) -> None:
        """Start a reindex in the background when the index is incomplete and nobody else is
        rebuilding it; asked at most every REINDEX_CHECK_S seconds."""
        if not self.auto_reindex or time.monotonic() < self._next_index_check:
            return
        self._next_index_check = time.monotonic() + REINDEX_CHECK_S
        if self.redis.exists(keys.STORE_INDEX_COMPLETE):
            return
        if self.redis.set(keys.STORE_REINDEX_LOCK, "1", nx=True, ex=REINDEX_LOCK_S):
            threading.Thread(target=self.reindex, name="evalfleet-store-reindex", daemon=True).start()

    def reindex(self) -> int:
        """Copy every durable result into Redis, then mark the index complete."""
        count = 0
        try:
            pipe = self.redis.pipeline(transaction=False)
            for relpath in self.blobs.list("results"):
                name = relpath.rsplit("/", 1)[-1]
                if not name.endswith(".json"):
                    continue
                raw = self.blobs.read_bytes(relpath)
                if raw is None:
                    continue
                try:
                    entry = StoreEntry.model_validate_json(raw)
                except ValueError:
                    logger.warning("skipping an unreadable result store entry %s", relpath)
                    continue
                self._index(name[: -len(".json")], entry, pipe)
                count += 1
                if count % REINDEX_BATCH == 0:
                    pipe.execute()
            pipe.set(keys.STORE_INDEX_COMPLETE, "1")
            pipe.execute()
            logger.info("result store reindexed: %d entries", count)
        finally:
            self.redis.delete(keys.STORE_REINDEX_LOCK)
        return count


_store: ResultStore | None = None
_store_lock = threading.Lock()


def redis_client(settings: Settings):  # noqa: ANN201
    url = settings.effective_redis_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30,
                                retry_on_timeout=True)


def result_store(*, auto_reindex: bool = True) -> ResultStore:
    """This process's result store, built from the settings on first use."""
    global _store
    with _store_lock:
        if _store is None:
            settings = get_settings()
            _store = ResultStore(store_for(settings.effective_store_url), redis_client(settings),
                                 auto_reindex=auto_reindex)
        return _store


def reset_result_store() -> None:
    global _store
    with _store_lock:
        _store = None


__all__ = ["CachedInference", "CachedScores", "ResultStore", "StoreEntry", "result_store"]
