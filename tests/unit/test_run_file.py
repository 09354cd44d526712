"""The run file's own rules (shared/spec.py): what `load_run_file` accepts, its defaults, and the
SpecError (file, field, message) it gives for everything else."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.errors import SpecError
from shared.spec import RunFile, TaskSpecification, load_run_file

SPEC = {"task_key": "completeness", "dataset_key": "data", "task_config": {"field": "input"}}
BASE: dict[str, Any] = {
    "datasets": [{"key": "data", "path": "data.jsonl"}],
    "models": [{"key": "m", "provider": "mock", "name": "target"}],
    "evaluation": {"key": "ev", "display_name": "Evaluation", "task_specifications": [SPEC]},
}


def document(**evaluation: Any) -> dict[str, Any]:
    """BASE with evaluation fields replaced (a value of `...` removes the field)."""
    doc = copy.deepcopy(BASE)
    for name, value in evaluation.items():
        if value is ...:
            doc["evaluation"].pop(name, None)
        else:
            doc["evaluation"][name] = value
    return doc


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def load(tmp_path: Path, doc: Any) -> RunFile:
    return load_run_file(write(tmp_path, doc))


def error(tmp_path: Path, doc: Any) -> SpecError:
    path = write(tmp_path, doc)
    with pytest.raises(SpecError) as info:
        load_run_file(path)
    assert info.value.file == str(path)
    return info.value


# -- evaluation fields ---------------------------------------------------------------------------

def test_a_minimal_run_file_loads_with_the_documented_defaults(tmp_path):
    evaluation = load(tmp_path, BASE).evaluation
    assert evaluation.key == "ev"
    assert evaluation.num_samples is None
    assert evaluation.subsampling == "head"
    assert evaluation.cache_policy == "reuse"
    assert evaluation.tags == []
    assert evaluation.mode is None


@pytest.mark.parametrize("key", ["a", "A-b_9", "-_-", "x" * 250])
def test_evaluation_key_accepts_letters_digits_underscores_and_hyphens(tmp_path, key):
    assert load(tmp_path, document(key=key)).evaluation.key == key


@pytest.mark.parametrize("key", ["has space", "dot.ted", "sla/sh", "../up", "", "trailing\n", "é"])
def test_evaluation_key_must_match_the_key_pattern(tmp_path, key):
    exc = error(tmp_path, document(key=key))
    assert exc.field == "evaluation.key"
    assert "only letters, digits, '_' and '-'" in exc.message


def test_evaluation_key_may_not_exceed_250_characters(tmp_path):
    exc = error(tmp_path, document(key="x" * 251))
    assert exc.field == "evaluation.key"
    assert "250" in exc.message


def test_evaluation_key_is_required(tmp_path):
    exc = error(tmp_path, document(key=...))
    assert (exc.field, exc.message) == ("evaluation.key", "required field is missing")


def test_display_name_defaults_to_the_key(tmp_path):
    # The reference marks it required; a file without it is accepted and shows its key.
    assert load_run_file(write(tmp_path, document(display_name=...))).evaluation.display_name == "ev"


def test_display_name_may_not_be_empty(tmp_path):
    assert error(tmp_path, document(display_name="")).field == "evaluation.display_name"


@pytest.mark.parametrize("value", [0, -5, "many", 2.5])
def test_evaluation_num_samples_must_be_a_positive_integer(tmp_path, value):
    assert error(tmp_path, document(num_samples=value)).field == "evaluation.num_samples"


def test_task_specification_num_samples_must_be_positive(tmp_path):
    doc = document(task_specifications=[{**SPEC, "key": "k", "num_samples": 0}])
    assert error(tmp_path, doc).field == "evaluation.task_specifications[0:k].num_samples"


@pytest.mark.parametrize("value", ["head", "random"])
def test_subsampling_is_head_or_random(tmp_path, value):
    assert load(tmp_path, document(subsampling=value)).evaluation.subsampling == value


@pytest.mark.parametrize("where", ["evaluation", "specification"])
def test_any_other_subsampling_is_an_error(tmp_path, where):
    if where == "evaluation":
        doc, field = document(subsampling="tail"), "evaluation.subsampling"
    else:
        doc = document(task_specifications=[{**SPEC, "subsampling": "shuffle"}])
        field = "evaluation.task_specifications[0].subsampling"
    exc = error(tmp_path, doc)
    assert exc.field == field
    assert "head" in exc.message and "random" in exc.message


@pytest.mark.parametrize("value", ["reuse", "update", "no-cache"])
def test_cache_policy_is_reuse_update_or_no_cache(tmp_path, value):
    assert load(tmp_path, document(cache_policy=value)).evaluation.cache_policy == value


def test_any_other_cache_policy_is_an_error(tmp_path):
    assert error(tmp_path, document(cache_policy="always")).field == "evaluation.cache_policy"


def test_tags_are_kept_as_given(tmp_path):
    assert load(tmp_path, document(tags=["nightly", "qa"])).evaluation.tags == ["nightly", "qa"]


@pytest.mark.parametrize("value", [True, False, 0.25, 3])
def test_fail_on_error_is_a_boolean_a_fraction_or_a_count(tmp_path, value):
    assert load(tmp_path, document(fail_on_error=value)).evaluation.fail_on_error == value


@pytest.mark.parametrize("value", ["sometimes", -1])
def test_an_invalid_fail_on_error_names_the_field(tmp_path, value):
    exc = error(tmp_path, document(fail_on_error=value))
    assert exc.field == "evaluation.fail_on_error"


# -- deprecated `mode` ---------------------------------------------------------------------------

def test_mode_debug_means_ten_samples_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="deprecated") as caught:
        evaluation = load(tmp_path, document(mode="debug")).evaluation
    assert evaluation.num_samples == 10
    assert str(tmp_path / "run.yaml") in str(caught[0].message)


def test_mode_full_means_the_whole_dataset_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="deprecated"):
        evaluation = load(tmp_path, document(mode="full")).evaluation
    assert evaluation.num_samples is None


@pytest.mark.parametrize(("mode", "num_samples"), [("debug", 5), ("debug", 11), ("full", 10)])
def test_mode_that_contradicts_num_samples_is_an_error(tmp_path, mode, num_samples):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exc = error(tmp_path, document(mode=mode, num_samples=num_samples))
    assert exc.field == "evaluation"
    assert "contradicts" in exc.message and "mode" in exc.message


def test_mode_debug_that_agrees_with_num_samples_is_accepted(tmp_path):
    with pytest.warns(DeprecationWarning):
        assert load(tmp_path, document(mode="debug", num_samples=10)).evaluation.num_samples == 10


def test_no_mode_gives_no_deprecation_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        load(tmp_path, document(num_samples=3))


def test_an_unknown_mode_is_an_error(tmp_path):
    assert error(tmp_path, document(mode="quick")).field == "evaluation.mode"


# -- task specifications -------------------------------------------------------------------------

def test_task_specifications_are_required(tmp_path):
    exc = error(tmp_path, document(task_specifications=...))
    assert (exc.field, exc.message) == ("evaluation.task_specifications", "required field is missing")


def test_task_specifications_may_not_be_empty(tmp_path):
    assert error(tmp_path, document(task_specifications=[])).field == "evaluation.task_specifications"


def test_explicit_task_specification_keys_must_be_unique(tmp_path):
    doc = document(task_specifications=[{**SPEC, "key": "same"}, {**SPEC, "key": "same"}])
    exc = error(tmp_path, doc)
    assert exc.field == "evaluation.task_specifications"
    assert "'same'" in exc.message and "twice" in exc.message


def test_derived_task_specification_keys_must_be_unique(tmp_path):
    exc = error(tmp_path, document(task_specifications=[SPEC, dict(SPEC)]))
    assert "'completeness__data'" in exc.message
    assert "derived" in exc.message and "key" in exc.message


def test_an_explicit_key_may_not_repeat_another_specifications_derived_key(tmp_path):
    exc = error(tmp_path, document(task_specifications=[SPEC, {**SPEC, "key": "completeness__data"}]))
    assert "'completeness__data'" in exc.message


def test_specifications_differing_only_in_key_are_accepted(tmp_path):
    specs = load(tmp_path, document(task_specifications=[SPEC, {**SPEC, "key": "other"}]))
    assert len(specs.evaluation.task_specifications) == 2


def test_derived_key_is_built_from_the_task_model_and_dataset_keys():
    spec = TaskSpecification(task_key="qa", model_key="mock$target", dataset_key="capitals")
    assert spec.derived_key == "qa__mock-target__capitals"
    again = TaskSpecification(task_key="qa", model_key="mock$target", dataset_key="capitals", num_samples=3)
    assert again.derived_key == spec.derived_key
    assert TaskSpecification(task_key="qa", model_key="m", dataset_key="capitals").derived_key != spec.derived_key
    assert TaskSpecification(task_key="uniqueness", dataset_key="capitals").derived_key == "uniqueness__capitals"


def test_derived_key_is_itself_a_valid_key():
    spec = TaskSpecification(task_key="qa", model_key="python$pkg.mod:fn", dataset_key="d")
    assert spec.derived_key == "qa__python-pkg-mod-fn__d"


@pytest.mark.parametrize("model_key", ["my-model", "openai$gpt-4.1-nano", "mock$target", "python$pkg.mod:answer"])
def test_model_key_is_a_registered_key_or_provider_dollar_name(tmp_path, model_key):
    doc = document(task_specifications=[{**SPEC, "model_key": model_key}])
    assert load(tmp_path, doc).evaluation.task_specifications[0].model_key == model_key


@pytest.mark.parametrize("model_key", ["anthropic$claude", "mock$", "two words", "openai$a b", "openai$a$b"])
def test_model_key_of_any_other_form_is_an_error(tmp_path, model_key):
    doc = document(task_specifications=[{**SPEC, "model_key": model_key}])
    assert error(tmp_path, doc).field == "evaluation.task_specifications[0].model_key"


def test_task_key_must_be_a_valid_key(tmp_path):
    doc = document(task_specifications=[{**SPEC, "task_key": "no spaces"}])
    assert error(tmp_path, doc).field == "evaluation.task_specifications[0].task_key"


# -- unknown fields ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("edit", "field", "accepted"),
    [
        (lambda d: d.update(extra=1), "extra", ["datasets", "models", "tasks", "evaluation"]),
        (lambda d: d["evaluation"].update(colour="red"), "evaluation.colour",
         ["key", "display_name", "num_samples", "subsampling", "cache_policy", "task_specifications", "tags"]),
        (lambda d: d["evaluation"]["task_specifications"][0].update(modle_key="m"),
         "evaluation.task_specifications[0].modle_key", ["task_key", "model_key", "dataset_key", "task_config"]),
        (lambda d: d["datasets"][0].update(format="csv"), "datasets[0:data].format",
         ["key", "path", "id_field", "input_field", "target_field"]),
        (lambda d: d["models"][0].update(temprature=1), "models[0:m].temprature",
         ["provider", "name", "temperature"]),
    ],
    ids=["top-level", "evaluation", "task-specification", "dataset", "model"],
)
def test_an_unknown_field_is_rejected_naming_it_and_listing_the_accepted_fields(tmp_path, edit, field, accepted):
    doc = copy.deepcopy(BASE)
    edit(doc)
    exc = error(tmp_path, doc)
    assert exc.field == field
    assert "unknown field" in exc.message
    listed = exc.message.split("accepted fields:", 1)[1]
    for name in accepted:
        assert name in listed


# -- entities ------------------------------------------------------------------------------------

def test_entity_keys_must_be_unique_within_a_section(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["datasets"].append({"key": "data", "path": "other.jsonl"})
    assert "'data' is defined twice" in error(tmp_path, doc).message


def test_a_model_entity_needs_a_known_provider(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["models"][0]["provider"] = "anthropic"
    assert error(tmp_path, doc).field == "models[0:m].provider"


@pytest.mark.parametrize("task", [{"key": "t"}, {"key": "t", "template": "qa", "entrypoint": "pkg.mod:Task"}])
def test_a_task_entity_needs_exactly_one_of_template_and_entrypoint(tmp_path, task):
    doc = copy.deepcopy(BASE)
    doc["tasks"] = [task]
    assert "exactly one" in error(tmp_path, doc).message


# -- YAML ----------------------------------------------------------------------------------------

def test_duplicate_yaml_keys_are_rejected_with_their_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "evaluation:\n"
        "  key: first\n"
        "  display_name: D\n"
        "  key: second\n"
        "  task_specifications: [{task_key: qa}]\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_run_file(path)
    assert info.value.file == str(path)
    assert "duplicate key 'key'" in info.value.message
    assert "line 4" in info.value.message


def test_malformed_yaml_is_rejected_with_its_line_number(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("evaluation:\n  key: ev\n  display_name: [unclosed\n  tags: []\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_run_file(path)
    assert info.value.file == str(path)
    assert info.value.message.startswith("malformed YAML: line ")
    assert "\n" not in str(info.value)


def test_a_missing_run_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="file not found") as info:
        load_run_file(tmp_path / "absent.yaml")
    assert info.value.file == str(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_run_file_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match="mapping"):
        load_run_file(path)


def test_the_evaluation_section_is_required(tmp_path):
    doc = copy.deepcopy(BASE)
    del doc["evaluation"]
    exc = error(tmp_path, doc)
    assert exc.field == "evaluation" and "evalfleet add -f" in exc.message


def test_a_spec_error_reads_as_one_line_naming_file_and_field(tmp_path):
    exc = error(tmp_path, document(key="bad key"))
    text = str(exc)
    assert text.startswith(f"{tmp_path / 'run.yaml'}: field `evaluation.key`: ")
    assert "\n" not in text
