"""A fake OpenAI-compatible Chat Completions server on loopback, for tests and benchmarks.

Standard library only: asyncio streams and a minimal HTTP/1.1 parser with keep-alive, so one
process serves hundreds of concurrent requests, each held for its configured latency without
blocking the others.

Endpoints
    POST /v1/chat/completions   a chat completion (any path ending in /chat/completions)
    GET  /v1/models             a one-model list
    GET  /stats                 counters as JSON (see `FakeOpenAIServer.stats`)
    GET  /requests              the most recent completion requests (a bounded log) as JSON
    POST /reset                 zero the counters and the per-prompt attempt memory
    POST /config                merge a JSON object into the configuration (fields of `FakeConfig`)
    GET  /config                the configuration as JSON
    GET  /health                {"ok": true}

Answers: the `answers` mapping (last user message -> answer) first; then `model_answers`
({model name: {substring: answer}}: the first substring found in the last user message, "" for
any); then `answer_sequences` ({substring: [answer, ...]}: attempt k of a prompt containing
substring gets the k-th answer, the last one after that); otherwise `reply: echo` returns the last
user message and `reply: fixed` returns `answer`. Token usage is deterministic:
prompt_tokens is the number of whitespace-separated words over all messages' contents,
completion_tokens the number of words of the answer.

Faults, checked in this order for each completion request (numbered from 1 since start/reset):
    schedule       {request_number: fault}: exactly that request gets the fault
    prompt_faults  {substring: fault}: every request whose last user message contains substring
    prompt_sequences {substring: [fault or "ok", ...]}: attempt k of a prompt containing substring
                   gets the k-th entry; after the list, it is served normally. Per sample, so
                   deterministic under any concurrency
    fail_first     {"fault": F, "count": K}: the first K attempts of each distinct prompt get F,
                   so under any concurrency every sample is failed exactly K times, then served
    every          {fault: N}: every Nth request (N, 2N, ...) gets the fault
    rates          {fault: p}: with probability p, drawn from random.Random(seed) per request
A fault is an HTTP status ("429", "500", "400", "401", any other code) or "timeout" (hold the
request `hang_s` seconds, longer than the client's timeout, then close without answering) or
"drop" (close the connection without answering). A 429 carries `Retry-After: <retry_after>`.
A 401 echoes the presented key in its message, as the real service does, so tests can check
that a client scrubs it. `require_api_key` set: any other bearer token gets a 401.

In-process use::

    with FakeOpenAIServer(latency_ms=50, reply="echo") as server:
        server.base_url            # "http://127.0.0.1:PORT/v1"
        server.stats()["requests"]

From another process::

    python -m tests.fakes.openai_server --port 8099 --latency-ms 500
    curl -s http://127.0.0.1:8099/stats
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FAULT_KINDS = ("timeout", "drop")
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
REQUEST_LOG_SIZE = 5000

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
    429: "rate_limit_exceeded", 500: "server_error", 502: "server_error", 503: "server_error",
}


def _check_fault(fault: str) -> str:
    fault = str(fault).strip().lower()
    if fault in FAULT_KINDS:
        return fault
    if fault.isdigit() and 100 <= int(fault) <= 599:
        return fault
    raise ValueError(f"unknown fault {fault!r}: an HTTP status code, 'timeout' or 'drop'")


@dataclass
class FakeConfig:
    """Everything the server does; every field can be changed at run time (`configure`, POST /config)."""

    reply: str = "echo"  # "echo" | "fixed"
    answer: str = "OK"
    answers: dict[str, str] = field(default_factory=dict)
    model_answers: dict[str, dict[str, str]] = field(default_factory=dict)
    answer_sequences: dict[str, list[str]] = field(default_factory=dict)
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # uniform extra latency in [0, jitter), from the seeded generator
    seed: int = 0
    retry_after: float | None = 1.0  # seconds, sent on 429 responses; None sends no header
    hang_s: float = 60.0  # how long a "timeout" fault holds the request
    require_api_key: str | None = None
    schedule: dict[int, str] = field(default_factory=dict)
    prompt_faults: dict[str, str] = field(default_factory=dict)
    prompt_sequences: dict[str, list[str | None]] = field(default_factory=dict)
    fail_first: dict[str, Any] = field(default_factory=dict)  # {"fault": "429", "count": 1}
    every: dict[str, int] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.reply not in ("echo", "fixed"):
            raise ValueError("reply is 'echo' or 'fixed'")
        self.schedule = {int(k): _check_fault(v) for k, v in self.schedule.items()}
        self.prompt_faults = {str(k): _check_fault(v) for k, v in self.prompt_faults.items()}
        self.prompt_sequences = {
            str(k): [None if v is None or str(v).lower() == "ok" else _check_fault(v) for v in sequence]
            for k, sequence in self.prompt_sequences.items()
        }
        self.every = {_check_fault(k): int(v) for k, v in self.every.items()}
        if any(n < 1 for n in self.every.values()):
            raise ValueError("every: N must be at least 1")
        self.rates = {_check_fault(k): float(v) for k, v in self.rates.items()}
        if any(not 0 <= p <= 1 for p in self.rates.values()):
            raise ValueError("rates: probabilities are between 0 and 1")
        if self.fail_first:
            self.fail_first = {"fault": _check_fault(self.fail_first["fault"]),
                               "count": int(self.fail_first.get("count", 1))}

    def updated(self, changes: dict[str, Any]) -> FakeConfig:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        return FakeConfig(**{**asdict(self), **changes})


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0  # completion requests received (complete request parsed)
        self.in_flight = 0
        self.max_concurrency = 0
        self.responses: Counter[str] = Counter()  # status code -> count
        self.faults: Counter[str] = Counter()  # fault -> count
        self.authorization: Counter[str] = Counter()  # Authorization header value -> count
        self.models: Counter[str] = Counter()
        self.in_flight_by_model: Counter[str] = Counter()
        self.max_concurrency_by_model: Counter[str] = Counter()
        self.attempts_by_prompt: Counter[str] = Counter()
        self.log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.other_requests = 0  # stats, config and other endpoints
        self.connections_total = 0
        self.reset_at = time.time()

    def snapshot(self, connections_open: int) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_concurrency": self.max_concurrency,
                "responses": dict(self.responses),
                "faults": dict(self.faults),
                "authorization": dict(self.authorization),
                "models": dict(self.models),
                "max_concurrency_by_model": dict(self.max_concurrency_by_model),
                "distinct_prompts": len(self.attempts_by_prompt),
                "other_requests": self.other_requests,
                "connections_open": connections_open,
                "connections_total": self.connections_total,
                "since_s": round(time.time() - self.reset_at, 3),
            }


class _BadRequest(Exception):
    pass


class FakeOpenAIServer:
    """The server. `start()` runs it on its own event loop in a daemon thread; `serve()` runs it on
    the caller's loop (the `python -m` entry point)."""

    def __init__(self, config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 **overrides: Any):
        base = config or FakeConfig()
        self.config = base.updated(overrides) if overrides else base
        self.host = host
        self.port = port
        self._stats = _Stats()
        self._random = random.Random(self.config.seed)
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._connections: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- public API --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._thread_main, name="fake-openai-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the fake OpenAI server did not start")
        if self._start_error is not None:
            raise RuntimeError(f"the fake OpenAI server did not start: {self._start_error}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """{requests, in_flight, max_concurrency, responses{status: n}, faults{fault: n},
        authorization{header value: n}, models{name: n}, distinct_prompts, connections_open, ...}"""
        return self._stats.snapshot(len(self._connections))

    def requests_log(self) -> list[dict[str, Any]]:
        """The most recent completion requests: {n, t (epoch s), model, prompt, authorization,
        status (int, or "timeout"/"drop"), body (the request's JSON)}."""
        with self._stats.lock:
            return list(self._stats.log)

    @property
    def authorizations(self) -> set[str]:
        """Every Authorization header value seen since start/reset."""
        return set(self.stats()["authorization"])

    def reset(self) -> None:
        with self._stats.lock:
            self._stats.reset()
            self._random = random.Random(self.config.seed)

    def configure(self, **changes: Any) -> FakeConfig:
        """Change the configuration; takes effect for the next request."""
        new = self.config.updated(changes)
        with self._stats.lock:
            self.config = new
            if "seed" in changes:
                self._random = random.Random(new.seed)
        return new

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.01) -> dict[str, Any]:  # noqa: ANN001
        """Poll `predicate(stats)` until true; returns the stats, raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s; stats: {stats}")
            time.sleep(interval)

    async def serve(self, on_ready=None) -> None:  # noqa: ANN001
        """Serve until `shutdown()`; `on_ready(server)` is called once the port is bound."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port, backlog=4096,
                                                  reuse_address=True, limit=MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(self)
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for writer in list(self._writers):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def shutdown(self) -> None:
        """Stop `serve()` from any thread."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    # -- internals ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve(on_ready=lambda _server: self._ready.set()))
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._start_error = exc
            self._ready.set()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        with self._stats.lock:
            self._stats.connections_total += 1
        try:
            while True:
                try:
                    request = await self._read_request(reader, writer)
                except _BadRequest as exc:
                    await self._write(writer, 400, {"error": {"message": str(exc), "type": "bad_request"}},
                                      keep_alive=False)
                    break
                if request is None:
                    break
                keep_alive = await self._dispatch(request, reader, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter | None = None) -> dict[str, Any] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("incomplete request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest("request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest(f"malformed request line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"malformed header {line!r}")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("expect", "").lower() == "100-continue" and writer is not None:  # curl, large bodies
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY_BYTES:
                raise _BadRequest("request body too large")
            body = await reader.readexactly(length)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version.upper() == "HTTP/1.1" else connection == "keep-alive"
        path = target.split("?", 1)[0]
        return {"method": method.upper(), "path": path, "headers": headers, "body": body,
                "keep_alive": keep_alive}

    async def _write(self, writer: asyncio.StreamWriter, status: int, payload: Any, *,
                     keep_alive: bool, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _dispatch(self, request: dict[str, Any], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        method, path, keep_alive = request["method"], request["path"], request["keep_alive"]
        if path.endswith("/chat/completions"):
            if method != "POST":
                await self._write(writer, 405, _error(405, "use POST"), keep_alive=keep_alive)
                return keep_alive
            return await self._completion(request, reader, writer)
        with self._stats.lock:
            self._stats.other_requests += 1
        if method == "GET" and path == "/stats":
            await self._write(writer, 200, self.stats(), keep_alive=keep_alive)
        elif method == "GET" and path == "/requests":
            await self._write(writer, 200, self.requests_log(), keep_alive=keep_alive)
        elif method == "POST" and path == "/reset":
            self.reset()
            await self._write(writer, 200, {"ok": True}, keep_alive=keep_alive)
        elif method == "GET" and path == "/config":
            await self._write(writer, 200, asdict(self.config), keep_alive=keep_alive)
        elif method == "POST" and path == "/config":
            try:
                changes = json.loads(request["body"] or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("a JSON object of configuration fields")
                config = self.configure(**changes)
            except (ValueError, TypeError, KeyError) as exc:
                await self._write(writer, 400, _error(400, str(exc)), keep_alive=keep_alive)
            else:
                await self._write(writer, 200, asdict(config), keep_alive=keep_alive)
        elif method == "GET" and path in ("/health", "/"):
            await self._write(writer, 200, {"ok": True}, keep_alive=keep_alive)
        elif method == "GET" and path.endswith("/models"):
            await self._write(writer, 200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "evalfleet-tests"}]},
                keep_alive=keep_alive)
        else:
            await self._write(writer, 404, _error(404, f"no route {method} {path}"), keep_alive=keep_alive)
        return keep_alive

    def _choose_fault(self, number: int, prompt: str, attempt: int) -> str | None:
        config = self.config
        if number in config.schedule:
            return config.schedule[number]
        for substring, fault in config.prompt_faults.items():
            if substring in prompt:
                return fault
        for substring, sequence in config.prompt_sequences.items():
            if substring in prompt:
                return sequence[attempt - 1] if attempt <= len(sequence) else None
        if config.fail_first and attempt <= config.fail_first["count"]:
            return config.fail_first["fault"]
        for fault, n in config.every.items():
            if number % n == 0:
                return fault
        for fault, p in config.rates.items():
            if self._random.random() < p:
                return fault
        return None

    async def _completion(self, request: dict[str, Any], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> bool:
        keep_alive = request["keep_alive"]
        authorization = request["headers"].get("authorization", "")
        try:
            body = json.loads(request["body"] or b"null")
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
            model = str(body.get("model", ""))
        except (ValueError, KeyError, TypeError) as exc:
            body, messages, model = None, [], ""
            parse_error: str | None = f"invalid request body: {exc}"
        else:
            parse_error = None
        prompt = _last_user_message(messages)
        stats = self._stats
        config = self.config
        with stats.lock:
            stats.requests += 1
            number = stats.requests
            stats.in_flight += 1
            stats.max_concurrency = max(stats.max_concurrency, stats.in_flight)
            stats.authorization[authorization] += 1
            stats.models[model] += 1
            stats.in_flight_by_model[model] += 1
            stats.max_concurrency_by_model[model] = max(stats.max_concurrency_by_model[model],
                                                        stats.in_flight_by_model[model])
            stats.attempts_by_prompt[prompt] += 1
            attempt = stats.attempts_by_prompt[prompt]
            fault = self._choose_fault(number, prompt, attempt) if parse_error is None else "400"
            jitter = self._random.random() * config.latency_jitter_ms if config.latency_jitter_ms else 0.0
            entry = {"n": number, "t": time.time(), "model": model, "prompt": prompt, "attempt": attempt,
                     "authorization": authorization, "status": None, "body": body}
            stats.log.append(entry)
        try:
            if config.require_api_key is not None and fault is None and (
                authorization != f"Bearer {config.require_api_key}"
            ):
                fault = "401"
            delay = (config.latency_ms + jitter) / 1000.0
            if fault == "timeout":
                entry["status"] = "timeout"
                self._count_fault(fault)
                await self._hang(reader, config.hang_s)
                return False
            if delay > 0:
                await asyncio.sleep(delay)
            if fault == "drop":
                entry["status"] = "drop"
                self._count_fault(fault)
                writer.transport.abort()
                return False
            if fault is not None:
                status = int(fault)
                entry["status"] = status
                self._count_fault(fault)
                headers = {}
                if status == 429 and config.retry_after is not None:
                    headers["Retry-After"] = _format_seconds(config.retry_after)
                message = parse_error or _fault_message(status, authorization)
                await self._write(writer, status, _error(status, message), keep_alive=keep_alive,
                                  headers=headers)
                self._count_response(status)
                return keep_alive
            answer = config.answers.get(prompt)
            if answer is None:
                answer = next((reply for substring, reply in config.model_answers.get(model, {}).items()
                               if substring in prompt), None)
            if answer is None:
                answer = next((sequence[min(attempt, len(sequence)) - 1]
                               for substring, sequence in config.answer_sequences.items()
                               if substring in prompt and sequence), None)
            if answer is None:
                answer = prompt if config.reply == "echo" else config.answer
            prompt_tokens = sum(len(_content_text(m).split()) for m in messages if isinstance(m, dict))
            completion_tokens = len(answer.split())
            payload = {
                "id": f"chatcmpl-fake-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
            entry["status"] = 200
            await self._write(writer, 200, payload, keep_alive=keep_alive)
            self._count_response(200)
            return keep_alive
        finally:
            with stats.lock:
                stats.in_flight -= 1
                stats.in_flight_by_model[model] -= 1

    async def _hang(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Hold a request without answering until `seconds` pass or the client goes away."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except (TimeoutError, ConnectionError):
                return
            if not data:  # the client closed the connection
                return

    def _count_fault(self, fault: str) -> None:
        with self._stats.lock:
            self._stats.faults[fault] += 1

    def _count_response(self, status: int) -> None:
        with self._stats.lock:
            self._stats.responses[str(status)] += 1


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _last_user_message(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message)
    return ""


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fault_message(status: int, authorization: str) -> str:
    if status == 401:
        key = authorization.removeprefix("Bearer ").strip()
        return f"Incorrect API key provided: {key}. You can find your API key at https://example.invalid/keys."
    if status == 429:
        return "Rate limit reached for requests (injected by the fake server)."
    if status == 400:
        return "Invalid request (injected by the fake server)."
    return f"Injected fault: HTTP {status}."


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": None,
                      "code": str(status)}}


# -- command line -----------------------------------------------------------------------------


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        for item in value.split(","):
            key, sep, val = item.partition(":")
            if not sep:
                raise SystemExit(f"{option}: expected KEY:VALUE, got {item!r}")
            out.append((key.strip(), val.strip()))
    return out


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    answers: dict[str, str] = {}
    if args.answers_file:
        with open(args.answers_file, encoding="utf-8") as handle:
            answers = json.load(handle)
    fail_first = {}
    if args.fail_first:
        fault, _, count = args.fail_first.partition(":")
        fail_first = {"fault": fault, "count": int(count or 1)}
    return FakeConfig(
        reply="fixed" if args.answer is not None and args.reply is None else (args.reply or "echo"),
        answer=args.answer if args.answer is not None else "OK",
        answers=answers,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        seed=args.seed,
        retry_after=None if args.retry_after < 0 else args.retry_after,
        hang_s=args.hang_s,
        require_api_key=args.require_api_key,
        schedule={int(k): v for k, v in _pairs(args.schedule, "--schedule")},
        prompt_faults=dict(_pairs(args.prompt_fault, "--prompt-fault")),
        prompt_sequences={k: v.split("/") for k, v in _pairs(args.prompt_sequence, "--prompt-sequence")},
        fail_first=fail_first,
        every={k: int(v) for k, v in _pairs(args.every, "--every")},
        rates={k: float(v) for k, v in _pairs(args.rate, "--rate")},
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.openai_server",
        description="A fake OpenAI-compatible Chat Completions server on loopback. "
        "Stats: GET /stats; reset: POST /reset; reconfigure: POST /config (JSON).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed, see --port-file)")
    parser.add_argument("--port-file", help="Write the bound port to this file once listening.")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--reply", choices=("echo", "fixed"), help="default: echo (fixed when --answer)")
    parser.add_argument("--answer", help="The fixed answer.")
    parser.add_argument("--answers-file", help="JSON object: last user message -> answer.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=1.0, help="Seconds on 429s; negative: no header.")
    parser.add_argument("--hang-s", type=float, default=60.0, help="How long a timeout fault holds a request.")
    parser.add_argument("--require-api-key", help="Answer 401 to any other bearer token.")
    parser.add_argument("--schedule", action="append", default=[], metavar="N:FAULT[,N:FAULT]",
                        help="Request number N (from 1) gets FAULT (status code, timeout, drop).")
    parser.add_argument("--prompt-fault", action="append", default=[], metavar="SUBSTRING:FAULT")
    parser.add_argument("--prompt-sequence", action="append", default=[], metavar="SUBSTRING:F1/F2/...",
                        help="Attempt k of a matching prompt gets Fk ('ok': served), then served.")
    parser.add_argument("--fail-first", metavar="FAULT[:K]", help="First K attempts of each prompt get FAULT.")
    parser.add_argument("--every", action="append", default=[], metavar="FAULT:N", help="Every Nth request.")
    parser.add_argument("--rate", action="append", default=[], metavar="FAULT:P", help="Seeded probability.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    server = FakeOpenAIServer(config_from_args(args), host=args.host, port=args.port)

    def ready(bound: FakeOpenAIServer) -> None:
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as handle:
                handle.write(str(bound.port))
            os.replace(args.port_file + ".tmp", args.port_file)
        print(f"fake openai server listening on {bound.url} (base_url {bound.base_url}, stats {bound.url}/stats)",
              flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.shutdown)
        await server.serve(on_ready=ready)

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
