"""`openai`: any OpenAI-compatible Chat Completions endpoint through the official client.

The API key is read from the environment at the moment of the call, inside the worker, and
scrubbed from any error text. Transient failures (429, 5xx, timeouts, dropped connections) are
retried with exponential backoff and full jitter, honouring `Retry-After`."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import openai

from shared.plan import ResolvedModel
from shared.redact import scrub
from shared.samples import Prompt, Sample
from workers.limits import limiter_for
from workers.providers import ModelOutput, Provider, ProviderError, as_messages
from workers.telemetry import model_counters

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 120.0
# What `chat.completions.create()` passes along with its body: the API key as a bearer token.
_REQUEST_OPTIONS = {"security": {"bearer_auth": True}}


class OpenAIProvider(Provider):
    def __init__(self, model: ResolvedModel):
        self.model = model
        self._clients: dict[tuple[str | None, str | None], openai.OpenAI] = {}
        self._lock = threading.Lock()
        self.limiter = limiter_for(model)
        self.metrics = model_counters(model.key)
        # The request body is plain JSON built here: the client's typed `create()` walks its
        # parameter annotations for every call, which cost more CPU than the HTTP exchange itself.
        self.body = {"model": model.name,
                     **{k: v for k, v in model.generation.model_dump().items() if v is not None}}

    def _api_key(self) -> str | None:
        if self.model.api_key_env and self.model.api_key_env not in os.environ:
            # Six connection attempts would not make it appear: say what is missing, at once.
            raise ProviderError(f"the environment variable {self.model.api_key_env} (api_key_env of model "
                                f"{self.model.key!r}) is not set on this worker ({socket.gethostname()})",
                                attempts=0, calls=0, type_name="MissingAPIKey")
        return os.environ.get(self.model.api_key_env or "OPENAI_API_KEY")

    def _client(self, api_key: str | None) -> openai.OpenAI:
        # Keyed by the key itself so a rotated key takes effect; the dict never leaves the process.
        cache_key = (self.model.base_url, api_key)
        client = self._clients.get(cache_key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = openai.OpenAI(
                    api_key=api_key or "unset",
                    base_url=self.model.base_url or os.environ.get("OPENAI_BASE_URL") or None,
                    timeout=self.model.timeout,
                    max_retries=0,  # retries are ours: counted, bounded, and recorded per sample
                )
                self._clients[cache_key] = client
            return client

    def generate(self, prompt: Prompt, sample: Sample) -> ModelOutput:
        api_key = self._api_key()
        client = self._client(api_key)
        messages = [message.model_dump() for message in as_messages(prompt)]
        deadline = time.monotonic() + self.model.retry_timeout
        attempt = calls = 0
        metrics = self.metrics
        while True:
            attempt += 1
            metrics.attempts.inc()
            started = None
            try:
                with self.limiter.slot():
                    started = time.perf_counter()  # latency of the call, not of the wait for a slot
                    response = client.post(
                        "/chat/completions",
                        body={**self.body, "messages": messages},
                        # The JSON as parsed: the typed ChatCompletion costs about a fifth of the
                        # client's CPU per request, and three of its fields are read.
                        cast_to=object,
                        options=_REQUEST_OPTIONS,
                    )
            except openai.APIError as exc:
                if started is not None:
                    metrics.seconds.observe(time.perf_counter() - started)
                # A status error is an answer from the server; a connection failure or timeout is not.
                if isinstance(exc, openai.APIStatusError):
                    calls += 1
                    metrics.requests.inc()
                    if exc.status_code == 429:
                        metrics.rate_limited.inc()
                error = _provider_error(exc, attempt, calls, api_key)
                delay = _retry_delay(exc, attempt)
                if not error.retryable or attempt >= self.model.max_attempts or (
                    time.monotonic() + delay > deadline
                ):
                    raise error from None
                time.sleep(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. an unparsable answer: the call was still made
                metrics.requests.inc()
                raise ProviderError(_scrub(str(exc), api_key), attempts=attempt, calls=calls + 1,
                                    type_name=type(exc).__name__) from None
            elapsed = time.perf_counter() - started
            metrics.seconds.observe(elapsed)
            metrics.requests.inc()
            text, input_tokens, output_tokens = _completion_fields(response)
            if input_tokens is not None or output_tokens is not None:
                self._count_usage(input_tokens or 0, output_tokens or 0)
            return ModelOutput(
                text=text,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                latency_ms=elapsed * 1000,
                calls=calls + 1,
                attempts=attempt,
            )

    def _count_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.metrics.input_tokens.inc(input_tokens)
        self.metrics.output_tokens.inc(output_tokens)
        if self.model.pricing is not None:
            self.metrics.cost_usd.inc(self.model.pricing.cost_usd(input_tokens, output_tokens))


def _completion_fields(response: object) -> tuple[str, int | None, int | None]:
    """The answer's text and token counts from a Chat Completions body; what is missing or of
    another shape reads as empty, as the typed response would have it."""
    body = response if isinstance(response, dict) else {}
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    text = (message.get("content") if isinstance(message, dict) else None) or ""
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return text, usage.get("prompt_tokens"), usage.get("completion_tokens")


def _provider_error(exc: openai.APIError, attempts: int, calls: int, api_key: str | None) -> ProviderError:
    status = getattr(exc, "status_code", None)
    retryable = isinstance(exc, openai.APIConnectionError) or status in RETRYABLE_STATUS
    message = _scrub(str(getattr(exc, "message", None) or exc), api_key)
    return ProviderError(message, status_code=status, attempts=attempts, calls=calls, retryable=retryable,
                         type_name=type(exc).__name__)


def _scrub(message: str, api_key: str | None) -> str:
    """Error text fit to keep: never the key (servers echo it), never unbounded."""
    return scrub(message, api_key)


def warm_up() -> None:
    """What a worker does once at start: load the modules the client's HTTP transport imports
    when the first client is made (about 0.1 s of CPU, which would otherwise delay the first
    samples)."""
    openai.OpenAI(api_key="warm-up", base_url="http://127.0.0.1:9/v1", max_retries=0).close()


def _retry_delay(exc: openai.APIError, attempt: int) -> float:
    """The server's wish (`retry-after-ms`, or `Retry-After` in seconds or as an HTTP date), else
    exponential backoff with full jitter."""
    response = getattr(exc, "response", None)
    headers = response.headers if response is not None else {}
    wished = _header_seconds(headers.get("retry-after-ms"), scale=0.001)
    if wished is None:
        wished = _header_seconds(headers.get("retry-after"))
    if wished is not None:
        return min(max(wished, 0.0), RETRY_AFTER_MAX_S)
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


def _header_seconds(value: str | None, scale: float = 1.0) -> float | None:
    if not value:
        return None
    try:
        return float(value) * scale
    except ValueError:
        pass
    try:
        return (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError):
        return None
