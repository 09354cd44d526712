"""`mock`: deterministic outputs with no network, for the quickstart, tests and benchmarks.
`echo` answers with the prompt, `target` with the sample's target, and `grader` is a judge for
model-graded scorers: it grades C when the judge prompt holds the sample's target at least twice
(as the criterion, and in the answer), P when it does so only ignoring case, else I."""

from __future__ import annotations

import re
import time

from shared.plan import ResolvedModel
from shared.samples import Prompt, Sample
from workers.providers import ModelOutput, Provider, as_messages, prompt_text

MOCK_MODELS = ("echo", "target", "grader")
_WORD = re.compile(r"\S+")


def word_count(text: str) -> int:
    # Counted as matches go by: `len(text.split())` builds a list of every word, hundreds of
    # megabytes for a prompt of a few megabytes.
    return sum(1 for _ in _WORD.finditer(text))


class MockProvider(Provider):
    def __init__(self, model: ResolvedModel):
        self.model = model
        self.delay = model.latency_ms / 1000.0

    def generate(self, prompt: Prompt, sample: Sample) -> ModelOutput:
        if self.delay:
            time.sleep(self.delay)
        # `echo` answers with the last user message; token counts are words over every message.
        if self.model.name == "grader":
            text = grade(prompt_text(prompt), sample.target or "")
        else:
            text = prompt_text(prompt) if self.model.name == "echo" else (sample.target or "")
        words = word_count(prompt) if isinstance(prompt, str) else sum(
            word_count(m.content) for m in as_messages(prompt))
        return ModelOutput(text=text, input_tokens=words, output_tokens=len(text.split()),
                           latency_ms=self.model.latency_ms)


def grade(prompt: str, target: str) -> str:
    if target and prompt.count(target) >= 2:
        return f"The submission states {target!r}, as the criterion asks.\nGRADE: C"
    if target and prompt.lower().count(target.lower()) >= 2:
        return f"The submission states {target!r} but not in the expected form.\nGRADE: P"
    return "The submission does not meet the criterion.\nGRADE: I"
