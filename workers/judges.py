"""Model-graded scorers: a judge model reads the question, the answer and the criterion (the
sample's target) and replies with its reasoning and a grade. `model_graded_qa` asks whether the
answer meets the criterion; `model_graded_fact` whether it holds the facts of an expert answer.

The judge is a model like any other: its provider, retries, cluster-wide `max_connections` and
`requests_per_minute` apply. Its reply is the score's explanation (DigitalOcean's `reasoning`),
its grade the score's answer. Every call is recorded for the sample (`SampleRecord.judges`) so
that tokens and cost include judging. A reply without a grade is a scorer error for that sample
(value null, the reply as explanation), not a failed sample."""

from __future__ import annotations

import re
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from shared.log import JudgeUsage, Score
from shared.samples import Sample
from workers.scorers import ScorerOptions

if TYPE_CHECKING:
    from shared.plan import ResolvedModel, ResolvedTaskSpec

TEMPLATE_FIELDS = frozenset({"question", "answer", "criterion", "target", "instructions"})
DEFAULT_GRADE_PATTERN = r"GRADE\s*:\s*([CPI])"
GRADE_VALUES = {"C": 1.0, "P": 0.5, "I": 0.0}

QA_TEMPLATE = """You are grading a submitted answer to a question against a criterion.

[BEGIN DATA]
***
[Question]: {question}
***
[Submission]: {answer}
***
[Criterion]: {criterion}
***
[END DATA]

Does the submission meet the criterion?

{instructions}"""

FACT_TEMPLATE = """You are comparing a submitted answer with an expert answer to a question.

[BEGIN DATA]
***
[Question]: {question}
***
[Expert]: {criterion}
***
[Submission]: {answer}
***
[END DATA]

Compare the facts in the submission with those of the expert answer; differences of style,
grammar or punctuation do not matter. Does the submission contain the facts of the expert answer?

{instructions}"""


def default_instructions(partial_credit: bool) -> str:
    letters = "C, P or I" if partial_credit else "C or I"
    partial = ', "P" for a partially correct answer' if partial_credit else ""
    return (f"Reason step by step about whether the submission is correct, then end your reply with a line "
            f"'GRADE: X' where X is one of {letters}: \"C\" for a correct answer{partial}, \"I\" for an "
            "incorrect one.")


class JudgeOptions(ScorerOptions):
    name: Literal["model_graded_qa", "model_graded_fact"]
    judge_model: str | None = Field(None, description="A model key or provider$name; default: the "
                                                      "specification's model.")
    template: str | None = Field(None, description="Fields: {question}, {answer}, {criterion} (or {target}), "
                                                   "{instructions}. Default: the scorer's own.")
    instructions: str | None = Field(None, description="Default: reason, then end with 'GRADE: C|I' "
                                                       "(C|P|I with partial_credit).")
    grade_pattern: str = Field(DEFAULT_GRADE_PATTERN, description="Regular expression whose first group is the "
                                                                 "grade (C, P or I); the last match counts.")
    partial_credit: bool = Field(False, description="P counts 0.5; without it a P grade counts 0.")
    requires_target: bool = Field(True, description="Samples without a target are not graded (scorer error).")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, template: str | None) -> str | None:
        if template is None:
            return None
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError as exc:
            raise ValueError(f"invalid template: {exc}") from None
        unknown = names - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"template field(s) {', '.join(sorted(unknown))} do not exist; use "
                             f"{', '.join(sorted(TEMPLATE_FIELDS))}")
        return template

    @model_validator(mode="after")
    def _pattern(self) -> JudgeOptions:
        try:
            compiled = re.compile(self.grade_pattern)
        except re.error as exc:
            raise ValueError(f"grade_pattern: invalid regular expression: {exc}") from None
        if compiled.groups < 1:
            raise ValueError("grade_pattern needs a group capturing the grade")
        return self

    def prompt(self, question: str, answer: str, criterion: str) -> str:
        template = self.template or (QA_TEMPLATE if self.name == "model_graded_qa" else FACT_TEMPLATE)
        instructions = self.instructions or default_instructions(self.partial_credit)
        # str.format over a mapping of known fields: braces inside the sample's text stay text.
        return template.format_map({"question": question, "answer": answer, "criterion": criterion,
                                    "target": criterion, "instructions": instructions})

    def grade(self, reply: str) -> Score:
        matches = list(re.finditer(self.grade_pattern, reply))
        letter = (matches[-1].group(1) or "").upper() if matches else ""
        if letter not in GRADE_VALUES:
            return Score(value=None, answer=None, explanation=f"no grade in the judge's reply: {reply}")
        value = GRADE_VALUES[letter] if letter != "P" or self.partial_credit else 0.0
        return Score(value=value, answer=letter, explanation=reply)


class JudgeError(Exception):
    """A judge call that failed after its retries: the sample fails, naming the judge."""


class Judges:
    """The judge models of one task specification, resolved at submission (`spec.judges`); the
    specification's own model when a scorer names none."""

    def __init__(self, spec: ResolvedTaskSpec):
        self.spec = spec

    def model(self, key: str | None) -> ResolvedModel:
        model = self.spec.judges.get(key) if key else self.spec.model
        if model is None:
            raise JudgeError(f"no judge model: the scorer names none and the specification {self.spec.key!r} "
                             "has no model")
        return model

    def ask(self, options: JudgeOptions, sample: Sample, output: str) -> Score:
        if options.requires_target and not sample.target:
            return Score(value=None, answer=None, explanation="no target to grade against (requires_target)")
        from workers.providers import ProviderError, prompt_text, provider_for

        model = self.model(options.judge_model)
        question = prompt_text(sample.input) if sample.input is not None else ""
        prompt = options.prompt(question, output, sample.target or "")
        try:
            reply = provider_for(model).generate(prompt, sample)
        except ProviderError as exc:
            _record(JudgeUsage(model=model.key, calls=exc.calls, attempts=exc.attempts))
            raise JudgeError(f"judge {model.key}: {exc}") from None
        _record(JudgeUsage(model=model.key, calls=reply.calls, attempts=reply.attempts,
                           input_tokens=reply.input_tokens or 0, output_tokens=reply.output_tokens or 0,
                           latency_ms=reply.latency_ms))
        return options.grade(reply.text)


_calls = threading.local()


@contextmanager
def recording() -> Iterator[list[JudgeUsage]]:
    """Collects the judge calls made by this thread while scoring one sample."""
    calls: list[JudgeUsage] = []
    previous = getattr(_calls, "current", None)
    _calls.current = calls
    try:
        yield calls
    finally:
        _calls.current = previous


def _record(usage: JudgeUsage) -> None:
    current = getattr(_calls, "current", None)
    if current is not None:
        current.append(usage)


def judge_keys(scorers: list[ScorerOptions]) -> list[str]:
    """The judge models the scorers name (not the default, the specification's model)."""
    return list(dict.fromkeys(s.judge_model for s in scorers if isinstance(s, JudgeOptions) and s.judge_model))


def judge_identities(spec: ResolvedTaskSpec, scorers: list[ScorerOptions]) -> dict[str, dict]:
    """The identity of every judge model the scorers use, by key ("" for the specification's model)."""
    from shared.cache_identity import model_identity

    identities = {}
    for scorer in scorers:
        if isinstance(scorer, JudgeOptions):
            model = spec.judges.get(scorer.judge_model) if scorer.judge_model else spec.model
            identities[scorer.judge_model or ""] = model_identity(model) if model is not None else None
    return identities


def uses_judges(scorers: list[ScorerOptions]) -> bool:
    return any(isinstance(s, JudgeOptions) for s in scorers)
