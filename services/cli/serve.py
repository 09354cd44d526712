"""`evalfleet serve` (the results API) and `evalfleet token` (its bearer tokens)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import click

from services.cli.common import BadInput, EvalfleetError, apply_settings, say, settings_options
from services.cli.output import emit_table
from shared.settings import get_settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Server processes.")
@click.option("--no-auth", is_flag=True, help="Serve without tokens (loopback addresses only: a laptop).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="Server log level.")
@settings_options
def serve(host: str, port: int, workers: int, no_auth: bool, log_level: str, **options: str | None) -> None:
    """Serve the viewer (/ui/) and the results API over the same database and logs as the CLI.

    Bearer tokens from `evalfleet token create` are required unless --no-auth (allowed on a
    loopback address only). On the embedded default, submitted runs run in this process."""
    import uvicorn

    from services.api.app import NO_AUTH_VARIABLE
    from services.tokens import list_tokens

    apply_settings(**options)
    if no_auth and not is_loopback(host):
        raise BadInput(f"--no-auth serves anyone who can reach {host}: only allowed on a loopback address "
                       "(127.0.0.1, ::1, localhost); create a token with `evalfleet token create` instead")
    settings = get_settings()
    # Worker processes read their settings from the environment: hand the options over there.
    for name, value in (("EVALFLEET_DATABASE_URL", settings.database_url), ("EVALFLEET_LOG_DIR", settings.log_dir)):
        if value:
            os.environ[name] = value
    os.environ[NO_AUTH_VARIABLE] = "1" if no_auth else "0"
    if not no_auth and not list_tokens():
        say("no API token exists yet: every request will be refused (401); create one with "
            "`evalfleet token create --name NAME --scope read`")
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    say(f"evalfleet viewer on {base}/ui/ ; results API on {base}/v2/gen-ai "
        f"({'no auth' if no_auth else 'bearer tokens'}; {workers} process{'es' if workers > 1 else ''}; "
        f"{'embedded worker' if settings.embedded else 'cluster'}); OpenAPI at /openapi.json")
    with metrics_shared_by(workers):
        uvicorn.run("services.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, proxy_headers=True, server_header=False)


@contextlib.contextmanager
def metrics_shared_by(processes: int) -> Iterator[None]:
    """Several server processes answer `/metrics` with the sum of all of them: prometheus_client's
    multiprocess mode, in a directory of this server's own (a scrape reaches any one process)."""
    if processes == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="evalfleet-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(directory, ignore_errors=True)


@click.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke. Only a hash of each token is stored."""


@token.command()
@click.option("--name", required=True, help="What the token is for (a person, a CI job, a dashboard).")
@click.option("--scope", type=click.Choice(["read", "submit", "admin"]), default="read", show_default=True,
              help="read: GET; submit: also submit and cancel runs; admin: also manage tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@settings_options
def create(name: str, scope: str, as_json: bool, **options: str | None) -> None:
    """Create a token and print it, once."""
    from services.tokens import create_token

    apply_settings(**options)
    try:
        secret, info = create_token(name, scope)  # type: ignore[arg-type]
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"token": secret, **info.model_dump(mode="json")}, indent=2))
        return
    click.echo(secret)
    say(f"token {info.id} ({info.name}, scope {info.scope}): shown this once; store it now")


@token.command(name="list")
@click.option("--all", "include_revoked", is_flag=True, help="Also revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@settings_options
def list_command(include_revoked: bool, as_json: bool, **options: str | None) -> None:
    """The tokens (never their values: id, name, scope, first characters, dates)."""
    from services.tokens import list_tokens

    apply_settings(**options)
    found = list_tokens(include_revoked)
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in found], indent=2))
        return
    emit_table(["id", "name", "scope", "prefix", "created", "revoked"],
              [[str(t.id), t.name, t.scope, t.prefix + "...", f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-"] for t in found])


@token.command()
@click.argument("which")
@settings_options
def revoke(which: str, **options: str | None) -> None:
    """Revoke a token by id, name or prefix."""
    from services.tokens import revoke_token

    apply_settings(**options)
    try:
        info = revoke_token(which)
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    say(f"revoked token {info.id} ({info.name})")


COMMANDS = [serve, token]
