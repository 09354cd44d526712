"""Reading datasets (shared/samples.py): .jsonl, .json and .csv, field mapping, ids, metadata, and
the SpecError for each kind of bad row."""

from __future__ import annotations

import json

import pytest

from shared.errors import SpecError
from shared.plan import ResolvedDataset
from shared.samples import iter_rows, iter_selected, select_samples, to_sample

ROWS = [
    {"id": "a", "input": "What is 2+2?", "target": "4", "level": "easy"},
    {"id": "b", "input": "Capital of France?", "target": "Paris", "level": "easy"},
    {"id": "c", "input": "Largest planet?", "target": "Jupiter", "level": "hard"},
]


def dataset(path, **fields) -> ResolvedDataset:
    return ResolvedDataset(key="d", path=str(path), **fields)


def samples(ds: ResolvedDataset, *, needs_input=True, needs_target=False, num_samples=None, subsampling="head"):
    selection = select_samples(ds, num_samples, subsampling, needs_input=needs_input, needs_target=needs_target)
    return [s for _, s in iter_selected(ds, selection, needs_input=needs_input, needs_target=needs_target)]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_every_format_gives_the_same_samples(tmp_path, write_dataset_file, suffix):
    ds = dataset(write_dataset_file(tmp_path / f"data{suffix}", ROWS))
    got = samples(ds)
    assert [(s.id, s.input, s.target) for s in got] == [(r["id"], r["input"], r["target"]) for r in ROWS]
    assert [s.metadata for s in got] == [{"level": r["level"]} for r in ROWS]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_id_input_and_target_fields_can_be_mapped(tmp_path, write_dataset_file, suffix):
    rows = [{"qid": "q1", "question": "Q?", "answer": "A", "id": "not-the-id", "input": "not-the-input"}]
    ds = dataset(write_dataset_file(tmp_path / f"data{suffix}", rows), id_field="qid", input_field="question",
                 target_field="answer")
    (sample,) = samples(ds)
    assert (sample.id, sample.input, sample.target) == ("q1", "Q?", "A")
    assert sample.metadata == {"id": "not-the-id", "input": "not-the-input"}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_the_row_index_is_the_id_when_there_is_no_id_field(tmp_path, write_dataset_file, suffix):
    rows = [{"input": "x", "target": "1"}, {"input": "y", "target": "2"}, {"input": "z", "target": "3"}]
    ds = dataset(write_dataset_file(tmp_path / f"data{suffix}", rows))
    assert [s.id for s in samples(ds)] == ["0", "1", "2"]


def test_every_other_field_becomes_metadata(tmp_path, write_dataset_file):
    rows = [{"id": 1, "input": "x", "target": "y", "choices": ["a", "b"], "meta": {"k": 1}, "n": 3}]
    (sample,) = samples(dataset(write_dataset_file(tmp_path / "d.jsonl", rows)))
    assert sample.id == "1"
    assert sample.metadata == {"choices": ["a", "b"], "meta": {"k": 1}, "n": 3}


