"""Scorers of model output against a sample's target. Each reports accuracy and its standard error.

Built in: `exact`, `includes`, `regex`, `numeric`, and the model-graded `model_graded_qa` and
`model_graded_fact` (workers.judges). A user scorer is `{name: label, entrypoint:
"package.module:function", options: {...}}`: a function `(output: str, sample: Sample, options:
dict) -> Score | float | bool`, plain or `async`, imported only from EVALFLEET_ALLOWED_MODULES.
To add a built-in one: a function `(output, target, options) -> Score`, an options model, and
both listed in `SCORERS`."""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.log import Score

if TYPE_CHECKING:
    from shared.samples import Sample
    from workers.judges import Judges

ACCURACY_METRICS = ("accuracy", "stderr")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class ScorerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class ExactOptions(ScorerOptions):
    pass


class IncludesOptions(ScorerOptions):
    pass


class RegexOptions(ScorerOptions):
    pattern: str = Field(description="Extracts the answer: its first group, or the whole match.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern


class NumericOptions(ScorerOptions):
    tolerance: float = Field(0.0, ge=0, description="Largest absolute difference counted correct.")


def normalise(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def score_exact(output: str, target: str, options: ExactOptions) -> Score:
    """The output equals the target, case, punctuation and whitespace folded."""
    answer = normalise(output)
    return Score(value=float(answer == normalise(target)), answer=answer)


def score_includes(output: str, target: str, options: IncludesOptions) -> Score:
    """The target appears in the output (case-insensitive)."""
    return Score(value=float(target.lower() in output.lower()), answer=output)


def score_regex(output: str, target: str, options: RegexOptions) -> Score:
    """The pattern's first group (or whole match) in the output equals the target, normalised."""
    match = re.search(options.pattern, output)
    if match is None:
        return Score(value=0.0, answer=None, explanation="pattern did not match")
    answer = match.group(1) if match.groups() else match.group(0)
    if answer is None:
        return Score(value=0.0, answer=None, explanation="the pattern's group did not take part in the match")
    return Score(value=float(normalise(answer) == normalise(target)), answer=answer)


def parse_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def score_numeric(output: str, target: str, options: NumericOptions) -> Score:
    """The last number in the output equals the target, within `tolerance`."""
    expected = parse_number(target.strip())
    if expected is None:
        return Score(value=0.0, answer=None, explanation=f"target {target!r} is not a number")
    found = _NUMBER.findall(output)
    answer = parse_number(found[-1]) if found else None
    if answer is None:
        return Score(value=0.0, answer=None, explanation="no number in the output")
    correct = math.isclose(answer, expected, rel_tol=0, abs_tol=options.tolerance)
    return Score(value=float(correct), answer=found[-1])


SCORERS: dict[str, tuple[type[ScorerOptions], Callable[[str, str, Any], Score]]] = {
    "exact": (ExactOptions, score_exact),
    "includes": (IncludesOptions, score_includes),
    "regex": (RegexOptions, score_regex),
    "numeric": (NumericOptions, score_numeric),
}


class UserScorerOptions(ScorerOptions):
    entrypoint: str = Field(description="package.module:function, in EVALFLEET_ALLOWED_MODULES.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the function as they are.")

    @field_validator("entrypoint")
    @classmethod
    def _importable(cls, entrypoint: str) -> str:
        from shared.entrypoints import load_entrypoint
        from shared.errors import SpecError

        try:
            function = load_entrypoint(entrypoint)
        except SpecError as exc:
            raise ValueError(exc.message) from None
        if not callable(function):
            raise ValueError(f"{entrypoint!r} is not a function")
        return entrypoint


def parse_scorer(item: str | dict[str, Any]) -> ScorerOptions:
    """A scorer list item: a name, or a mapping of `name` and that scorer's options (with
    `entrypoint`: a user scorer)."""
    from workers.judges import JudgeOptions

    data = {"name": item} if isinstance(item, str) else dict(item)
    name = data.get("name")
    if "entrypoint" in data:
        return UserScorerOptions.model_validate(data)
    if name in ("model_graded_qa", "model_graded_fact"):
        return JudgeOptions.model_validate(data)
    if name not in SCORERS:
        from shared.spec import did_you_mean

        known = [*SCORERS, "model_graded_qa", "model_graded_fact"]
        raise ValueError(f"unknown scorer {name!r}{did_you_mean(str(name), known)}; built-in scorers: "
                         f"{', '.join(known)}; or give an `entrypoint` (package.module:function)")
    return SCORERS[name][0].model_validate(data)


def scorer_labels(scorers: list[ScorerOptions]) -> list[str]:
    """Result keys: the scorer name, suffixed -2, -3... when a name is used more than once."""
    counts: dict[str, int] = {}
    labels = []
    for scorer in scorers:
        counts[scorer.name] = counts.get(scorer.name, 0) + 1
        labels.append(scorer.name if counts[scorer.name] == 1 else f"{scorer.name}-{counts[scorer.name]}")
    return labels


def run_scorer(options: ScorerOptions, output: str, target: str, sample: Sample | None = None,
               judges: Judges | None = None) -> Score:
    from workers.judges import JudgeError, JudgeOptions

    if isinstance(options, UserScorerOptions):
        return _user_score(options, output, sample)
    if isinstance(options, JudgeOptions):
        if judges is None or sample is None:
            raise JudgeError(f"scorer {options.name} needs a judge model, which this task does not provide")
        return judges.ask(options, sample, output)
    return SCORERS[options.name][1](output, target, options)


def _user_score(options: UserScorerOptions, output: str, sample: Sample | None) -> Score:
    from shared.entrypoints import load_entrypoint

    function = load_entrypoint(options.entrypoint)
    result = function(output, sample, options.options)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    if isinstance(result, Score):
        return result
    if isinstance(result, bool | int | float):
        return Score(value=float(result), answer=output)
    raise TypeError(f"scorer {options.entrypoint} returned {type(result).__name__}; expected a Score, a number "
                    "or a bool")


async def _awaited(awaitable: Any) -> Any:  # noqa: ANN401 - whatever the user's coroutine returns
    return await awaitable
