"""Every Redis key evalfleet uses, named in one place. All start with `evalfleet:`."""

from __future__ import annotations

PREFIX = "evalfleet"


def cached_result(inference_key: str) -> str:
    """Hash of one cached inference: field `inference`, and one field per score key."""
    return f"{PREFIX}:store:result:{inference_key}"


# Present while the Redis index holds every durable result, so a Redis miss is a real miss. A
# flush or restart removes it, and lookups fall back to the durable store until a reindex.
STORE_INDEX_COMPLETE = f"{PREFIX}:store:index-complete"
STORE_REINDEX_LOCK = f"{PREFIX}:store:reindex-lock"


def model_leases(model_key: str) -> str:
    """Sorted set of in-flight request leases of a model (member: token, score: expiry)."""
    return f"{PREFIX}:limits:{model_key}:leases"


def model_minute(model_key: str, minute: int) -> str:
    """Requests sent to a model in one wall-clock minute."""
    return f"{PREFIX}:limits:{model_key}:minute:{minute}"


def api_requests(client: str, minute: int) -> str:
    """Requests one API token (or anonymous client) made in one wall-clock minute."""
    return f"{PREFIX}:api:requests:{client}:{minute}"
