"""Resolving a run file (services/resolver.py): references to tasks, models and datasets, task
config validated against the task, and the per-specification sample selection. The registry is a
plain dict here; tests/e2e covers the database-backed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.resolver import resolve_run_file
from shared.errors import SpecError
from shared.settings import reset_settings
from shared.spec import DatasetEntity, ModelEntity, TaskEntity

QA = {"key": "qa-spec", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data"}


def evaluation(*specs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"key": "ev", "display_name": "Ev", "task_specifications": list(specs) or [QA], **fields}


def registry(*entities: tuple[str, Any]):
    found = {(kind, entity.key): entity for kind, entity in entities}
    return lambda kind, key: found.get((kind, key))


def resolve(path: Path, *entities: tuple[str, Any]):
    return resolve_run_file(path, registry(*entities))


def resolve_error(path: Path, *entities: tuple[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        resolve(path, *entities)
    return info.value


FIELD0 = "evaluation.task_specifications[0:qa-spec]"


# -- task config ---------------------------------------------------------------------------------

def test_task_config_defaults_are_filled_in(tmp_path, write_run):
    spec = resolve(write_run(tmp_path, evaluation())).evaluation.task_specifications[0]
    assert spec.task.config == {"prompt_template": "{input}", "scorers": [{"name": "includes"}]}


def test_task_config_scorer_options_are_kept(tmp_path, write_run):
    config = {"scorers": ["exact", {"name": "regex", "pattern": "(\\d+)"}, {"name": "numeric", "tolerance": 0.5}]}
    spec = resolve(write_run(tmp_path, evaluation({**QA, "task_config": config}))).evaluation.task_specifications[0]
    assert spec.task.config["scorers"] == [
        {"name": "exact"}, {"name": "regex", "pattern": "(\\d+)"}, {"name": "numeric", "tolerance": 0.5},
    ]


def test_an_unknown_task_config_field_is_named_with_the_accepted_fields(tmp_path, write_run):
    path = write_run(tmp_path, evaluation({**QA, "task_config": {"promt_template": "{input}"}}))
    exc = resolve_error(path)
    assert exc.file == str(path)
    assert exc.field == f"{FIELD0}.task_config.promt_template"
    assert "unknown field" in exc.message
    assert "prompt_template" in exc.message and "scorers" in exc.message


@pytest.mark.parametrize(
    ("task_config", "field_suffix"),
    [
        ({"prompt_template": ["not", "a", "string"]}, "task_config.prompt_template"),
        ({"scorers": "exact"}, "task_config.scorers"),
        ({"scorers": []}, "task_config.scorers"),
        ({"scorers": ["levenshtein"]}, "task_config.scorers"),
        ({"scorers": [{"name": "regex", "pattern": "("}]}, "task_config.scorers"),
        ({"scorers": [{"name": "regex"}]}, "task_config.scorers"),
        ({"scorers": [{"name": "numeric", "tolerance": "close"}]}, "task_config.scorers"),
        ({"scorers": [{"name": "numeric", "tolerance": -1}]}, "task_config.scorers"),
        ({"prompt_template": "{unclosed"}, "task_config.prompt_template"),
    ],
    ids=["template-type", "scorers-not-list", "no-scorers", "unknown-scorer", "bad-regex", "regex-no-pattern",
         "tolerance-type", "negative-tolerance", "bad-template"],
)
def test_an_ill_typed_task_config_is_an_error(tmp_path, write_run, task_config, field_suffix):
    path = write_run(tmp_path, evaluation({**QA, "task_config": task_config}))
    exc = resolve_error(path)
    assert exc.file == str(path)
    assert exc.field.startswith(f"{FIELD0}.{field_suffix}")


def test_a_task_config_missing_a_required_field_is_an_error(tmp_path, write_run):
    spec = {"key": "c", "task_key": "completeness", "dataset_key": "data"}
    exc = resolve_error(write_run(tmp_path, evaluation(spec)))
    assert exc.field == "evaluation.task_specifications[0:c].task_config.field"
    assert exc.message == "required field is missing"


def test_an_unknown_field_in_a_data_check_config_lists_field(tmp_path, write_run):
    spec = {"key": "c", "task_key": "uniqueness", "dataset_key": "data", "task_config": {"field": "input", "column": "input"}}
    exc = resolve_error(write_run(tmp_path, evaluation(spec)))
    assert exc.field == "evaluation.task_specifications[0:c].task_config.column"
    assert exc.message.endswith("accepted fields: field")


def test_a_task_entity_config_is_a_preset_that_task_config_overrides(tmp_path, write_run):
    tasks = [{"key": "strict-qa", "template": "qa", "config": {"prompt_template": "Q: {input}", "scorers": ["exact"]}}]
    path = write_run(tmp_path, evaluation({**QA, "task_key": "strict-qa", "task_config": {"scorers": ["includes"]}}),
                     tasks=tasks)
    task = resolve(path).evaluation.task_specifications[0].task
    assert (task.key, task.template) == ("strict-qa", "qa")
    assert task.config == {"prompt_template": "Q: {input}", "scorers": [{"name": "includes"}]}


def test_a_task_entity_with_an_unknown_template_is_an_error(tmp_path, write_run):
    path = write_run(tmp_path, evaluation({**QA, "task_key": "mine"}), tasks=[{"key": "mine", "template": "essay"}])
    exc = resolve_error(path)
    assert exc.field == f"{FIELD0}.task_key"
    assert "'essay'" in exc.message


def test_a_task_entity_whose_entrypoint_cannot_be_imported_is_an_error(tmp_path, write_run, monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "no_such_module_anywhere")
    reset_settings()
    path = write_run(tmp_path, evaluation({**QA, "task_key": "mine"}),
                     tasks=[{"key": "mine", "entrypoint": "no_such_module_anywhere:Task"}])
    exc = resolve_error(path)
    assert exc.field == f"{FIELD0}.task_key"
    assert "cannot import" in exc.message


def test_a_task_entrypoint_outside_the_allowed_modules_is_an_error(tmp_path, write_run):
    path = write_run(tmp_path, evaluation({**QA, "task_key": "mine"}),
                     tasks=[{"key": "mine", "entrypoint": "python_models:Task"}])
    exc = resolve_error(path)
    assert exc.field == f"{FIELD0}.task_key"
    assert "EVALFLEET_ALLOWED_MODULES" in exc.message


def test_a_task_entrypoint_that_is_not_a_task_class_is_an_error(tmp_path, write_run, monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_models")
    reset_settings()
    path = write_run(tmp_path, evaluation({**QA, "task_key": "mine"}),
                     tasks=[{"key": "mine", "entrypoint": "python_models:answer_target"}])
    exc = resolve_error(path)
    assert exc.field == f"{FIELD0}.task_key"
    assert "not a subclass" in exc.message


# -- references ----------------------------------------------------------------------------------

def test_an_unknown_task_is_an_error_listing_the_built_in_tasks(tmp_path, write_run):
    exc = resolve_error(write_run(tmp_path, evaluation({**QA, "task_key": "essay"})))
    assert exc.field == f"{FIELD0}.task_key"
    assert "unknown task 'essay'" in exc.message
    for name in ("qa", "multiple-choice", "uniqueness", "completeness"):
        assert name in exc.message


def test_an_unknown_model_is_an_error(tmp_path, write_run):
    exc = resolve_error(write_run(tmp_path, evaluation({**QA, "model_key": "gpt-nope"})))
    assert exc.field == f"{FIELD0}.model_key"
    assert "unknown model 'gpt-nope'" in exc.message


def test_an_unknown_mock_model_is_an_error(tmp_path, write_run):
    exc = resolve_error(write_run(tmp_path, evaluation({**QA, "model_key": "mock$oracle"})))
    assert exc.field == f"{FIELD0}.model_key"
    assert "'oracle'" in exc.message


def test_an_unknown_dataset_is_an_error(tmp_path, write_run):
    exc = resolve_error(write_run(tmp_path, evaluation({**QA, "dataset_key": "elsewhere"})))
    assert exc.field == f"{FIELD0}.dataset_key"
    assert "unknown dataset 'elsewhere'" in exc.message


def test_a_specification_without_a_dataset_is_an_error(tmp_path, write_run):
    spec = {k: v for k, v in QA.items() if k != "dataset_key"}
    assert resolve_error(write_run(tmp_path, evaluation(spec))).field == f"{FIELD0}.dataset_key"


def test_a_task_that_needs_a_model_without_one_is_an_error(tmp_path, write_run):
    spec = {k: v for k, v in QA.items() if k != "model_key"}
    exc = resolve_error(write_run(tmp_path, evaluation(spec)))
    assert exc.field == f"{FIELD0}.model_key"
    assert "needs a model" in exc.message


def test_data_checks_need_no_model(tmp_path, write_run):
    spec = {"task_key": "completeness", "dataset_key": "data", "task_config": {"field": "topic"}}
    resolved = resolve(write_run(tmp_path, evaluation(spec)))
    assert resolved.evaluation.task_specifications[0].model is None


@pytest.mark.parametrize(
    ("model_key", "provider", "name"),
    [("openai$gpt-4.1-nano", "openai", "gpt-4.1-nano"), ("mock$echo", "mock", "echo"),
     ("python$python_models:answer_target", "python", "python_models:answer_target")],
)
def test_a_provider_dollar_name_model_needs_no_registration(tmp_path, write_run, monkeypatch, model_key, provider,
                                                            name):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_models")
    reset_settings()
    model = resolve(write_run(tmp_path, evaluation({**QA, "model_key": model_key}))).evaluation \
        .task_specifications[0].model
    assert (model.key, model.provider, model.name) == (model_key, provider, name)


def test_a_model_entity_carries_its_generation_settings(tmp_path, write_run, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    models = [{"key": "m", "provider": "openai", "name": "gpt-x", "temperature": 0.2, "max_tokens": 64,
               "api_key_env": "MY_KEY"}]
    model = resolve(write_run(tmp_path, evaluation({**QA, "model_key": "m"}), models=models)).evaluation \
        .task_specifications[0].model
    assert (model.provider, model.name, model.api_key_env) == ("openai", "gpt-x", "MY_KEY")
    assert (model.generation.temperature, model.generation.max_tokens) == (0.2, 64)


def test_registered_entities_are_found_by_key(tmp_path, write_run):
    data = tmp_path / "registered.jsonl"
    data.write_text('{"id": "r1", "input": "x", "target": "y"}\n', encoding="utf-8")
    path = write_run(tmp_path, evaluation({**QA, "task_key": "reg-task", "model_key": "reg-model",
                                           "dataset_key": "reg-data"}), datasets=[])
    resolved = resolve(path, ("dataset", DatasetEntity(key="reg-data", path=str(data))),
                       ("model", ModelEntity(key="reg-model", provider="mock", name="echo")),
                       ("task", TaskEntity(key="reg-task", template="qa", config={"scorers": ["exact"]})))
    spec = resolved.evaluation.task_specifications[0]
    assert spec.dataset.path == str(data)
    assert (spec.model.key, spec.model.name) == ("reg-model", "echo")
    assert spec.task.config["scorers"] == [{"name": "exact"}]
    assert resolved.specs[0].selection.total == 1


def test_entities_in_the_file_take_precedence_over_registered_ones(tmp_path, write_run):
    path = write_run(tmp_path, evaluation({**QA, "model_key": "m"}),
                     models=[{"key": "m", "provider": "mock", "name": "target"}])
    model = resolve(path, ("model", ModelEntity(key="m", provider="mock", name="echo"))).evaluation \
        .task_specifications[0].model
    assert model.name == "target"


# -- datasets ------------------------------------------------------------------------------------

def test_a_dataset_path_is_relative_to_the_run_file_not_the_working_directory(tmp_path, write_run, monkeypatch):
    path = write_run(tmp_path / "project", evaluation())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = resolve(Path("..") / "project" / "run.yaml").evaluation.task_specifications[0]
    assert spec.dataset.path == str((tmp_path / "project" / "data.jsonl").resolve())
    assert resolve(path).evaluation.source_file == str(path.resolve())


def test_a_missing_dataset_file_is_an_error_naming_the_dataset_path_field(tmp_path, write_run):
    path = write_run(tmp_path, evaluation(), datasets=[{"key": "data", "path": "nowhere.jsonl"}])
    exc = resolve_error(path)
    assert exc.file == str(path)
    assert exc.field == "datasets[0:data].path"
    assert "not found" in exc.message


def test_an_unknown_dataset_format_is_an_error(tmp_path, write_run):
    (tmp_path / "data.txt").write_text("hello\n", encoding="utf-8")
    exc = resolve_error(write_run(tmp_path, evaluation(), datasets=[{"key": "data", "path": "data.txt"}]))
    assert exc.field == "datasets[0:data].path"
    assert ".txt" in exc.message


def test_a_registered_dataset_whose_file_is_gone_is_an_error(tmp_path, write_run):
    path = write_run(tmp_path, evaluation({**QA, "dataset_key": "gone"}), datasets=[])
    exc = resolve_error(path, ("dataset", DatasetEntity(key="gone", path=str(tmp_path / "gone.jsonl"))))
    assert exc.file == str(tmp_path / "gone.jsonl")
    assert "not found" in exc.message


def test_a_row_without_a_target_is_an_error_for_a_task_that_scores_against_it(tmp_path, write_run):
    rows = [{"id": "a", "input": "x", "target": "y"}, {"id": "b", "input": "x"}]
    exc = resolve_error(write_run(tmp_path, evaluation(), rows=rows))
    assert exc.field == "row 1: target"


def test_a_row_without_a_target_is_fine_for_a_data_check(tmp_path, write_run):
    rows = [{"id": "a", "input": "x"}, {"id": "b", "input": "y"}]
    spec = {"task_key": "uniqueness", "dataset_key": "data", "task_config": {"field": "input"}}
    assert resolve(write_run(tmp_path, evaluation(spec), rows=rows)).specs[0].selection.total == 2


# -- sample counts -------------------------------------------------------------------------------

def test_specification_num_samples_and_subsampling_override_the_evaluations(tmp_path, write_run):
    rows = [{"id": f"r{i}", "input": str(i), "target": str(i)} for i in range(30)]
    specs = [{**QA, "key": "inherits"}, {**QA, "key": "overrides", "num_samples": 7, "subsampling": "random"}]
    resolved = resolve(write_run(tmp_path, evaluation(*specs, num_samples=4, subsampling="head"), rows=rows))
    inherits, overrides = resolved.evaluation.task_specifications
    assert (inherits.num_samples, inherits.subsampling) == (4, "head")
    assert (overrides.num_samples, overrides.subsampling) == (7, "random")
    assert [s.selection.total for s in resolved.specs] == [4, 7]
    assert resolved.specs[0].selection.positions is None
    assert resolved.specs[1].selection.positions is not None


def test_a_specification_key_defaults_to_its_derived_key(tmp_path, write_run):
    spec = {k: v for k, v in QA.items() if k != "key"}
    resolved = resolve(write_run(tmp_path, evaluation(spec))).evaluation.task_specifications[0]
    assert resolved.key == "qa__mock-target__data"
    assert resolved.display_name == "qa__mock-target__data"


def test_mode_debug_selects_ten_samples(tmp_path, write_run):
    rows = [{"id": f"r{i}", "input": str(i), "target": str(i)} for i in range(25)]
    with pytest.warns(DeprecationWarning):
        resolved = resolve(write_run(tmp_path, evaluation(mode="debug"), rows=rows))
    assert resolved.specs[0].selection.total == 10


def test_an_unset_api_key_variable_is_refused_before_submission_in_embedded_mode(tmp_path, write_run, monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    models = [{"key": "m", "provider": "openai", "name": "gpt-x", "api_key_env": "NOT_SET_KEY"}]
    with pytest.raises(SpecError) as info:
        resolve(write_run(tmp_path, evaluation({**QA, "model_key": "m"}), models=models))
    assert info.value.field == "models[0:m].api_key_env"
    assert "NOT_SET_KEY" in info.value.message


def test_an_unset_api_key_variable_is_a_warning_in_cluster_mode(tmp_path, write_run, monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    monkeypatch.setenv("EVALFLEET_BROKER_URL", "redis://127.0.0.1:1/0")
    reset_settings()
    models = [{"key": "m", "provider": "openai", "name": "gpt-x", "api_key_env": "NOT_SET_KEY"}]
    with pytest.warns(UserWarning, match="NOT_SET_KEY"):
        resolved = resolve(write_run(tmp_path, evaluation({**QA, "model_key": "m"}), models=models))
    assert resolved.evaluation.task_specifications[0].model.api_key_env == "NOT_SET_KEY"


@pytest.mark.parametrize(("num_samples", "subsampling"), [(None, "head"), (2, "head"), (4, "random")])
def test_a_prompt_template_naming_a_field_the_selected_samples_lack_is_refused(tmp_path, write_run, num_samples,
                                                                             subsampling):
    rows = [{"id": f"s{i}", "input": f"q{i}", "target": "t", "topic": "x"} for i in range(4)]
    rows[1].pop("topic")
    spec = {**QA, "task_config": {"prompt_template": "{topic}: {input}"}, "num_samples": num_samples,
            "subsampling": subsampling}
    with pytest.raises(SpecError) as info:
        resolve(write_run(tmp_path, evaluation({k: v for k, v in spec.items() if v is not None}), rows=rows))
    assert info.value.file == str(tmp_path / "run.yaml")
    assert info.value.field.endswith("task_config.prompt_template")
    assert "{topic}" in info.value.message and "row 1" in info.value.message
    assert "id, input, target" in info.value.message


def test_a_prompt_template_field_only_unselected_samples_lack_is_accepted(tmp_path, write_run):
    rows = [{"id": f"s{i}", "input": f"q{i}", "target": "t", "topic": "x"} for i in range(4)]
    rows[3].pop("topic")
    spec = {**QA, "task_config": {"prompt_template": "{topic}: {input}"}, "num_samples": 2}
    resolve(write_run(tmp_path, evaluation(spec), rows=rows))


def test_a_prompt_template_naming_the_input_column_says_to_write_input(tmp_path, write_run, write_dataset_file):
    rows = [{"id": "a", "question": "q", "target": "t"}]
    datasets = [{"key": "data", "path": "data.jsonl", "input_field": "question"}]
    write_dataset_file(tmp_path / "data.jsonl", rows)
    spec = {**QA, "task_config": {"prompt_template": "Q: {question}"}}
    with pytest.raises(SpecError) as info:
        resolve(write_run(tmp_path, evaluation(spec), datasets=datasets))
    assert "write {input}" in info.value.message
