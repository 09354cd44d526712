"""`/metrics` of `evalfleet serve` (Prometheus text format) and the middleware that counts and
times every request by its route template (`/v2/gen-ai/evaluation_runs/{evaluation_run_uuid}`),
never by its raw path, so ids in paths cannot grow the number of series."""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.auth import require
from shared.settings import get_settings
from workers.telemetry import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, scrape_registry

UNMATCHED = "<unmatched>"


class RequestMetrics:
    """Pure ASGI (no buffering of streamed answers such as log downloads)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router notes the route it matched in the scope it was given, this one.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def served_queues() -> list[str]:
    """The queues worth a depth gauge: the default one and every queue a live worker consumes."""
    from workers.heartbeat import live_workers

    queues = {get_settings().queue}
    if not get_settings().embedded:
        queues.update(queue for worker in live_workers() for queue in worker["queues"])
    return sorted(queues)


def add_metrics(app: FastAPI) -> None:
    """Mount `/metrics` and the request middleware. Open unless EVALFLEET_METRICS_AUTH: what it
    shows is counts by task, model and queue keys and route templates, never a credential."""
    registry = scrape_registry(served_queues)
    dependencies = [Depends(require("read"))] if get_settings().metrics_auth else []
    app.add_middleware(RequestMetrics)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this server and its queues",
             response_class=Response, dependencies=dependencies,
             responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
