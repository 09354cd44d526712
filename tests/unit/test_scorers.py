"""Built-in scorers (workers/scorers.py): exact, includes, regex and numeric."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.scorers import parse_scorer, run_scorer, scorer_labels


def score(scorer, output, target):
    return run_scorer(parse_scorer(scorer), output, target)


# -- exact ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("output", "target"),
    [("Paris", "Paris"), ("paris", "PARIS"), ("  Paris.  ", "paris"), ("New   York!", "new york"),
     ("'Rio de Janeiro'", "Rio de Janeiro"), ("Paris\n", "Paris")],
)
def test_exact_ignores_case_punctuation_and_extra_whitespace(output, target):
    assert score("exact", output, target).value == 1.0


@pytest.mark.parametrize(("output", "target"), [("The capital is Paris", "Paris"), ("Pari", "Paris"),
                                                ("NewYork", "New York"), ("", "Paris")])
def test_exact_needs_the_whole_answer(output, target):
    assert score("exact", output, target).value == 0.0


def test_exact_reports_the_normalised_answer():
    assert score("exact", "  Hello,   World! ", "x").answer == "hello world"


# -- includes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["Paris", "The capital is PARIS.", "i think paris, france"])
def test_includes_finds_the_target_anywhere_ignoring_case(output):
    assert score("includes", output, "Paris").value == 1.0


@pytest.mark.parametrize("output", ["Lyon", "Par is", ""])
def test_includes_fails_without_the_target(output):
    assert score("includes", output, "Paris").value == 0.0


# -- regex ---------------------------------------------------------------------------------------

def test_regex_compares_the_first_group_with_the_target():
    result = score({"name": "regex", "pattern": r"ANSWER:\s*(\w+)"}, "Thinking... ANSWER: Paris", "paris")
    assert (result.value, result.answer) == (1.0, "Paris")


def test_regex_without_a_group_compares_the_whole_match():
    result = score({"name": "regex", "pattern": r"\d+"}, "there are 42 of them", "42")
    assert (result.value, result.answer) == (1.0, "42")


def test_regex_uses_the_first_match():
    result = score({"name": "regex", "pattern": r"\d+"}, "7 then 42", "42")
    assert (result.value, result.answer) == (0.0, "7")


def test_regex_normalises_the_extracted_answer():
    assert score({"name": "regex", "pattern": r"is (.*)$"}, "the answer is  New York.", "new york").value == 1.0


def test_regex_without_a_match_scores_zero_and_says_so():
    result = score({"name": "regex", "pattern": r"ANSWER: (\w+)"}, "no idea", "x")
    assert (result.value, result.answer) == (0.0, None)
    assert "did not match" in result.explanation


def test_regex_whose_group_did_not_participate_scores_zero():
    result = score({"name": "regex", "pattern": r"(?:ANSWER: (\w+))?\."}, "no answer.", "x")
    assert result.value == 0.0


def test_regex_needs_a_valid_pattern():
    with pytest.raises(ValidationError, match="invalid regular expression"):
        parse_scorer({"name": "regex", "pattern": "(unclosed"})
    with pytest.raises(ValidationError):
        parse_scorer("regex")


# -- numeric -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("output", "target"),
    [("42", "42"), ("The answer is 42.", "42"), ("3 apples and then 5", "5"), ("It is 1,234", "1234"),
     ("1234", "1,234"), ("total: 1,234,567.5", "1234567.5"), ("-3", "-3"), ("42.0", "42"), ("1e3", "1000"),
     ("about .5", "0.5")],
)
def test_numeric_compares_the_last_number_in_the_output(output, target):
    assert score("numeric", output, target).value == 1.0


def test_numeric_reports_the_last_number_as_written():
    assert score("numeric", "from 10 to 1,250 units", "1250").answer == "1,250"


def test_numeric_takes_the_last_number_not_the_first():
    assert score("numeric", "5 is wrong, it is 7", "5").value == 0.0


def test_numeric_is_exact_without_a_tolerance():
    assert score("numeric", "3.14", "3.1416").value == 0.0


@pytest.mark.parametrize(("output", "expected"), [("3.14", 1.0), ("3.15", 1.0), ("3.16", 0.0), ("3.12", 0.0)])
def test_numeric_accepts_differences_up_to_the_tolerance(output, expected):
    assert score({"name": "numeric", "tolerance": 0.01}, output, "3.145").value == expected


def test_numeric_without_a_number_scores_zero():
    result = score("numeric", "I don't know", "4")
    assert (result.value, result.answer) == (0.0, None)


def test_numeric_with_a_target_that_is_not_a_number_scores_zero_and_says_so():
    result = score("numeric", "4", "four")
    assert result.value == 0.0
    assert "not a number" in result.explanation


def test_numeric_tolerance_may_not_be_negative():
    with pytest.raises(ValidationError):
        parse_scorer({"name": "numeric", "tolerance": -0.1})


# -- scorer lists --------------------------------------------------------------------------------

def test_an_unknown_scorer_is_an_error_listing_the_built_in_ones():
    with pytest.raises(ValueError, match="exact, includes, regex, numeric"):
        parse_scorer("bleu")


def test_an_unknown_scorer_option_is_an_error():
    with pytest.raises(ValidationError):
        parse_scorer({"name": "exact", "ignore_case": True})


def test_scorer_labels_number_repeated_names():
    scorers = [parse_scorer(s) for s in ["exact", {"name": "regex", "pattern": "a"}, {"name": "regex", "pattern": "b"},
                                         "includes", {"name": "regex", "pattern": "c"}]]
    assert scorer_labels(scorers) == ["exact", "regex", "regex-2", "includes", "regex-3"]
