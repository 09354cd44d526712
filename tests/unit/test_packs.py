"""The pack format, the journal, and the packed result store on a local directory and SQLite:
round trips, corrupt packs read as misses (never a crash), the newest entry of a key winning
everywhere, compaction, migration of a one-file-per-entry store, and a killed writer's journal
packed by the next process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared import packs, store_index, store_upkeep
from shared.db import get_engine
from shared.result_store import CachedInference, CachedScores, ResultStore, StoreEntry, legacy_path
from shared.storage import LocalStore
from shared.store_journal import Journal


def key(number: int) -> str:
    return f"{number:064x}"


def entry_json(text: str) -> bytes:
    return StoreEntry(inference=CachedInference(output=text)).model_dump_json().encode()


# -- the format ------------------------------------------------------------------------------------


def test_a_pack_round_trips_and_each_entry_reads_alone_with_one_ranged_read():
    entries = [(key(i), 1000 + i, entry_json(f"output {i}" * (i % 7))) for i in range(300)]
    data, index = packs.build_pack(entries)
    assert packs.entries_of(data) == {k: (at, raw) for k, at, raw in entries}
    # The index from the tail alone (what a ranged read of the last bytes gives).
    tail = data[-packs.index_length(data[-packs.FOOTER_BYTES:]):]
    assert packs.read_index(tail) == index
    assert packs.read_index(data[-packs.FOOTER_BYTES - 3:], len(data)) is None  # read more
    for k, at, raw in entries[::37]:
        offset, length, written_at = index[k]
        assert written_at == at
        assert packs.read_frame(data[offset:offset + length]) == raw


def test_a_key_given_twice_keeps_its_newest_entry():
    data, index = packs.build_pack([(key(1), 5, b'"new"'), (key(1), 3, b'"old"'), (key(2), 1, b'"x"')])
    assert packs.entries_of(data) == {key(1): (5, b'"new"'), key(2): (1, b'"x"')}
    assert len(index) == 2


@pytest.mark.parametrize("damage", [
    lambda d: d[: len(d) // 2],                      # half written
    lambda d: d[:-1],                                # footer cut
    lambda d: b"garbage" * 10,                       # not a pack
    lambda d: d[:-20] + b"\x00" * 4 + d[-16:],       # index bytes damaged
    lambda d: d[:-8] + (10**9).to_bytes(8, "big"),   # index length beyond the pack
])
def test_a_damaged_pack_raises_corrupt_pack_only(damage):
    data, _ = packs.build_pack([(key(i), i, entry_json("x")) for i in range(10)])
    with pytest.raises(packs.CorruptPack):
        packs.entries_of(damage(data))


def test_a_damaged_frame_raises_corrupt_pack():
    data, index = packs.build_pack([(key(1), 1, entry_json("hello world"))])
    offset, length, _ = index[key(1)]
    with pytest.raises(packs.CorruptPack):
        packs.read_frame(b"\xff" * length)
    assert packs.read_frame(data[offset:offset + length]) == entry_json("hello world")


# -- the journal -----------------------------------------------------------------------------------


def test_a_journal_seals_and_is_not_an_orphan_while_its_owner_lives(tmp_path: Path):
    journal = Journal(tmp_path / "j")
    assert journal.append(key(1), 1, entry_json("a")) == 1
    assert journal.append(key(2), 2, entry_json("b")) == 2
    assert list(Journal(tmp_path / "j").orphans()) == []  # locked by its owner
    sealed = journal.seal()
    assert [k for k, _, _ in sealed.entries] == [key(1), key(2)]
    assert journal.seal() is None
    assert list(Journal(tmp_path / "j").orphans()) == []  # sealed, still locked until packed
    sealed.discard()
    assert not list((tmp_path / "j").iterdir())


def test_a_killed_writers_journal_is_an_orphan_and_its_cut_line_is_skipped(tmp_path: Path):
    directory = tmp_path / "j"
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from pathlib import Path
from shared.store_journal import Journal
journal = Journal(Path({str(directory)!r}))
for i in range(5):
    journal.append(f"{{i:064x}}", i, b'{{"n": %d}}' % i)
path = next(Path({str(directory)!r}).iterdir())
with open(path, "ab") as handle:
    handle.write(b'{{"k":"cut short')  # the kill landed mid-write
print("ready", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout.readline().strip() == "ready"
        assert list(Journal(directory).orphans()) == []
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        [orphan] = list(Journal(directory).orphans())
        assert orphan.orphan
        assert [(k, at, json.loads(raw)) for k, at, raw in orphan.entries] == [
            (key(i), i, {"n": i}) for i in range(5)]
        # Taken by this caller: nobody else can take it meanwhile.
        assert list(Journal(directory).orphans()) == []
        orphan.discard()
    finally:
        child.kill()
        child.wait()


# -- the packed store ------------------------------------------------------------------------------


@pytest.fixture
def store_parts(tmp_path: Path):
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    blobs = LocalStore(tmp_path / "store")

    def open_store() -> ResultStore:
        return ResultStore(blobs, None, engine=engine, journal_dir=tmp_path / "store" / "journal")

    return open_store, blobs, engine, tmp_path / "store"


def test_entries_go_to_few_packs_and_a_new_process_reads_them_through_the_index(store_parts):
    open_store, _, engine, root = store_parts
    store = open_store()
    for i in range(1000):
        store.save(key(i), CachedInference(output=f"out {i}"), "sk", CachedScores(scores={}))
    assert store.lookup(key(7), "sk")[0].output == "out 7"  # before any pack: from this process
    store.close()
    pack_files = list((root / "packs").glob("*.pack"))
    assert 1 <= len(pack_files) <= 1000 // 256 + 2, pack_files
    assert not list((root / "journal").glob("*.journal"))
    assert store_index.totals(engine)[2] == 1000

    fresh = open_store()
    found = fresh.lookup_many([(key(i), "sk") for i in range(1000)] + [(key(5000), "sk")])
    assert [inference.output for inference, _ in found[:-1]] == [f"out {i}" for i in range(1000)]
    assert all(scores == CachedScores(scores={}) for _, scores in found[:-1])
    assert found[-1] == (None, None)
    assert fresh.lookup(key(3), "other") == (CachedInference(output="out 3"), None)


def test_a_corrupt_pack_is_a_miss_not_a_crash(store_parts):
    open_store, _, _, root = store_parts
    store = open_store()
    store.save(key(1), CachedInference(output="one"), "sk", None)
    store.close()
    [pack] = (root / "packs").glob("*.pack")
    pack.write_bytes(b"\x00" * pack.stat().st_size)
    assert open_store().lookup(key(1), "sk") == (None, None)
    pack.unlink()
    assert open_store().lookup(key(1), "sk") == (None, None)


def test_the_newest_entry_wins_and_compaction_keeps_every_current_entry(store_parts):
    open_store, _, engine, root = store_parts
    store = open_store()
    for i in range(600):
        store.save(key(i), CachedInference(output=f"v1 {i}"), "sk", None)
    store.flush()
    for i in range(0, 600, 2):  # `update` replaces half the outputs
        store.save(key(i), CachedInference(output=f"v2 {i}"), "sk", None)
    store.save(key(1), CachedInference(output="v1 1"), "more", CachedScores(scores={}), known=True)
    store.close()
    before = store_upkeep.stats(open_store())
    assert before.entries == 600 + 301 and before.current_entries == 600

    done = store_upkeep.compact(open_store(), min_dead=0.01)
    after = store_upkeep.stats(open_store())
    assert done.packs_deleted >= 1 and done.bytes_after < done.bytes_before
    assert after.entries == after.current_entries == 600
    assert len(list((root / "packs").glob("*.pack"))) == after.packs

    fresh = open_store()
    outputs = [found.output for found, _ in fresh.lookup_many([(key(i), "sk") for i in range(600)])]
    assert outputs == [f"v2 {i}" if i % 2 == 0 else f"v1 {i}" for i in range(600)]
    assert fresh.lookup(key(1), "more")[1] == CachedScores(scores={})

    # A rebuild from the packs alone gives the same answers.
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM store_entries")
        connection.exec_driver_sql("DELETE FROM store_packs")
    assert store_upkeep.reindex(open_store()) == 600
    outputs = [found.output for found, _ in open_store().lookup_many([(key(i), "sk") for i in range(600)])]
    assert outputs == [f"v2 {i}" if i % 2 == 0 else f"v1 {i}" for i in range(600)]


def test_a_store_of_one_file_per_entry_is_read_and_migrated(store_parts):
    open_store, blobs, _, root = store_parts
    for i in range(10):
        blobs.write_bytes(legacy_path(key(i)), entry_json(f"legacy {i}"))
    store = open_store()
    assert store.lookup(key(4), "sk")[0].output == "legacy 4"
    store.save(key(5), CachedInference(output="newer"), "sk", None)
    store.close()

    assert store_upkeep.migrate(open_store()) == 10
    assert not list((root / "results").rglob("*.json"))
    fresh = open_store()
    outputs = [found.output for found, _ in fresh.lookup_many([(key(i), "sk") for i in range(10)])]
    assert outputs == [f"legacy {i}" if i != 5 else "newer" for i in range(10)]


def test_a_killed_process_journal_is_packed_by_the_next_one(store_parts, tmp_path: Path):
    _, _, engine, root = store_parts
    child = subprocess.Popen([sys.executable, "-c", f"""
