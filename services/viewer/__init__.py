"""The web viewer of `evalfleet serve`: one page (`/ui/`) whose script reads the results API of the
same process (no second data path) and shows runs, a run, its samples, a sample, comparisons and
trends. Signing in takes an API token once and keeps it in an HttpOnly, SameSite=Strict cookie,
which the API accepts like a bearer token: page scripts never see it, other sites cannot send it.
With `--no-auth` (loopback only) there is no sign-in.

Pages are static files; everything they show comes from JSON and is put into the page as text
(never as HTML), and a Content-Security-Policy allows only this origin's scripts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from services.api.auth import SESSION_COOKIE
from services.tokens import verify_token

STATIC = Path(__file__).parent / "static"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
SESSION_DAYS = 7

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    if name not in FILES:
        return JSONResponse({"id": "not_found", "message": f"no file {name!r}"}, status_code=404)
    return FileResponse(STATIC / name, media_type=FILES[name], headers=SECURITY_HEADERS)


@router.get("/ui/session")
def session(request: Request) -> JSONResponse:
    """Whether the page may read the API: signed in (and with which scope), or no auth at all."""
    if request.app.state.no_auth:
        return JSONResponse({"signed_in": True, "scope": "admin", "no_auth": True}, headers=SECURITY_HEADERS)
    token = request.cookies.get(SESSION_COOKIE)
    info = verify_token(token) if token else None
    return JSONResponse({"signed_in": info is not None, "scope": info.scope if info else None,
                         "name": info.name if info else None, "no_auth": False}, headers=SECURITY_HEADERS)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    # A urlencoded form of one field, read by hand: no multipart parser needed for it.
    body = await request.body()
    token = parse_qs(body.decode("utf-8", "replace")[:1000]).get("token", [""])[0].strip()
    info = await run_in_threadpool(verify_token, token) if token else None
    if info is None:
        return RedirectResponse("/ui/#/login?failed=1", status_code=303, headers=SECURITY_HEADERS)
    response = RedirectResponse("/ui/", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_DAYS * 86400, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/#/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
