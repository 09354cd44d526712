"""`mock`: deterministic outputs with no network, for the quickstart, tests and benchmarks.
`echo` answers with the prompt, `target` with the sample's target."""

from __future__ import annotations

import time

from shared.plan import ResolvedModel
from shared.samples import Prompt, Sample
from workers.providers import ModelOutput, Provider, as_messages, prompt_text

MOCK_MODELS = ("echo", "target")


class MockProvider(Provider):
    def __init__(self, model: ResolvedModel):
        self.model = model
        self.delay = model.latency_ms / 1000.0

    def generate(self, prompt: Prompt, sample: Sample) -> ModelOutput:
        if self.delay:
            time.sleep(self.delay)
        # `echo` answers with the last user message; token counts are words over every message.
        text = prompt_text(prompt) if self.model.name == "echo" else (sample.target or "")
        words = len(prompt.split()) if isinstance(prompt, str) else sum(
            len(m.content.split()) for m in as_messages(prompt))
        return ModelOutput(text=text, input_tokens=words, output_tokens=len(text.split()),
                           latency_ms=self.model.latency_ms)
