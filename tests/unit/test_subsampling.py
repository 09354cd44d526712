"""Which samples a task specification evaluates (shared/samples.py): `head` takes the first N;
seeded `random` keeps the N ids with the smallest blake2b rank, the same on every run."""

from __future__ import annotations

import hashlib
import random

from shared.plan import ResolvedDataset
from shared.samples import iter_selected, select_samples

ROWS = [{"id": f"item-{i:03d}", "input": f"q{i}", "target": str(i)} for i in range(60)]


def selected_ids(path, num_samples, subsampling):
    ds = ResolvedDataset(key="d", path=str(path))
    selection = select_samples(ds, num_samples, subsampling, needs_input=True, needs_target=True)
    chosen = list(iter_selected(ds, selection, needs_input=True, needs_target=True))
    assert [position for position, _ in chosen] == list(range(len(chosen)))
    assert selection.total == len(chosen)
    return [sample.id for _, sample in chosen]


def expected_random(ids, n):
    """The documented rule, computed independently: the n smallest 8-byte blake2b digests of
    `evalfleet-subsampling-v1:<id>`, read big-endian."""
    def rank(sample_id):
        digest = hashlib.blake2b(f"evalfleet-subsampling-v1:{sample_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return set(sorted(ids, key=rank)[:n])


def test_head_takes_the_first_n_samples(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    assert selected_ids(path, 5, "head") == [f"item-{i:03d}" for i in range(5)]


def test_without_num_samples_every_sample_is_taken(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    assert selected_ids(path, None, "head") == [r["id"] for r in ROWS]
    assert selected_ids(path, None, "random") == [r["id"] for r in ROWS]


def test_num_samples_larger_than_the_dataset_takes_every_sample(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    assert selected_ids(path, 500, "head") == [r["id"] for r in ROWS]
    assert selected_ids(path, 500, "random") == [r["id"] for r in ROWS]


def test_random_subsampling_returns_n_distinct_samples(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    for n in (1, 7, 59):
        ids = selected_ids(path, n, "random")
        assert len(ids) == n == len(set(ids))


def test_random_subsampling_follows_the_documented_seeded_hash(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    ids = selected_ids(path, 10, "random")
    assert set(ids) == expected_random([r["id"] for r in ROWS], 10)
    assert ids != selected_ids(path, 10, "head")


def test_random_subsampling_is_the_same_on_every_run(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    first = selected_ids(path, 12, "random")
    assert all(selected_ids(path, 12, "random") == first for _ in range(3))


def test_random_subsampling_is_independent_of_row_order(tmp_path, write_dataset_file):
    shuffled = list(ROWS)
    random.Random(7).shuffle(shuffled)
    ordered = selected_ids(write_dataset_file(tmp_path / "a.jsonl", ROWS), 12, "random")
    reordered = selected_ids(write_dataset_file(tmp_path / "b.jsonl", shuffled), 12, "random")
    assert set(ordered) == set(reordered)


def test_random_subsampling_is_the_same_in_every_format(tmp_path, write_dataset_file):
    jsonl = selected_ids(write_dataset_file(tmp_path / "d.jsonl", ROWS), 9, "random")
    assert selected_ids(write_dataset_file(tmp_path / "d.csv", ROWS), 9, "random") == jsonl
    assert selected_ids(write_dataset_file(tmp_path / "d.json", ROWS), 9, "random") == jsonl


def test_random_samples_keep_their_dataset_order(tmp_path, write_dataset_file):
    ids = selected_ids(write_dataset_file(tmp_path / "d.jsonl", ROWS), 15, "random")
    assert ids == sorted(ids)  # ids are zero-padded in row order


def test_a_larger_random_selection_contains_the_smaller_one(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", ROWS)
    assert set(selected_ids(path, 5, "random")) <= set(selected_ids(path, 20, "random"))
