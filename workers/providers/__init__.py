"""Model providers, one module each. A provider turns a prompt into a `ModelOutput`; one client
per model per process is kept, so no sample pays for connection setup."""

from __future__ import annotations

from dataclasses import dataclass

from shared.plan import ResolvedModel
from shared.process_cache import PerConfiguration
from shared.samples import ChatMessage, Prompt, Sample


@dataclass
class ModelOutput:
    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float = 0.0
    # `calls` counts requests the model server answered (what is billed and rate-limited);
    # `attempts` also counts those that got no answer (connection refused, timeouts).
    calls: int = 1
    attempts: int = 1


class ProviderError(Exception):
    """A model call that failed; the message never carries a credential."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1,
                 calls: int | None = None, retryable: bool = False, type_name: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts
        self.calls = attempts if calls is None else calls
        self.retryable = retryable
        self.type_name = type_name or type(self).__name__


class Provider:
    def generate(self, prompt: Prompt, sample: Sample) -> ModelOutput:
        raise NotImplementedError


def as_messages(prompt: Prompt) -> list[ChatMessage]:
    """A prompt as a conversation: text is one user message."""
    return [ChatMessage(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt's last user message (the whole prompt when it is text)."""
    if isinstance(prompt, str):
        return prompt
    return next((m.content for m in reversed(prompt) if m.role == "user"), "")


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
