"""Built-in tasks (workers/tasks/): qa, multiple-choice, uniqueness and completeness, each on its
own; the whole path through a worker is in tests/e2e."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.plan import ResolvedDataset
from shared.samples import Sample
from workers.tasks import BUILTIN_TASKS

DATASET = ResolvedDataset(key="d", path="/nowhere/d.jsonl")


def task(name, **config):
    cls = BUILTIN_TASKS[name]
    return cls(cls.validate_config(config), DATASET)


def sample(**fields):
    fields.setdefault("id", "s1")
    return Sample(**fields)


# -- qa ------------------------------------------------------------------------------------------

def test_qa_prompt_template_renders_the_samples_fields():
    qa = task("qa", prompt_template="[{id}] {input} ({region}; {n}) -> {target}")
    rendered = qa.prompt(sample(input="France", target="Paris", metadata={"region": "Europe", "n": 3}))
    assert rendered == "[s1] France (Europe; 3) -> Paris"


def test_qa_default_prompt_is_the_input():
    assert task("qa").prompt(sample(input="What is 2+2?", target="4")) == "What is 2+2?"


def test_qa_prompt_template_referring_to_a_missing_field_fails_the_sample():
    with pytest.raises(ValueError, match=r"\{country\}"):
        task("qa", prompt_template="Capital of {country}?").prompt(sample(input="x", target="y"))


def test_qa_scores_with_includes_by_default():
    qa = task("qa")
    assert qa.metrics() == {"includes": ("accuracy", "stderr")}
    assert qa.score(sample(input="q", target="Paris"), "It is paris.")["includes"].value == 1.0


def test_qa_runs_every_scorer_and_labels_repeated_scorer_names():
    qa = task("qa", scorers=["exact", {"name": "regex", "pattern": r"(\d+)"},
                             {"name": "regex", "pattern": r"(\d+)\D*$"}, "numeric"])
    assert list(qa.metrics()) == ["exact", "regex", "regex-2", "numeric"]
    scores = qa.score(sample(input="q", target="12"), "first 3, finally 12")
    assert list(scores) == ["exact", "regex", "regex-2", "numeric"]
    assert {label: s.value for label, s in scores.items()} == {"exact": 0.0, "regex": 0.0, "regex-2": 1.0,
                                                               "numeric": 1.0}
    assert (scores["regex"].answer, scores["regex-2"].answer) == ("3", "12")


def test_qa_scores_a_missing_output_as_wrong():
    assert task("qa", scorers=["exact"]).score(sample(input="q", target="x"), None)["exact"].value == 0.0


def test_qa_config_survives_its_own_serialisation():
    qa = task("qa", scorers=[{"name": "regex", "pattern": "a(b)"}, {"name": "numeric", "tolerance": 2}])
    again = BUILTIN_TASKS["qa"].validate_config(qa.config.model_dump(mode="json"))
    assert again.model_dump() == qa.config.model_dump()


def test_qa_needs_a_model_an_input_and_a_target():
    qa = task("qa")
    assert (qa.needs_model, qa.needs_input, qa.needs_target) == (True, True, True)


# -- multiple-choice -----------------------------------------------------------------------------

CHOICES = ["Paris", "Tokyo", "Lima", "Oslo"]


@pytest.mark.parametrize("target", ["B", "b", "1", "Tokyo", "tokyo"], ids=["letter", "lowercase-letter", "index",
                                                                        "text", "text-any-case"])
def test_multiple_choice_target_may_be_a_letter_an_index_or_the_choice_text(target):
    mc = task("multiple-choice")
    correct = mc.score(sample(input="Capital of Japan?", target=target, metadata={"choices": CHOICES}), "B")
    assert (correct["choice"].value, correct["choice"].answer) == (1.0, "B")
    wrong = mc.score(sample(input="Capital of Japan?", target=target, metadata={"choices": CHOICES}), "C")
    assert wrong["choice"].value == 0.0


@pytest.mark.parametrize("choices", [CHOICES, '["Paris", "Tokyo", "Lima", "Oslo"]'], ids=["list", "json-string"])
def test_multiple_choice_choices_may_be_a_list_or_a_json_string(choices):
    mc = task("multiple-choice")
    s = sample(input="Capital of Japan?", target="Tokyo", metadata={"choices": choices})
    assert mc.choices(s) == CHOICES
    assert "A) Paris\nB) Tokyo\nC) Lima\nD) Oslo" in mc.prompt(s)
    assert "Capital of Japan?" in mc.prompt(s)
    assert mc.score(s, "The answer is B")["choice"].value == 1.0


@pytest.mark.parametrize(("output", "answer"), [("B", "B"), ("Answer: C", "C"), ("the answer is (D)", "D"),
                                                ("I think A.", "A"), ("Z", None), ("", None)])
def test_multiple_choice_reads_the_first_letter_among_the_choices(output, answer):
    s = sample(input="q", target="A", metadata={"choices": CHOICES})
    result = task("multiple-choice").score(s, output)["choice"]
    assert result.answer == answer
    assert result.value == float(answer == "A")


def test_multiple_choice_choices_field_is_configurable():
    mc = task("multiple-choice", choices_field="options", prompt_template="{input} | {choices} | {topic}")
    s = sample(input="q", target="0", metadata={"options": ["yes", "no"], "topic": "t"})
    assert mc.prompt(s) == "q | A) yes\nB) no | t"
    assert mc.score(s, "A")["choice"].value == 1.0


@pytest.mark.parametrize("choices", [None, [], "not json", '{"a": 1}', list("x" * 27)])
def test_multiple_choice_without_a_usable_list_of_choices_fails_the_sample(choices):
    metadata = {} if choices is None else {"choices": choices}
    with pytest.raises(ValueError, match="choices"):
        task("multiple-choice").score(sample(input="q", target="A", metadata=metadata), "A")


def test_multiple_choice_target_outside_the_choices_fails_the_sample():
    with pytest.raises(ValueError, match="'Rome'"):
        task("multiple-choice").score(sample(input="q", target="Rome", metadata={"choices": CHOICES}), "A")


def test_multiple_choice_letter_target_beyond_the_choices_fails_the_sample():
    with pytest.raises(ValueError):
        task("multiple-choice").score(sample(input="q", target="E", metadata={"choices": CHOICES}), "E")


# -- completeness --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"region": "Europe"}, 1.0), ({"region": ""}, 0.0), ({"region": "   "}, 0.0), ({"region": "\t\n"}, 0.0),
     ({}, 0.0), ({"region": None}, 0.0), ({"region": []}, 0.0), ({"region": {}}, 0.0), ({"region": 0}, 1.0),
     ({"region": ["x"]}, 1.0), ({"region": False}, 1.0)],
    ids=["present", "empty", "blank", "whitespace", "missing", "null", "empty-list", "empty-dict", "zero",
         "list", "false"],
)
def test_completeness_is_one_for_a_present_non_blank_value(metadata, expected):
    scores = task("completeness", field="region").score(sample(input="x", metadata=metadata), None)
    assert scores["completeness"].value == expected


def test_completeness_can_check_the_input_and_target_fields():
    check_input = task("completeness", field="input")
    check_target = task("completeness", field="target")
    s = sample(input="question", target="  ")
    assert check_input.score(s, None)["completeness"].value == 1.0
    assert check_target.score(s, None)["completeness"].value == 0.0


def test_completeness_reports_mean_and_stderr_and_needs_no_model():
    check = task("completeness", field="x")
    assert check.metrics() == {"completeness": ("mean", "stderr")}
    assert (check.needs_model, check.needs_input, check.needs_target) == (False, False, False)


def test_data_checks_need_a_field():
    with pytest.raises(ValidationError):
        BUILTIN_TASKS["completeness"].validate_config({})
    with pytest.raises(ValidationError):
        BUILTIN_TASKS["uniqueness"].validate_config({"field": "x", "other": 1})


# -- uniqueness ----------------------------------------------------------------------------------

def test_uniqueness_groups_samples_by_the_fields_value():
    check = task("uniqueness", field="input")
    same = [check.group_key(sample(id=str(i), input="Paris")) for i in range(2)]
    other = check.group_key(sample(id="3", input="Lima"))
    assert same[0] == same[1] != other
    assert check.scores_population
    assert check.metrics() == {"uniqueness": ("mean", "stderr")}


def test_uniqueness_distinguishes_values_by_type_and_structure():
    check = task("uniqueness", field="v")
    keys = {check.group_key(sample(metadata={"v": v})) for v in ("1", 1, [1], {"a": 1}, None)}
    assert len(keys) == 5


def test_uniqueness_is_decided_by_the_population_not_the_sample():
    check = task("uniqueness", field="input")
    provisional = check.score(sample(input="Paris"), None)
    assert provisional["uniqueness"].value is None
    assert check.score_in_population(provisional, duplicated=False)["uniqueness"].value == 1.0
    duplicated = check.score_in_population(provisional, duplicated=True)["uniqueness"]
    assert duplicated.value == 0.0
    assert duplicated.explanation
