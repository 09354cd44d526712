"""Model providers, one module each. A provider turns a prompt into a `ModelOutput`; one client
per model per process is kept, so no sample pays for connection setup."""

from __future__ import annotations

from dataclasses import dataclass

from shared.plan import ResolvedModel
from shared.process_cache import PerConfiguration
from shared.samples import Sample


@dataclass
class ModelOutput:
    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float = 0.0
    attempts: int = 1


class ProviderError(Exception):
    """A model call that failed; the message never carries a credential."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1,
                 retryable: bool = False, type_name: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts
        self.retryable = retryable
        self.type_name = type_name or type(self).__name__


class Provider:
    def generate(self, prompt: str, sample: Sample) -> ModelOutput:
        raise NotImplementedError


def provider_for(model: ResolvedModel) -> Provider:
    return _providers.get(model)


def warm_up() -> None:
    """Load the OpenAI client before the first sample: importing it costs about a second of CPU,
    which otherwise stalls the first samples a worker takes."""
    from workers.providers import openai

    openai.warm_up()


def _build(model: ResolvedModel) -> Provider:
    if model.provider == "mock":
        from workers.providers.mock import MockProvider

        return MockProvider(model)
    if model.provider == "openai":
        from workers.providers.openai import OpenAIProvider

        return OpenAIProvider(model)
    from workers.providers.python import PythonProvider

    return PythonProvider(model)


_providers: PerConfiguration[Provider] = PerConfiguration(_build)
