"""Model-graded scorers and user scorers, in process: grades read from the judge's reply (the
last `GRADE: X`, partial credit, a custom pattern, a reply without a grade), templates checked
when the run file is read, the mock grader, and user scorers (plain or async, returning a Score,
a number or a bool) imported only from allowed modules."""

from __future__ import annotations

import pytest

from shared.samples import Sample
from shared.settings import reset_settings
from workers.judges import FACT_TEMPLATE, QA_TEMPLATE, JudgeOptions
from workers.providers.mock import grade
from workers.scorers import parse_scorer, run_scorer

SAMPLE = Sample(id="s1", input="Capital of France?", target="Paris")


def judge(**options) -> JudgeOptions:
    return parse_scorer({"name": "model_graded_qa", **options})


@pytest.mark.parametrize(("reply", "partial_credit", "value", "letter"), [
    ("Looks right.\nGRADE: C", False, 1.0, "C"),
    ("Hmm. GRADE: I", False, 0.0, "I"),
    ("Partly.\nGRADE: P", True, 0.5, "P"),
    ("Partly.\nGRADE: P", False, 0.0, "P"),
    ("First GRADE: I, on reflection GRADE: C", False, 1.0, "C"),
    ("grade : c", False, None, None),  # the pattern is case-sensitive: no grade
])
def test_grades_are_read_from_the_judges_reply(reply, partial_credit, value, letter):
    score = judge(partial_credit=partial_credit).grade(reply)
    assert (score.value, score.answer) == (value, letter)
    assert reply in score.explanation


def test_a_reply_without_a_grade_is_a_score_without_a_value_explained():
    score = judge().grade("I refuse to grade this.")
    assert score.value is None and score.answer is None
    assert score.explanation.startswith("no grade in the judge's reply") and "I refuse" in score.explanation


def test_a_custom_grade_pattern_reads_its_first_group():
    options = judge(grade_pattern=r"VERDICT=(\w)")
    assert options.grade("VERDICT=C").value == 1.0
    with pytest.raises(ValueError, match="group"):
        judge(grade_pattern=r"VERDICT=\w")
    with pytest.raises(ValueError, match="regular expression"):
        judge(grade_pattern=r"(unclosed")


def test_templates_take_the_documented_fields_only():
    prompt = judge(template="Q={question} A={answer} C={criterion} T={target} I={instructions}",
                   instructions="be fair").prompt("q?", "a!", "c.")
    assert prompt == "Q=q? A=a! C=c. T=c. I=be fair"
    with pytest.raises(ValueError, match="do not exist"):
        judge(template="{question} {mood}")


def test_default_templates_hold_question_answer_criterion_and_grading_instructions():
    for name, template in (("model_graded_qa", QA_TEMPLATE), ("model_graded_fact", FACT_TEMPLATE)):
        options = parse_scorer({"name": name, "partial_credit": True})
        prompt = options.prompt("What is {x}?", "Paris {y}", "Paris")
        assert "What is {x}?" in prompt and "Paris {y}" in prompt  # braces in samples stay text
        assert "GRADE" in prompt and "C, P or I" in prompt
        assert prompt.startswith(template.split("{", 1)[0])  # the scorer's own template
    assert "C or I" in judge().prompt("q", "a", "c")


def test_the_mock_grader_grades_by_the_target_in_the_answer():
    assert grade("[Submission]: Paris [Criterion]: Paris", "Paris").endswith("GRADE: C")
    assert grade("[Submission]: paris [Criterion]: Paris", "Paris").endswith("GRADE: P")
    assert grade("[Submission]: Rome [Criterion]: Paris", "Paris").endswith("GRADE: I")


@pytest.fixture
def allow_user_scorers(monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_scorers")
    reset_settings()
    yield
    reset_settings()


def test_user_scorers_return_bools_numbers_or_scores_plain_or_async(allow_user_scorers):
    short = parse_scorer({"name": "short", "entrypoint": "python_scorers:length_at_most", "options": {"max": 5}})
    assert run_scorer(short, "Paris", "Paris", SAMPLE).value == 1.0
    assert run_scorer(short, "Paris, France", "Paris", SAMPLE).value == 0.0
    echoed = parse_scorer({"name": "echo", "entrypoint": "python_scorers:echoes_target"})
    score = run_scorer(echoed, "It is Paris", "Paris", SAMPLE)
    assert (score.value, score.explanation) == (1.0, "looked for 'Paris'")
    assert run_scorer(parse_scorer({"name": "h", "entrypoint": "python_scorers:half"}), "x", "", SAMPLE).value == 0.5
    with pytest.raises(TypeError, match="returned str"):
        run_scorer(parse_scorer({"name": "n", "entrypoint": "python_scorers:not_a_score"}), "x", "", SAMPLE)


def test_user_scorers_are_imported_only_from_allowed_modules(monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "")
    reset_settings()
    with pytest.raises(ValueError, match="EVALFLEET_ALLOWED_MODULES"):
        parse_scorer({"name": "short", "entrypoint": "python_scorers:length_at_most"})
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_scorers")
    reset_settings()
    with pytest.raises(ValueError, match="not a function"):
        parse_scorer({"name": "x", "entrypoint": "python_scorers:NOT_CALLABLE"})
    with pytest.raises(ValueError, match="no attribute"):
        parse_scorer({"name": "x", "entrypoint": "python_scorers:missing"})
    reset_settings()
