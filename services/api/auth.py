"""Who may call the API and how often: bearer tokens (services.tokens) with nested scopes, and a
per-token budget of requests per minute (`EVALFLEET_API_RATE_LIMIT`), counted in Redis when
there is one (so every replica shares it) and in the process otherwise. Every answer to a caller
carries DigitalOcean's `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` headers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import Request, Response

from services.tokens import Scope, TokenInfo, allows, verify_token
from shared import keys
from shared.settings import get_settings

# The viewer's session: the token entered once on its sign-in page, in an HttpOnly, SameSite=Strict
# cookie, so page scripts never see it and other sites' pages cannot send it.
SESSION_COOKIE = "evalfleet_session"


class ApiProblem(Exception):
    """An answer other than 200: status, DigitalOcean's error id, one sentence, extra headers."""

    def __init__(self, status: int, error_id: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Caller:
    token: TokenInfo | None
    budget_key: str


class RequestBudget:
    """Fixed one-minute windows per caller."""

    def __init__(self, limit: int, redis=None):  # noqa: ANN001
        self.limit = limit
        self.redis = redis
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> tuple[int, int]:
        """(requests left in this window after this one, Unix time the window ends)."""
        minute = int(time.time() // 60)
        reset = (minute + 1) * 60
        if self.redis is not None:
            name = keys.api_requests(key, minute)
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, 61)
            used = pipe.execute()[0]
        else:
            with self._lock:
                if len(self._counts) > 10_000:
                    self._counts = {k: v for k, v in self._counts.items() if k[1] == minute}
                used = self._counts[(key, minute)] = self._counts.get((key, minute), 0) + 1
        return self.limit - used, reset


def same_origin(request: Request) -> bool:
    """The browser says the request comes from a page of this server: `Sec-Fetch-Site:
    same-origin`, or an `Origin` equal to the server's own."""
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    return origin is not None and origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def require(scope: Scope):  # noqa: ANN201 - a FastAPI dependency
    """A dependency: the caller, allowed `scope` and within its budget, or an ApiProblem."""

    def dependency(request: Request, response: Response) -> Caller:
        state = request.app.state
        if state.no_auth:
            caller = Caller(None, f"client:{request.client.host if request.client else '-'}")
        else:
            header = request.headers.get("authorization", "")
            scheme, _, credential = header.partition(" ")
            if not header and SESSION_COOKIE in request.cookies:
                scheme, credential = "bearer", request.cookies[SESSION_COOKIE]
                if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
                    # A cookie rides along on any request the browser makes: an action needs
                    # proof it comes from our own pages (SameSite=Strict aside).
                    raise ApiProblem(403, "forbidden", "a cross-site request with the viewer's session is refused")
            token = verify_token(credential.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                raise ApiProblem(401, "unauthorized", "a valid API token is required: `Authorization: Bearer <token>` "
                                 "(create one with `evalfleet token create`)")
            caller = Caller(token, f"token:{token.id}")
        left, reset = state.budget.take(caller.budget_key)
        headers = {"ratelimit-limit": str(state.budget.limit), "ratelimit-remaining": str(max(0, left)),
                   "ratelimit-reset": str(reset)}
        if left < 0:
            raise ApiProblem(429, "too_many_requests", f"more than {state.budget.limit} requests this minute; "
                             f"try again after {reset}", {**headers, "retry-after": str(max(1, reset - int(time.time())))})
        response.headers.update(headers)
        if caller.token is not None and not allows(caller.token.scope, scope):
            raise ApiProblem(403, "forbidden", f"this token's scope ({caller.token.scope}) does not allow this; "
                             f"it needs `{scope}`", headers)
        return caller

    return dependency


def request_budget() -> RequestBudget:
    from shared.result_store import redis_client

    settings = get_settings()
    return RequestBudget(settings.api_rate_limit, redis_client(settings))
