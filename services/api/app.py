"""The ASGI application of `evalfleet serve`: the results API's routes, answers in DigitalOcean's
error shape (never a traceback), health and readiness checks, and, on the embedded default, the
in-process worker that runs what is submitted. The process keeps no state a replica would need:
several can run behind a load balancer (request budgets are shared through Redis)."""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.auth import ApiProblem, request_budget
from services.api.metrics import add_metrics
from services.api.routes import router
from services.api.schemas import Health
from services.viewer import router as viewer_router
from shared.outages import is_outage
from shared.redact import scrub
from shared.settings import get_settings

logger = logging.getLogger(__name__)
NO_AUTH_VARIABLE = "EVALFLEET_API_NO_AUTH"
ERROR_IDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
             409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable_entity",
             429: "too_many_requests", 500: "server_error", 503: "service_unavailable"}


def _error(status: int, message: str, headers: dict[str, str] | None = None, error_id: str | None = None) -> JSONResponse:
    return JSONResponse({"id": error_id or ERROR_IDS.get(status, "error"), "message": message,
                         "request_id": uuid.uuid4().hex}, status_code=status, headers=headers)


def _parameter(loc: tuple) -> str:
    where = {"query": "query parameter", "path": "path parameter", "body": "body field", "header": "header"}
    if len(loc) >= 2 and loc[0] in where:
        return f"{where[loc[0]]} `{'.'.join(str(p) for p in loc[1:])}`"
    return "`" + ".".join(str(p) for p in loc) + "`"


@asynccontextmanager
async def _lifespan(app: FastAPI):  # noqa: ANN202
    settings = get_settings()
    with ExitStack() as stack:
        if settings.embedded:
            from services.embedded import embedded_worker

            stack.enter_context(embedded_worker(settings.concurrency))
        yield


def create_app(no_auth: bool | None = None) -> FastAPI:
    """The application (uvicorn's factory). `no_auth` defaults to EVALFLEET_API_NO_AUTH, which
    `evalfleet serve --no-auth` sets for its worker processes (on loopback only)."""
    from workers.app import configure_app

    settings = get_settings()
    configure_app(settings)
    app = FastAPI(
        title="evalfleet results API",
        version="1.0",
        description="Evaluation results in the shape of DigitalOcean GenAI's evaluation-run API: one evaluation "
        "run per task specification of an evalfleet run, its prompts (samples) paged, its star metric and pass "
        "status; submit and cancel over HTTP. Bearer tokens with scopes read < submit < admin.",
        lifespan=_lifespan,
    )
    app.state.no_auth = no_auth if no_auth is not None else os.environ.get(NO_AUTH_VARIABLE) == "1"
    app.state.budget = request_budget()
    app.include_router(router)
    app.include_router(viewer_router)
    add_metrics(app)

    @app.exception_handler(ApiProblem)
    async def _problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers, exc.error_id)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        return _error(422, f"{_parameter(tuple(first['loc']))}: {first['msg']}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if is_outage(exc):
            return _error(503, f"a service is unreachable, try again shortly: {scrub(str(exc).splitlines()[0], limit=300)}",
                          {"retry-after": "5"})
        logger.exception("unexpected error")
        return _error(500, "internal error; the server's log has the details")

    @app.get("/health", response_model=Health, tags=["health"], summary="The process is up")
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Health, tags=["health"], summary="The database and the broker are reachable",
             responses={503: {"model": Health}})
    def ready() -> JSONResponse:
        checks = _readiness()
        ok = all(value == "ok" or value == "embedded" for value in checks.values())
        return JSONResponse(Health(status="ok" if ok else "unavailable", checks=checks).model_dump(),
                            status_code=200 if ok else 503)

    return app


def _readiness() -> dict[str, str]:
    from shared.db import get_engine
    from workers.app import app as celery

    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"unreachable: {scrub(str(exc).splitlines()[0], limit=200)}"
    if get_settings().embedded:
        checks["broker"] = "embedded"
    else:
        try:
            with celery.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=3)
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = f"unreachable: {scrub(str(exc).splitlines()[0], limit=200)}"
    return checks
