"""Cache identity (shared/cache_identity.py): what makes two model outputs interchangeable.

Every part that can change the model's output changes the inference key (and so the score key);
what cannot (the model's key, credentials, timeouts, connection limits, price) changes neither;
the scorer config changes the score key only. Canonical hashing ignores dict key order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

import shared.cache_identity as cache_identity
from shared.cache_identity import canonical_hash, inference_key, model_identity, score_key, task_identity
from shared.plan import ResolvedModel, ResolvedTask
from shared.samples import Sample
from shared.spec import GenerationSettings, Pricing
from workers.tasks.qa import QATask

SCORER_FIELDS = QATask.scorer_config_fields

BASE_MODEL = ResolvedModel(
    key="gpt", provider="openai", name="gpt-test", base_url="http://models.example/v1", api_key_env="TEST_KEY",
    generation=GenerationSettings(temperature=0.0, max_tokens=64, top_p=0.9, seed=7, stop=["\n"]),
    max_connections=8, timeout=30.0, max_attempts=3, retry_timeout=60.0,
    pricing=Pricing(input_per_million=1.0, output_per_million=2.0),
)
BASE_TASK = ResolvedTask(key="capitals", template="qa",
                         config={"prompt_template": "Q: {input}", "scorers": [{"name": "includes"}]})
BASE_SAMPLE = Sample(id="s1", input="France", target="Paris", metadata={"region": "Europe", "rank": 1})
BASE_PROMPT = "Q: France"


def keys(model: ResolvedModel = BASE_MODEL, task: ResolvedTask = BASE_TASK, prompt: str = BASE_PROMPT,
         sample: Sample = BASE_SAMPLE, epoch: int = 0) -> tuple[str, str]:
    """(inference key, score key) as a worker computes them for one sample."""
    task_part, scorer_part = task_identity(task, SCORER_FIELDS)
    ikey = inference_key(model_identity(model), task_part, prompt, sample, epoch)
    return ikey, score_key(ikey, scorer_part)


def model(**changes: Any) -> ResolvedModel:
    return BASE_MODEL.model_copy(update=changes)


def generation(**changes: Any) -> ResolvedModel:
    return model(generation=BASE_MODEL.generation.model_copy(update=changes))


def task(**changes: Any) -> ResolvedTask:
    return BASE_TASK.model_copy(update=changes)


def config(**changes: Any) -> ResolvedTask:
    return task(config={**BASE_TASK.config, **changes})


def sample(**changes: Any) -> Sample:
    return BASE_SAMPLE.model_copy(update=changes)


INFERENCE_CHANGES: dict[str, dict[str, Any]] = {
    "model provider": {"model": model(provider="mock")},
    "model name": {"model": model(name="gpt-test-2")},
    "model base_url": {"model": model(base_url="http://other.example/v1")},
    "model base_url unset": {"model": model(base_url=None)},
    "generation temperature": {"model": generation(temperature=0.7)},
    "generation max_tokens": {"model": generation(max_tokens=65)},
    "generation top_p": {"model": generation(top_p=0.5)},
    "generation seed": {"model": generation(seed=8)},
    "generation stop": {"model": generation(stop=["END"])},
    "generation setting unset": {"model": generation(seed=None)},
    "task template": {"task": task(template="multiple-choice")},
    "task entrypoint": {"task": task(template=None, entrypoint="my_tasks:CapitalsTask")},
    "task prompt_template": {"task": config(prompt_template="Question: {input}")},
    "task other non-scorer config": {"task": config(choices_field="options")},
    "prompt": {"prompt": "Q: France?"},
    "sample id": {"sample": sample(id="s2")},
    "sample input": {"sample": sample(input="Spain")},
    "sample target": {"sample": sample(target="Lyon")},
    "sample target unset": {"sample": sample(target=None)},
    "sample metadata value": {"sample": sample(metadata={"region": "Asia", "rank": 1})},
    "sample metadata key added": {"sample": sample(metadata={"region": "Europe", "rank": 1, "extra": None})},
    "sample metadata value type": {"sample": sample(metadata={"region": "Europe", "rank": "1"})},
    "epoch": {"epoch": 1},
}


@pytest.mark.parametrize("change", list(INFERENCE_CHANGES))
def test_each_part_of_the_inference_identity_changes_both_keys(change: str) -> None:
    base_inference, base_score = keys()
    inference, score = keys(**INFERENCE_CHANGES[change])
    assert inference != base_inference, f"changing the {change} must change the inference key"
    assert score != base_score, f"changing the {change} must change the score key"


NEUTRAL_CHANGES: dict[str, dict[str, Any]] = {
    "model key": {"model": model(key="renamed")},
    "api_key_env": {"model": model(api_key_env="OTHER_KEY")},
    "api_key_env unset": {"model": model(api_key_env=None)},
    "timeout": {"model": model(timeout=5.0)},
    "max_connections": {"model": model(max_connections=1)},
    "max_attempts": {"model": model(max_attempts=1)},
    "retry_timeout": {"model": model(retry_timeout=1.0)},
    "pricing": {"model": model(pricing=Pricing(input_per_million=9.0, output_per_million=9.0))},
    "pricing unset": {"model": model(pricing=None)},
    "base_url trailing slash": {"model": model(base_url="http://models.example/v1/")},
    "task key": {"task": task(key="renamed-task")},
}
if "requests_per_minute" in ResolvedModel.model_fields:  # newer schema: limits and routing
    NEUTRAL_CHANGES["requests_per_minute"] = {"model": model(requests_per_minute=10)}
if "queue" in ResolvedModel.model_fields:
    NEUTRAL_CHANGES["queue"] = {"model": model(queue="slow-models")}


@pytest.mark.parametrize("change", list(NEUTRAL_CHANGES))
def test_parts_that_cannot_change_the_output_change_no_key(change: str) -> None:
    assert keys(**NEUTRAL_CHANGES[change]) == keys()


def test_the_same_inputs_give_the_same_keys() -> None:
    rebuilt_model = ResolvedModel.model_validate_json(BASE_MODEL.model_dump_json())
    rebuilt_task = ResolvedTask.model_validate(json.loads(BASE_TASK.model_dump_json()))
    rebuilt_sample = Sample(id="s1", input="France", target="Paris", metadata={"region": "Europe", "rank": 1})
    first = keys()
    assert keys(rebuilt_model, rebuilt_task, "Q: " + "France", rebuilt_sample) == first
    assert keys() == first
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in first)  # SHA-256, hex
    assert first[0] != first[1]


@pytest.mark.parametrize("scorers", [
    [{"name": "includes"}, {"name": "exact"}],
    [{"name": "exact"}],
    [{"name": "regex", "pattern": r"(\w+)$"}],
])
def test_the_scorer_config_changes_the_score_key_only(scorers: list[dict[str, Any]]) -> None:
    base_inference, base_score = keys()
    inference, score = keys(task=config(scorers=scorers))
    assert inference == base_inference
    assert score != base_score


def test_a_changed_regex_pattern_changes_the_score_key_only() -> None:
    first = keys(task=config(scorers=[{"name": "regex", "pattern": r"Q: (\w+)"}]))
    second = keys(task=config(scorers=[{"name": "regex", "pattern": r"^(\w+)"}]))
    assert first[0] == second[0]
    assert first[1] != second[1]


def test_task_identity_splits_scorer_config_from_the_rest() -> None:
    inference_part, scorer_part = task_identity(BASE_TASK, SCORER_FIELDS)
    assert inference_part == {"template": "qa", "entrypoint": None, "config": {"prompt_template": "Q: {input}"}}
    assert scorer_part == {"template": "qa", "entrypoint": None, "config": {"scorers": [{"name": "includes"}]}}


def test_identity_version_is_part_of_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys()
    monkeypatch.setattr(cache_identity, "IDENTITY_VERSION", cache_identity.IDENTITY_VERSION + 1)
    after = keys()
    assert after[0] != before[0] and after[1] != before[1]


# -- canonical hashing -----------------------------------------------------------------------------


def test_canonical_hash_ignores_dict_key_order_at_every_depth() -> None:
    one = {"a": 1, "b": {"x": [1, {"p": True, "q": None}], "y": "é"}, "c": 2.5}
    two = {"c": 2.5, "b": {"y": "é", "x": [1, {"q": None, "p": True}]}, "a": 1}
    assert list(one) != list(two)
    assert canonical_hash(one) == canonical_hash(two)


def test_canonical_hash_is_sha256_of_compact_sorted_utf8_json() -> None:
    value = {"b": ["ü", 1], "a": {"d": None, "c": 0.5}}
    expected = hashlib.sha256('{"a":{"c":0.5,"d":null},"b":["ü",1]}'.encode()).hexdigest()
    assert canonical_hash(value) == expected


def test_canonical_hash_keeps_list_order_and_value_types() -> None:
    assert canonical_hash([1, 2]) != canonical_hash([2, 1])
    assert canonical_hash({"a": 1}) != canonical_hash({"a": "1"})
    assert canonical_hash({"a": None}) != canonical_hash({})


def test_canonical_hash_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError):
        canonical_hash({"a": float("nan")})


def test_key_order_of_metadata_and_task_config_does_not_matter() -> None:
    reordered_sample = Sample(id="s1", input="France", target="Paris", metadata={"rank": 1, "region": "Europe"})
    reordered_task = task(config={"scorers": [{"name": "includes"}], "prompt_template": "Q: {input}"})
    assert list(reordered_sample.metadata) != list(BASE_SAMPLE.metadata)
    assert list(reordered_task.config) != list(BASE_TASK.config)
    assert keys(task=reordered_task, sample=reordered_sample) == keys()
    reordered_model = model(generation=GenerationSettings.model_validate(
        {"stop": ["\n"], "seed": 7, "top_p": 0.9, "max_tokens": 64, "temperature": 0.0}))
    assert keys(model=reordered_model) == keys()


@pytest.mark.parametrize("prompt", ["Q: Frañce", [{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "Q: France"}]])
def test_inference_keys_are_the_canonical_hash_of_the_documented_document(prompt: Any) -> None:
    # Keys are built from parts encoded once per task specification; they must stay equal to the
    # documented canonical hash, or every result stored so far would be missed.
    from shared.samples import ChatMessage

    sent = prompt if isinstance(prompt, str) else [ChatMessage.model_validate(m) for m in prompt]
    model_part = model_identity(model())
    task_part, _ = task_identity(BASE_TASK, QATask.scorer_config_fields)
    document = {"v": cache_identity.IDENTITY_VERSION, "model": model_part, "task": task_part,
                "prompt": prompt, "sample": BASE_SAMPLE.model_dump(mode="json"), "epoch": 3}
    assert inference_key(model_part, task_part, sent, BASE_SAMPLE, 3) == canonical_hash(document)
    identity = cache_identity.InferenceIdentity(model_part, task_part)
    assert identity.key(sent, BASE_SAMPLE, 3) == canonical_hash(document)


@pytest.mark.parametrize("scorer", [{}, {"template": "qa", "entrypoint": None, "config": {"scorers": [
    {"name": "model_graded_qa", "template": "Grädé {answer}\n", "partial_credit": True}]}}])
def test_score_keys_are_the_canonical_hash_of_the_documented_document(scorer: dict[str, Any]) -> None:
    # Encoded once per task specification (ScoreIdentity), equal to the documented hash.
    ikey = canonical_hash({"any": "inference"})
    document = {"v": cache_identity.IDENTITY_VERSION, "inference": ikey, "scorer": scorer}
    assert cache_identity.ScoreIdentity(scorer).key(ikey) == score_key(ikey, scorer) == canonical_hash(document)
