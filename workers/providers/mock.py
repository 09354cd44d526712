"""`mock`: deterministic outputs with no network, for the quickstart, tests and benchmarks.
`echo` answers with the prompt, `target` with the sample's target."""

from __future__ import annotations

import time

from shared.plan import ResolvedModel
from shared.samples import Sample
from workers.providers import ModelOutput, Provider

MOCK_MODELS = ("echo", "target")


class MockProvider(Provider):
    def __init__(self, model: ResolvedModel):
        self.model = model
        self.delay = model.latency_ms / 1000.0

    def generate(self, prompt: str, sample: Sample) -> ModelOutput:
        if self.delay:
            time.sleep(self.delay)
        text = prompt if self.model.name == "echo" else (sample.target or "")
        return ModelOutput(text=text, input_tokens=len(prompt.split()), output_tokens=len(text.split()),
                           latency_ms=self.model.latency_ms)
