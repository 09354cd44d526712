"""Entities registered with `evalfleet add` (datasets, models, tasks), kept in the database so later
run files can name them by key. Dataset paths are stored resolved (absolute), never relative."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import Connection

from shared.db import entities, now
from shared.spec import DatasetEntity, ModelEntity, TaskEntity

EntityKind = Literal["dataset", "model", "task"]
EntityLookup = Callable[[EntityKind, str], BaseModel | None]
ENTITY_MODELS: dict[str, type[BaseModel]] = {"dataset": DatasetEntity, "model": ModelEntity, "task": TaskEntity}


def lookup_entity(connection: Connection, kind: EntityKind, key: str) -> BaseModel | None:
    body = connection.execute(
        select(entities.c.body).where(entities.c.kind == kind, entities.c.key == key)
    ).scalar_one_or_none()
    return None if body is None else ENTITY_MODELS[kind].model_validate_json(body)


def register_entity(connection: Connection, kind: EntityKind, entity: BaseModel) -> None:
    """Insert or replace an entity: the newest registration of a key wins."""
    body = entity.model_dump_json(exclude_defaults=False)
    key = entity.key  # type: ignore[attr-defined]
    existing = connection.execute(
        select(entities.c.id).where(entities.c.kind == kind, entities.c.key == key)
    ).scalar_one_or_none()
    if existing is None:
        connection.execute(entities.insert().values(kind=kind, key=key, body=body, updated_at=now()))
    else:
        connection.execute(entities.update().where(entities.c.id == existing).values(body=body, updated_at=now()))


def list_entities(connection: Connection) -> list[tuple[str, str, dict]]:
    rows = connection.execute(select(entities.c.kind, entities.c.key, entities.c.body).order_by(
        entities.c.kind, entities.c.key))
    return [(kind, key, json.loads(body)) for kind, key, body in rows]


def database_lookup(kind: EntityKind, key: str) -> BaseModel | None:
    """Look an entity up in the configured database; the database is opened only when asked."""
    from shared.db import get_engine

    with get_engine().connect() as connection:
        return lookup_entity(connection, kind, key)