import time
from pathlib import Path
from shared.db import get_engine
import shared.result_store as result_store
from shared.result_store import CachedInference, ResultStore
from shared.storage import LocalStore
result_store.PACK_MAX_WAIT_S = 3600  # killed before any pack: everything is in the journal
store = ResultStore(LocalStore({str(root)!r}), None, engine=get_engine({str(engine.url)!r}),
                    journal_dir=Path({str(root / 'journal')!r}))
for i in range(40):
    store.save(f"{{i:064x}}", CachedInference(output=f"kept {{i}}"), "sk", None)
print("saved", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout.readline().strip() == "saved"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.wait()
    assert list((root / "journal").glob("*.journal"))
    assert store_index.totals(engine)[2] == 0
    assert store_upkeep.reindex(ResultStore(LocalStore(root), None, engine=engine, journal_dir=root / "journal")) == 40
    store = ResultStore(LocalStore(root), None, engine=engine, journal_dir=root / "journal")
    assert [found.output for found, _ in store.lookup_many([(key(i), "sk") for i in range(40)])] == [
        f"kept {i}" for i in range(40)]
    assert not list((root / "journal").glob("*.journal"))
    assert len(list((root / "packs").glob("*.pack"))) == 1


def test_a_journal_being_opened_is_never_taken_for_an_orphan(tmp_path, monkeypatch):
    """Another packer on the host looks for orphans at the worst moment: right after the journal
    file is created, before its owner has locked it. It must not see it (it would pack an empty
    file and delete it, and the owner's entries would go nowhere)."""
    import fcntl

    from shared import store_journal
    from shared.store_journal import Journal

    owner, neighbour = Journal(tmp_path), Journal(tmp_path)
    seen: list = []
    real_flock = fcntl.flock

    def flock_after_a_look(fd, operation):  # noqa: ANN001, ANN202
        if not seen:
            seen.append([sealed.path for sealed in neighbour.orphans()])
        return real_flock(fd, operation)

    monkeypatch.setattr(store_journal.fcntl, "flock", flock_after_a_look)
    assert owner.append_many([("k1", 1, b'{"x":1}')]) == 1
    monkeypatch.setattr(store_journal.fcntl, "flock", real_flock)
    assert seen == [[]]
    assert [sealed.path for sealed in neighbour.orphans()] == []  # locked by its live owner
    sealed = owner.seal()
    assert sealed is not None and sealed.path.exists() and [e[0] for e in sealed.entries] == ["k1"]
