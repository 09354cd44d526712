"""Riding out outages of the services a sample depends on (the database, Redis, the broker, the
store): which errors mean "the service is away for now", and waiting for it with backoff up to a
bounded budget (`EVALFLEET_OUTAGE_BUDGET`), so a blip costs time, never a sample."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from shared.settings import get_settings

logger = logging.getLogger(__name__)
Result = TypeVar("Result")
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0


class OutageBudgetExceeded(Exception):
    """A service stayed away longer than the outage budget; the caller hands its work back."""

    def __init__(self, what: str, waited_s: float, cause: BaseException):
        super().__init__(f"{what}: unavailable for {waited_s:.0f} s: {cause}")
        self.cause = cause


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean a service is unreachable or restarting (worth waiting for), as
    opposed to a refusal of what was asked (a value the database rejects), which waiting cannot fix."""
    from redis.exceptions import BusyLoadingError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.OperationalError | sa.InterfaceError)
    if isinstance(exc, sa.DisconnectionError | sa.TimeoutError):
        return True
    if isinstance(exc, RedisConnectionError | RedisTimeout | BusyLoadingError):
        return True
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
    except ImportError:  # pragma: no cover - kombu is a dependency
        return isinstance(exc, ConnectionError | TimeoutError)
    return isinstance(exc, KombuOperationalError | ConnectionError | TimeoutError)


def through_outages(call: Callable[[], Result], what: str, *, budget_s: float | None = None,
                    on_wait: Callable[[BaseException, float], None] | None = None) -> Result:
    """`call()`, tried again with jittered backoff while it fails with an outage, for at most
    `budget_s` (default: the outage budget setting); then `OutageBudgetExceeded`. Other errors
    are raised at once."""
    return retry_while(call, is_outage, what, budget_s=budget_s, on_wait=on_wait)


def retry_while(call: Callable[[], Result], transient: Callable[[BaseException], bool], what: str, *,
                budget_s: float | None = None, on_wait: Callable[[BaseException, float], None] | None = None) -> Result:
    """`through_outages` with the caller's own idea of which errors are worth waiting out."""
    budget = get_settings().outage_budget if budget_s is None else budget_s
    started = time.monotonic()
    delay = BACKOFF_START_S
    warned = False
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            waited = time.monotonic() - started
            if waited >= budget:
                raise OutageBudgetExceeded(what, waited, exc) from exc
            if on_wait is not None:
                on_wait(exc, waited)
            elif not warned:
                logger.warning("%s: service unavailable, retrying for up to %.0f s: %s", what, budget, exc)
                warned = True
            time.sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, budget - waited)))
            delay = min(BACKOFF_MAX_S, delay * 2)
