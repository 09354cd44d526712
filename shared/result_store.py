"""The result store: model outputs and scores kept across runs so no one pays twice for the same
inference. Durable blobs (a local directory, or S3 in a cluster) are the truth; Redis, when there
is one, is the index and the fast path.

Layout: `inference/<key[:2]>/<key>.json` and `scores/<key[:2]>/<key>.json` under the store URL,
with the same JSON under `keys.cached_inference(key)` / `keys.cached_scores(key)` in Redis.
A Redis miss counts as a miss only while `keys.STORE_INDEX_COMPLETE` is set; after a flush or a
restart lookups read the durable store (and write back to Redis) while one process reindexes."""

from __future__ import annotations

import logging
import threading

from pydantic import BaseModel

from shared import keys
from shared.log import Score, TokenUsage
from shared.settings import Settings, get_settings
from shared.storage import LocalStore, S3Store, store_for

logger = logging.getLogger(__name__)
REINDEX_LOCK_S = 3600
REINDEX_BATCH = 500


class CachedInference(BaseModel):
    output: str
    usage: TokenUsage | None = None
    latency_ms: float | None = None


class CachedScores(BaseModel):
    scores: dict[str, Score]


def _relpath(kind: str, key: str) -> str:
    return f"{kind}/{key[:2]}/{key}.json"


class ResultStore:
    def __init__(self, blobs: LocalStore | S3Store, redis=None):  # noqa: ANN001
        self.blobs = blobs
        self.redis = redis
        if redis is not None:
            self._ensure_index()

    # Lookups -------------------------------------------------------------------------------
    def lookup(self, inference_key: str, score_key: str | None) -> tuple[CachedInference | None, CachedScores | None]:
        """The cached output and scores for a sample, in one Redis round trip when indexed."""
        raw_inference = raw_scores = None
        index_complete = False
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(keys.cached_inference(inference_key))
            if score_key:
                pipe.get(keys.cached_scores(score_key))
            pipe.exists(keys.STORE_INDEX_COMPLETE)
            replies = pipe.execute()
            raw_inference, index_complete = replies[0], bool(replies[-1])
            raw_scores = replies[1] if score_key else None
        if raw_inference is None and not index_complete:
            raw_inference = self._read_through("inference", inference_key)
        if raw_inference is None:
            return None, None
        if raw_scores is None and score_key and not index_complete:
            raw_scores = self._read_through("scores", score_key)
        return (CachedInference.model_validate_json(raw_inference),
                CachedScores.model_validate_json(raw_scores) if raw_scores else None)

    def _read_through(self, kind: str, key: str) -> bytes | None:
        raw = self.blobs.read_bytes(_relpath(kind, key))
        if raw is not None and self.redis is not None:
            self.redis.set(_redis_key(kind, key), raw)
        return raw

    # Writes --------------------------------------------------------------------------------
    def save(self, inference_key: str | None, inference: CachedInference | None,
             score_key: str | None, scores: CachedScores | None) -> None:
        """Durable first, then the index: Redis never names a result the durable store lacks."""
        items = []
        if inference_key and inference is not None:
            items.append(("inference", inference_key, inference.model_dump_json().encode()))
        if score_key and scores is not None:
            items.append(("scores", score_key, scores.model_dump_json().encode()))
        for kind, key, raw in items:
            self.blobs.write_bytes(_relpath(kind, key), raw)
        if self.redis is not None and items:
            pipe = self.redis.pipeline(transaction=False)
            for kind, key, raw in items:
                pipe.set(_redis_key(kind, key), raw)
            pipe.execute()

    # Index ---------------------------------------------------------------------------------
    def _ensure_index(self) -> None:
        if self.redis.exists(keys.STORE_INDEX_COMPLETE):
            return
        if self.redis.set(keys.STORE_REINDEX_LOCK, "1", nx=True, ex=REINDEX_LOCK_S):
            threading.Thread(target=self.reindex, name="evalfleet-store-reindex", daemon=True).start()

    def reindex(self) -> int:
        """Copy every durable result into Redis, then mark the index complete."""
        count = 0
        try:
            pipe = self.redis.pipeline(transaction=False)
            for relpath in self.blobs.list():
                kind, _, rest = relpath.partition("/")
                if kind not in ("inference", "scores") or not rest.endswith(".json"):
                    continue
                key = rest.rsplit("/", 1)[-1][: -len(".json")]
                raw = self.blobs.read_bytes(relpath)
                if raw is None:
                    continue
                pipe.set(_redis_key(kind, key), raw)
                count += 1
                if count % REINDEX_BATCH == 0:
                    pipe.execute()
            pipe.set(keys.STORE_INDEX_COMPLETE, "1")
            pipe.execute()
            logger.info("result store reindexed: %d entries", count)
        finally:
            self.redis.delete(keys.STORE_REINDEX_LOCK)
        return count


def _redis_key(kind: str, key: str) -> str:
    return keys.cached_inference(key) if kind == "inference" else keys.cached_scores(key)


_store: ResultStore | None = None
_store_lock = threading.Lock()


def redis_client(settings: Settings):  # noqa: ANN201
    url = settings.effective_redis_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30,
                                retry_on_timeout=True)


def result_store() -> ResultStore:
    """This process's result store, built from the settings on first use."""
    global _store
    with _store_lock:
        if _store is None:
            settings = get_settings()
            _store = ResultStore(store_for(settings.effective_store_url), redis_client(settings))
        return _store


def reset_result_store() -> None:
    global _store
    with _store_lock:
        _store = None