def test_blank_lines_in_jsonl_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "input": "x"}\n\n   \n{"id": "b", "input": "y"}\n', encoding="utf-8")
    assert [s.id for s in samples(dataset(path))] == ["a", "b"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_row_without_the_input_field_is_an_error_naming_row_and_field(tmp_path, write_dataset_file, suffix):
    rows = [{"id": "a", "input": "x"}, {"id": "b", "question": "y"}]
    path = write_dataset_file(tmp_path / f"d{suffix}", rows)
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert (info.value.file, info.value.field) == (str(path), "row 1: input")
    # The message lists what the row has and names the setting that maps the column.
    assert "its fields: id, question" in info.value.message and "`input_field`" in info.value.message


def test_a_csv_without_the_input_column_is_an_error(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.csv", [{"id": "a", "question": "x"}])
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.field == "row 0: input"


def test_a_row_without_the_input_field_is_fine_when_the_task_reads_no_input(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", [{"id": "a", "other": 1}])
    assert [s.input for s in samples(dataset(path), needs_input=False)] == [None]


def test_a_row_without_a_target_is_an_error_only_when_the_task_needs_one(tmp_path, write_dataset_file):
    path = write_dataset_file(tmp_path / "d.jsonl", [{"id": "a", "input": "x"}])
    assert samples(dataset(path), needs_target=False)[0].target is None
    with pytest.raises(SpecError) as info:
        samples(dataset(path), needs_target=True)
    assert info.value.field == "row 0: target"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_duplicate_sample_ids_are_an_error(tmp_path, write_dataset_file, suffix):
    rows = [{"id": "a", "input": "x"}, {"id": "b", "input": "y"}, {"id": "a", "input": "z"}]
    path = write_dataset_file(tmp_path / f"d{suffix}", rows)
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.field == "row 2: id"
    assert "duplicate sample id 'a'" in info.value.message


def test_duplicate_ids_are_found_even_beyond_the_selected_samples(tmp_path, write_dataset_file):
    rows = [{"id": "a", "input": "x"}, {"id": "b", "input": "y"}, {"id": "a", "input": "z"}]
    with pytest.raises(SpecError, match="duplicate"):
        samples(dataset(write_dataset_file(tmp_path / "d.jsonl", rows)), num_samples=1)


def test_a_missing_dataset_file_is_an_error(tmp_path):
    with pytest.raises(SpecError) as info:
        list(iter_rows(str(tmp_path / "absent.jsonl")))
    assert info.value.file == str(tmp_path / "absent.jsonl")
    assert "not found" in info.value.message


def test_an_unknown_dataset_format_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="unknown dataset format"):
        list(iter_rows(str(tmp_path / "data.parquet")))


def test_an_empty_dataset_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(SpecError, match="no rows"):
        samples(dataset(path))


def test_a_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "input": "x"}\n{"id": "b", \n', encoding="utf-8")
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.field == "line 2"


@pytest.mark.parametrize("text", ['{"rows": []}', "[1, 2]", "[{]"])
def test_a_json_dataset_must_be_a_list_of_objects(tmp_path, text):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError):
        samples(dataset(path))


def test_non_text_targets_are_given_as_json_text(tmp_path, write_dataset_file):
    rows = [{"id": "a", "input": "q", "target": [1, 2]}]
    (sample,) = samples(dataset(write_dataset_file(tmp_path / "d.jsonl", rows)))
    assert (sample.input, sample.target) == ("q", "[1, 2]")


@pytest.mark.parametrize(("value", "said"), [
    (12, "a number (12)"), ({"text": "hi"}, "an object"), ([], "an empty list"), (True, "a boolean"),
])
def test_an_input_that_is_neither_text_nor_messages_names_the_row_and_field(tmp_path, write_dataset_file, value,
                                                                           said):
    rows = [{"id": "a", "input": "fine"}, {"id": "b", "input": value}]
    path = write_dataset_file(tmp_path / "d.jsonl", rows)
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.file == str(path)
    assert info.value.field == "row 1: input"
    assert said in info.value.message


def test_a_list_of_chat_messages_is_read_as_a_conversation(tmp_path, write_dataset_file):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    (sample,) = samples(dataset(write_dataset_file(tmp_path / "d.jsonl", [{"id": "a", "input": conversation}])))
    assert [m.model_dump() for m in sample.input] == conversation


@pytest.mark.parametrize("message", [{"role": "robot", "content": "x"}, {"role": "user"},
                                     {"role": "user", "content": [{"type": "text", "text": "x"}]}, "hello"])
def test_a_list_input_that_is_not_chat_messages_is_refused(tmp_path, write_dataset_file, message):
    rows = [{"id": "a", "input": [{"role": "user", "content": "fine"}, message]}]
    path = write_dataset_file(tmp_path / "d.jsonl", rows)
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.field == "row 0: input"
    assert info.value.message.startswith("message 1")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path, write_dataset_file, suffix):
    path = write_dataset_file(tmp_path / f"d{suffix}", [{"id": "q1", "input": "hi", "target": "x"}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (sample,) = samples(dataset(path))
    assert (sample.id, sample.input, sample.metadata) == ("q1", "hi", {})


@pytest.mark.parametrize("bad_id", ["a\x00b", "\ud800"])
def test_a_sample_id_a_database_cannot_store_is_refused_with_its_row(tmp_path, bad_id):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "ok", "input": "x"}) + "\n" + json.dumps({"id": bad_id, "input": "y"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.file == str(path)
    assert info.value.field == "row 1: id"


def test_to_sample_keeps_an_empty_input(tmp_path):
    sample = to_sample({"id": "x", "input": ""}, 0, dataset(tmp_path / "d.jsonl"), needs_input=True,
                       needs_target=False)
    assert sample.input == ""


def test_a_csv_row_with_more_values_than_columns_is_a_spec_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,input,target\n1,hello,world\n2,hi,there,surplus\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.file == str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_dataset_that_is_not_utf8_is_a_spec_error(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    body = b'{"id": "1", "input": "caf\xe9"}\n' if suffix == ".jsonl" else b"id,input\n1,caf\xe9\n"
    path.write_bytes(body)
    with pytest.raises(SpecError) as info:
        samples(dataset(path))
    assert info.value.file == str(path)


def test_duplicate_check_keeps_only_suspects_and_confirms_them_exactly(monkeypatch):
    from shared.samples import DuplicateIds

    ids = DuplicateIds()
    distinct = [f"sample-{i}" for i in range(200_000)]
    for identifier in distinct:
        ids.add(identifier)
    # A set of every id would hold 200,000 strings; the filter keeps a handful of false alarms.
    assert len(ids.suspects) < 1_000
    assert ids.confirm(enumerate(distinct)) is None

    # With a filter of 8 bits nearly every id is a suspect: the exact pass still decides.
    monkeypatch.setattr(DuplicateIds, "BITS", 8)
    crowded = DuplicateIds()
    rows = ["a", "b", "c", "d", "b", "e", "a"]
    for identifier in rows:
        crowded.add(identifier)
    assert crowded.confirm(enumerate(rows)) == (4, "b")
    assert crowded.confirm(enumerate(["a", "b", "c"])) is None
