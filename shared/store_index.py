"""The result store's durable index in the database: which packs exist, and which pack holds the
current entry of each inference key. A lookup that Redis cannot answer costs one query here and
one ranged read of the pack. Rows only ever move to a newer entry (`written_at`), so writers,
compaction and reindexing can run at the same time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Engine

from shared.db import now, store_entries, store_packs
from shared.packs import Located

LOCATE_CHUNK = 500


@dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    length: int
    written_at: int


def _insert(engine: Engine):  # noqa: ANN202
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def record_pack(engine: Engine, name: str, index: dict[str, Located], size: int) -> None:
    """Register a pack just written and point its keys at it, unless a key already points at the
    same or a newer entry. One transaction: a pack is indexed whole or not at all."""
    insert = _insert(engine)
    with engine.begin() as connection:
        pack_id = connection.execute(
            insert(store_packs).values(name=name, entries=len(index), bytes=size, created_at=now())
            .on_conflict_do_update(index_elements=["name"], set_={"entries": len(index), "bytes": size})
            .returning(store_packs.c.id)
        ).scalar_one()
        _point(connection, insert, pack_id, index)


def _point(connection, insert, pack_id: int, index: dict[str, Located]) -> None:  # noqa: ANN001
    if not index:
        return
    statement = insert(store_entries)
    statement = statement.on_conflict_do_update(
        index_elements=["key"],
        set_={"pack_id": statement.excluded.pack_id, "offset": statement.excluded.offset,
              "length": statement.excluded.length, "written_at": statement.excluded.written_at},
        # Strictly newer: the same entry found again (a reindex reading a pack that compaction
        # just copied) never moves a key back.
        where=statement.excluded.written_at > store_entries.c.written_at,
    )
    rows = [{"key": key, "pack_id": pack_id, "offset": offset, "length": length, "written_at": at}
            for key, (offset, length, at) in sorted(index.items())]
    connection.execute(statement, rows)


# Built once: on the lookup path of every sample, building a statement cost more than running it.
_LOCATE = (
    select(store_entries.c.key, store_packs.c.name, store_entries.c.offset, store_entries.c.length,
           store_entries.c.written_at)
    .join(store_packs, store_packs.c.id == store_entries.c.pack_id)
    .where(store_entries.c.key.in_(bindparam("keys", expanding=True)))
)


def locate(engine: Engine, keys: Sequence[str]) -> dict[str, Location]:
    """Where the current entries of these keys are (keys not in the store are left out)."""
    found: dict[str, Location] = {}
    with engine.connect() as connection:
        for start in range(0, len(keys), LOCATE_CHUNK):
            rows = connection.execute(_LOCATE, {"keys": list(keys[start:start + LOCATE_CHUNK])})
            for key, pack, offset, length, written_at in rows:
                found[key] = Location(pack, offset, length, written_at)
    return found


@dataclass(frozen=True)
class PackUse:
    id: int
    name: str
    entries: int
    live: int
    bytes: int


def pack_uses(engine: Engine) -> list[PackUse]:
    """Every registered pack with how many of its entries are still current."""
    e, p = store_entries.c, store_packs.c
    live = select(e.pack_id, func.count().label("live")).group_by(e.pack_id).subquery()
    with engine.connect() as connection:
        rows = connection.execute(
            select(p.id, p.name, p.entries, func.coalesce(live.c.live, 0), p.bytes)
            .outerjoin(live, live.c.pack_id == p.id).order_by(p.name)
        ).all()
    return [PackUse(*row) for row in rows]


def live_keys(engine: Engine, pack_id: int) -> dict[str, tuple[int, int, int]]:
    """The keys whose current entry is in a pack: key -> (offset, length, written_at)."""
    e = store_entries.c
    with engine.connect() as connection:
        rows = connection.execute(select(e.key, e.offset, e.length, e.written_at).where(e.pack_id == pack_id))
        return {key: (offset, length, at) for key, offset, length, at in rows}


def move_entries(engine: Engine, name: str, index: dict[str, Located], size: int,
                 origins: dict[str, tuple[int, int]]) -> int:
    """Compaction: register a new pack holding copies of entries of older ones (`origins`: key ->
    (old pack id, written_at)), and move each key over only if it still points at that entry (a
    key written again meanwhile stays where it is). Returns how many keys moved."""
    insert = _insert(engine)
    e = store_entries.c
    with engine.begin() as connection:
        pack_id = connection.execute(
            insert(store_packs).values(name=name, entries=len(index), bytes=size, created_at=now())
            .returning(store_packs.c.id)
        ).scalar_one()
        statement = (
            update(store_entries)
            .where(and_(e.key == bindparam("k"), e.pack_id == bindparam("old"), e.written_at == bindparam("at")))
            .values(pack_id=pack_id, offset=bindparam("o"), length=bindparam("n"))
        )
        moved = 0
        for key, (offset, length, at) in index.items():
            old_pack_id, _ = origins[key]
            moved += connection.execute(statement, {"k": key, "at": at, "o": offset, "n": length,
                                                    "old": old_pack_id}).rowcount
        return moved


def forget_pack(engine: Engine, pack_id: int) -> bool:
    """Remove a pack's row if no key points at it any more; true when removed."""
    with engine.begin() as connection:
        if connection.execute(select(func.count()).select_from(store_entries)
                              .where(store_entries.c.pack_id == pack_id)).scalar():
            return False
        connection.execute(delete(store_packs).where(store_packs.c.id == pack_id))
        return True


def known_packs(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(store_packs.c.name)).scalars())


def forget_missing(engine: Engine, present: Iterable[str], older_than_ns: int) -> int:
    """Reindexing: drop the rows of registered packs that are no longer in the blob store (and
    were registered before the listing started). Returns how many packs were forgotten."""
    present = set(present)
    p, e = store_packs.c, store_entries.c
    with engine.connect() as connection:
        gone = [(pack_id, name) for pack_id, name in connection.execute(select(p.id, p.name))
                if name not in present and name < f"{older_than_ns:020d}"]
    for pack_id, _ in gone:
        with engine.begin() as connection:
            connection.execute(delete(store_entries).where(e.pack_id == pack_id))
            connection.execute(delete(store_packs).where(p.id == pack_id))
    return len(gone)


def totals(engine: Engine) -> tuple[int, int, int]:
    """(packs, entries registered in packs, current entries)."""
    with engine.connect() as connection:
        packs, entries = connection.execute(
            select(func.count(), func.coalesce(func.sum(store_packs.c.entries), 0))).one()
        current = connection.execute(select(func.count()).select_from(store_entries)).scalar()
    return packs, entries, current
