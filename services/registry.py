"""Entities registered with `evalfleet add` (datasets, models, tasks), kept in the database so later
run files can name them by key. Dataset paths are stored resolved (absolute), never relative.

Entities are versioned: registering a changed definition under a key adds a version, and the
older ones stay; a key resolves to its newest version that was not removed. Runs record the
versions they used (`ResolvedEvaluation.entity_versions`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from shared.db import entities, get_engine, now, utc
from shared.errors import EvalfleetError
from shared.spec import DatasetEntity, ModelEntity, TaskEntity, did_you_mean

EntityKind = Literal["dataset", "model", "task"]
KINDS: tuple[EntityKind, ...] = ("dataset", "model", "task")
EntityLookup = Callable[[EntityKind, str], BaseModel | None]
ENTITY_MODELS: dict[str, type[BaseModel]] = {"dataset": DatasetEntity, "model": ModelEntity, "task": TaskEntity}
Change = Literal["created", "updated", "unchanged"]


class EntityRecord(BaseModel):
    kind: EntityKind
    key: str
    version: int
    versions: int
    registered_at: datetime
    definition: dict


def _canonical(entity: BaseModel) -> str:
    return json.dumps(entity.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _latest(connection: Connection, kind: str, key: str, version: int | None = None):  # noqa: ANN202
    statement = select(entities).where(entities.c.kind == kind, entities.c.key == key, entities.c.removed_at.is_(None))
    if version is not None:
        statement = statement.where(entities.c.version == version)
    return connection.execute(statement.order_by(entities.c.version.desc()).limit(1)).one_or_none()


def lookup_entity(connection: Connection, kind: EntityKind, key: str, version: int | None = None) -> BaseModel | None:
    row = _latest(connection, kind, key, version)
    return None if row is None else ENTITY_MODELS[kind].model_validate_json(row.body)


def entity_version(connection: Connection, kind: EntityKind, key: str) -> int | None:
    row = _latest(connection, kind, key)
    return None if row is None else row.version


def register_entity(connection: Connection, kind: EntityKind, entity: BaseModel) -> tuple[Change, int]:
    """Add a version when the definition changed (or the key is new); returns what happened and
    the version now current."""
    key = entity.key  # type: ignore[attr-defined]
    body = entity.model_dump_json()
    current = _latest(connection, kind, key)
    if current is not None and _canonical(ENTITY_MODELS[kind].model_validate_json(current.body)) == _canonical(entity):
        return "unchanged", current.version
    newest = connection.execute(select(func.max(entities.c.version)).where(
        entities.c.kind == kind, entities.c.key == key)).scalar()
    version = (newest or 0) + 1
    connection.execute(entities.insert().values(kind=kind, key=key, version=version, body=body, updated_at=now()))
    return ("created" if current is None else "updated"), version


def list_entities(kind: EntityKind | None = None) -> list[EntityRecord]:
    """The current version of every registered entity, by kind then key."""
    statement = select(entities).where(entities.c.removed_at.is_(None)).order_by(
        entities.c.kind, entities.c.key, entities.c.version)
    if kind is not None:
        statement = statement.where(entities.c.kind == kind)
    latest: dict[tuple[str, str], tuple] = {}
    with get_engine().connect() as connection:
        for row in connection.execute(statement):
            count = latest.get((row.kind, row.key), (None, 0))[1]
            latest[(row.kind, row.key)] = (row, count + 1)
    return [EntityRecord(kind=row.kind, key=row.key, version=row.version, versions=count,
                         registered_at=utc(row.updated_at), definition=json.loads(row.body))
            for row, count in latest.values()]


def show_entity(key: str, kind: EntityKind | None = None, version: int | None = None) -> EntityRecord:
    matches = _matching(key, kind)
    kind_found = matches[0]
    with get_engine().connect() as connection:
        row = _latest(connection, kind_found, key, version)
        count = connection.execute(select(func.count()).where(
            entities.c.kind == kind_found, entities.c.key == key, entities.c.removed_at.is_(None))).scalar()
    if row is None:
        raise EvalfleetError(f"{kind_found} {key!r} has no version {version}")
    return EntityRecord(kind=row.kind, key=row.key, version=row.version, versions=count,
                        registered_at=utc(row.updated_at), definition=json.loads(row.body))


def remove_entity(key: str, kind: EntityKind | None = None) -> tuple[EntityKind, int]:
    """Mark every version of an entity removed (runs that used it keep what they recorded)."""
    kind_found = _matching(key, kind)[0]
    with get_engine().begin() as connection:
        removed = connection.execute(update(entities).where(
            entities.c.kind == kind_found, entities.c.key == key, entities.c.removed_at.is_(None),
        ).values(removed_at=now())).rowcount
    return kind_found, removed


def _matching(key: str, kind: EntityKind | None) -> list[EntityKind]:
    with get_engine().connect() as connection:
        statement = select(entities.c.kind).where(entities.c.key == key, entities.c.removed_at.is_(None)).distinct()
        if kind is not None:
            statement = statement.where(entities.c.kind == kind)
        kinds = list(connection.execute(statement).scalars())
        if not kinds:
            keys = list(connection.execute(select(entities.c.key).where(entities.c.removed_at.is_(None)).distinct())
                        .scalars())
    if not kinds:
        raise EvalfleetError(f"no registered {kind or 'entity'} {key!r}{did_you_mean(key, keys)}")
    if len(kinds) > 1:
        raise EvalfleetError(f"{key!r} is a registered {' and a '.join(sorted(kinds))}: say which with --kind")
    return kinds


def registered_keys(kind: EntityKind) -> list[str]:
    with get_engine().connect() as connection:
        return list(connection.execute(select(entities.c.key).where(
            entities.c.kind == kind, entities.c.removed_at.is_(None)).distinct()).scalars())


def database_lookup(kind: EntityKind, key: str) -> BaseModel | None:
    """Look an entity up in the configured database; the database is opened only when asked."""
    with get_engine().connect() as connection:
        return lookup_entity(connection, kind, key)
