"""`python`: a model that is a function, `package.module:function`, called with the sample."""

from __future__ import annotations

import time

from shared.entrypoints import load_entrypoint
from shared.plan import ResolvedModel
from shared.samples import Prompt, Sample
from workers.providers import ModelOutput, Provider, ProviderError


class PythonProvider(Provider):
    def __init__(self, model: ResolvedModel):
        self.function = load_entrypoint(model.name)

    def generate(self, prompt: Prompt, sample: Sample) -> ModelOutput:
        # The function gets the sample itself: its `input` is the text or the list of messages.
        started = time.perf_counter()
        try:
            result = self.function(sample)
        except Exception as exc:  # noqa: BLE001 - the model's failure is the sample's error
            raise ProviderError(str(exc), type_name=type(exc).__name__) from exc
        return ModelOutput(text="" if result is None else str(result),
                           latency_ms=(time.perf_counter() - started) * 1000)
