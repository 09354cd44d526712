"""Bearer tokens of the results API. A token is shown once, when created; the database keeps only
its SHA-256 and its first characters (to tell tokens apart in `token list`). Scopes nest: `read`
may read, `submit` may also submit and cancel runs, `admin` may also manage tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, field_validator
from sqlalchemy import select, update

from shared.db import get_engine, now, tokens, utc
from shared.errors import EvalfleetError

Scope = Literal["read", "submit", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "submit", "admin")
TOKEN_PREFIX = "efk_"
PREFIX_CHARS = 12


class TokenInfo(BaseModel):
    id: int
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @field_validator("created_at", "revoked_at", "last_used_at")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        return utc(moment)


def allows(granted: str, needed: Scope) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)  # type: ignore[arg-type]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str, scope: Scope) -> tuple[str, TokenInfo]:
    """A new token (the only time it is seen) and what is kept of it."""
    if scope not in SCOPES:
        raise EvalfleetError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    if not name.strip():
        raise EvalfleetError("a token needs a name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with get_engine().begin() as connection:
        token_id = connection.execute(tokens.insert().values(
            name=name, scope=scope, prefix=token[:PREFIX_CHARS], hash=token_hash(token), created_at=now(),
        )).inserted_primary_key[0]
        row = connection.execute(select(tokens).where(tokens.c.id == token_id)).one()
    return token, TokenInfo.model_validate(row._mapping)


def list_tokens(include_revoked: bool = False) -> list[TokenInfo]:
    statement = select(tokens).order_by(tokens.c.created_at)
    if not include_revoked:
        statement = statement.where(tokens.c.revoked_at.is_(None))
    with get_engine().connect() as connection:
        return [TokenInfo.model_validate(row._mapping) for row in connection.execute(statement)]


def revoke_token(which: str | int) -> TokenInfo:
    """Revoke by id, by name or by prefix (it must name exactly one live token)."""
    live = list_tokens()
    matches = [t for t in live if str(t.id) == str(which) or t.name == which or t.prefix == which
               or (isinstance(which, str) and len(which) >= 6 and t.prefix.startswith(which))]
    if not matches:
        raise EvalfleetError(f"no live token {which!r} (by id, name or prefix)")
    if len(matches) > 1:
        raise EvalfleetError(f"{which!r} names {len(matches)} tokens: " + ", ".join(f"{t.id} {t.name}" for t in matches))
    with get_engine().begin() as connection:
        connection.execute(update(tokens).where(tokens.c.id == matches[0].id).values(revoked_at=now()))
    return matches[0].model_copy(update={"revoked_at": now()})


def verify_token(token: str) -> TokenInfo | None:
    """The live token this string is, or None. Compared by hash, in constant time."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = token_hash(token)
    with get_engine().connect() as connection:
        row = connection.execute(select(tokens).where(tokens.c.hash == digest)).one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, digest):
        return None
    return TokenInfo.model_validate(row._mapping)
