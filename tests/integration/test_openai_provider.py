"""The `openai` provider end to end: `evalfleet run` (embedded mode, a real subprocess) against the
fake Chat Completions server, and a few checks that the fake itself behaves as the tests assume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.conftest import REPO_ROOT, only_log, poll, qa_run_file

N = 8
ROWS = [{"id": f"s{i:05d}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(N)]
# The fake answers each prompt (the sample's input) with its target: one word out, two in.
ANSWERS = {row["input"]: row["target"] for row in ROWS}
MODEL_KEY = "fake-gpt"
MODEL_NAME = "gpt-fake-1"
KEY_VARIABLE = "FAKE_OPENAI_TEST_KEY"


def model_entity(server: FakeOpenAIServer, **fields) -> dict:
    return {"key": MODEL_KEY, "provider": "openai", "name": MODEL_NAME, "base_url": server.base_url,
            "api_key_env": KEY_VARIABLE, "timeout": 10, "max_attempts": 3, "retry_timeout": 60, **fields}


def run_file(sandbox, server: FakeOpenAIServer, *, fail_on_error=False, **model_fields) -> Path:
    return qa_run_file(sandbox.root, N, key="oai", model_key=MODEL_KEY, rows=ROWS,
                       models=[model_entity(server, **model_fields)], fail_on_error=fail_on_error)


@pytest.fixture
def api_key(sandbox) -> str:
    key = f"sk-test-{uuid.uuid4().hex}"
    sandbox.setenv(KEY_VARIABLE, key)
    return key


def attempts_by_prompt(server: FakeOpenAIServer) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for entry in server.requests_log():
        out[entry["prompt"]].append(entry)
    return out


def assert_no_secret(secret: str, *places: str | Path) -> None:
    for place in places:
        text = place.read_bytes().decode("utf-8", "replace") if isinstance(place, Path) else place
        assert secret not in text, f"the API key leaked into {str(place)[:200]}"


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_outputs_usage_latency_and_calls(sandbox, fake_openai, api_key, cli):
    sandbox.setenv("OPENAI_API_KEY", "sk-decoy-not-to-be-used")  # `api_key_env` names another variable
    fake_openai.configure(answers=ANSWERS, latency_ms=50)
    path = run_file(sandbox, fake_openai, temperature=0.25, max_tokens=16)

    result = cli("run", "-f", str(path), "--json", check=0)

    report = result.json()
    [task_result] = report["task_results"]
    assert (task_result["status"], task_result["done"], task_result["errors"]) == ("success", N, 0)
    assert task_result["model_calls"] == N
    log = only_log(report)
    assert log["status"] == "success"
    assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
    for sample in log["samples"]:
        assert sample["error"] is None
        assert sample["output"] == sample["target"]
        assert sample["usage"] == {"input_tokens": 2, "output_tokens": 1}
        assert sample["model_calls"] == 1
        assert sample["cached"] is False
        assert 50 <= sample["latency_ms"] < 10_000, sample["latency_ms"]
    assert log["stats"]["model_calls"] == N
    usage = log["stats"]["model_usage"][MODEL_KEY]
    assert (usage["calls"], usage["input_tokens"], usage["output_tokens"]) == (N, 2 * N, N)

    stats = fake_openai.stats()
    assert stats["requests"] == N
    assert stats["responses"] == {"200": N}
    assert stats["models"] == {MODEL_NAME: N}
    # The key came from the variable that `api_key_env` names, read by the worker.
    assert stats["authorization"] == {f"Bearer {api_key}": N}
    bodies = [entry["body"] for entry in fake_openai.requests_log()]
    assert all(b["temperature"] == 0.25 and b["max_tokens"] == 16 for b in bodies), bodies[0]
    assert all(b["messages"] == [{"role": "user", "content": b["messages"][0]["content"]}] for b in bodies)
    assert sorted(b["messages"][0]["content"] for b in bodies) == sorted(ANSWERS)
    # The key is never written down: not in the log, the database or the output.
    assert_no_secret(api_key, result.stdout, result.stderr, *files_under(sandbox.root))


def test_non_retryable_400_fails_the_sample_at_once(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, prompt_faults={"question 3": "400"})
    path = run_file(sandbox, fake_openai)

    report = cli("run", "-f", str(path), "--json", check=0).json()

    log = only_log(report)
    by_id = {s["id"]: s for s in log["samples"]}
    failed = by_id["s00003"]
    assert failed["error"]["status_code"] == 400
    assert failed["error"]["attempts"] == 1
    assert failed["error"]["type"] == "BadRequestError"
    assert failed["model_calls"] == 1
    assert failed["output"] is None and failed["scores"] == {}
    assert log["samples_errored"] == 1
    assert report["task_results"][0]["errors"] == 1
    assert all(s["error"] is None and s["output"] == s["target"] for i, s in by_id.items() if i != "s00003")
    # One request for the failed prompt: no retry of a 400.
    assert len(attempts_by_prompt(fake_openai)["question 3"]) == 1
    assert fake_openai.stats()["requests"] == N


def test_429_with_retry_after_is_retried_and_succeeds(sandbox, fake_openai, api_key, cli):
    # Every prompt's first attempt is refused with `Retry-After: 1`; the second is served.
    fake_openai.configure(answers=ANSWERS, fail_first={"fault": "429", "count": 1}, retry_after=1)
    path = run_file(sandbox, fake_openai)

    report = cli("run", "-f", str(path), "--json", check=0).json()

    log = only_log(report)
    assert log["status"] == "success"
    assert all(s["error"] is None and s["output"] == s["target"] for s in log["samples"])
    assert all(s["model_calls"] == 2 for s in log["samples"])
    assert log["stats"]["model_calls"] == 2 * N
    assert report["task_results"][0]["model_calls"] == 2 * N
    assert fake_openai.stats()["responses"] == {"429": N, "200": N}
    # The retry waited for Retry-After (1 s), not for the first backoff step (at most 0.5 s).
    for prompt, attempts in attempts_by_prompt(fake_openai).items():
        assert [a["status"] for a in attempts] == [429, 200], prompt
        assert attempts[1]["t"] - attempts[0]["t"] >= 0.95, (prompt, attempts[1]["t"] - attempts[0]["t"])


def test_transient_faults_are_retried_up_to_max_attempts(sandbox, fake_openai, api_key, cli):
    sequences = {
        "question 1": ["500"],
        "question 2": ["503"],
        "question 3": ["timeout"],  # held longer than the model's timeout
        "question 4": ["drop"],  # the connection closes without an answer
        "question 5": ["429", "502"],
        "question 6": ["500", "500", "500", "500"],  # more failures than max_attempts allows
    }
    fake_openai.configure(answers=ANSWERS, prompt_sequences=sequences, retry_after=0.1, hang_s=15)
    path = run_file(sandbox, fake_openai, timeout=1.0, max_attempts=3)

    report = cli("run", "-f", str(path), "--json", check=0).json()

    by_id = {s["id"]: s for s in only_log(report)["samples"]}
    # Model calls are answered requests; attempts also count the timeout and the dropped connection.
    expected_calls = {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 3, 6: 3, 7: 1}
    expected_attempts = {0: 1, 1: 2, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 1}
    assert {i: by_id[f"s{i:05d}"]["model_calls"] for i in range(N)} == expected_calls
    assert {i: by_id[f"s{i:05d}"]["attempts"] for i in range(N)} == expected_attempts
    for i in (0, 1, 2, 3, 4, 5, 7):
        sample = by_id[f"s{i:05d}"]
        assert sample["error"] is None and sample["output"] == sample["target"], sample
    exhausted = by_id["s00006"]
    assert exhausted["error"]["status_code"] == 500
    assert exhausted["error"]["attempts"] == 3
    assert exhausted["output"] is None
    attempts = attempts_by_prompt(fake_openai)
    assert {p: len(a) for p, a in attempts.items()} == {f"question {i}": n for i, n in expected_attempts.items()}
    assert fake_openai.stats()["faults"] == {"500": 4, "503": 1, "timeout": 1, "drop": 1, "429": 1, "502": 1}


def test_rejected_key_fails_fast_and_never_leaks(sandbox, fake_openai, api_key, cli):
    # The fake's 401 message quotes the presented key, as the real service does.
    fake_openai.configure(answers=ANSWERS, require_api_key="sk-the-right-one")
    path = run_file(sandbox, fake_openai, fail_on_error=True)

    result = cli("run", "-f", str(path), "--json", check=1)

    report = result.json()
    assert report["status"] == "error"
    log = only_log(report)
    assert log["status"] == "error"
    for sample in log["samples"]:
        assert sample["error"]["status_code"] == 401
        assert sample["error"]["attempts"] == 1
        assert "***" in sample["error"]["message"], sample["error"]["message"]
    assert fake_openai.stats()["authorization"] == {f"Bearer {api_key}": N}
    assert_no_secret(api_key, result.stdout, result.stderr, *files_under(sandbox.root))


def test_base_url_and_key_from_openai_variables(sandbox, fake_openai, cli):
    key = f"sk-env-{uuid.uuid4().hex}"
    sandbox.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    sandbox.setenv("OPENAI_API_KEY", key)
    fake_openai.configure(answers=ANSWERS)
    path = qa_run_file(sandbox.root, N, key="oaienv", model_key="openai$gpt-test", rows=ROWS)

    report = cli("run", "-f", str(path), "--json", check=0).json()

    log = only_log(report)
    assert all(s["output"] == s["target"] for s in log["samples"])
    assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
    stats = fake_openai.stats()
    assert stats["models"] == {"gpt-test": N}
    assert stats["authorization"] == {f"Bearer {key}": N}
    assert log["stats"]["model_usage"]["openai$gpt-test"]["calls"] == N


def test_max_connections_caps_requests_in_flight(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, latency_ms=300)
    path = run_file(sandbox, fake_openai, max_connections=3)

    report = cli("run", "-f", str(path), "--json", "--concurrency", "8", check=0).json()

    assert only_log(report)["results"]["includes"]["metrics"]["accuracy"] == 1.0
    stats = fake_openai.stats()
    assert stats["requests"] == N
    assert stats["max_concurrency"] == 3, stats


def test_latency_excludes_the_wait_for_a_connection_slot(sandbox, fake_openai, api_key, cli):
    fake_openai.configure(answers=ANSWERS, latency_ms=200)
    path = run_file(sandbox, fake_openai, max_connections=1)

    report = cli("run", "-f", str(path), "--json", "--concurrency", "4", check=0).json()

    assert fake_openai.stats()["max_concurrency"] == 1
    latencies = sorted(s["latency_ms"] for s in only_log(report)["samples"])
    # Each call takes 200 ms at the server; samples queued behind the one connection must not
    # count their wait (the eighth of eight samples waits 1.4 s), so the median stays near 200 ms.
    assert latencies[0] >= 200
    assert statistics.median(latencies) < 400, latencies


# -- the fake server itself ----------------------------------------------------------------------


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, payload=None):
    data = json.dumps(payload if payload is not None else {}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def _completions(port: int, concurrency: int, rounds: int) -> list[int]:
    """`concurrency` keep-alive connections, each sending `rounds` requests one after another."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()

    async def connection() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        statuses = []
        for _ in range(rounds):
            writer.write(head + body)
            await writer.drain()
            response_head = await reader.readuntil(b"\r\n\r\n")
            lines = response_head.decode().split("\r\n")
            length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
            json.loads(await reader.readexactly(length))
            statuses.append(int(lines[0].split()[1]))
        writer.close()
        return statuses

    results = await asyncio.gather(*(connection() for _ in range(concurrency)))
    return [status for statuses in results for status in statuses]


def test_fake_server_subprocess_sustains_200_concurrent_slow_requests(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--port-file", str(port_file),
         "--latency-ms", "500"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        port = int(poll(lambda: port_file.exists() and port_file.read_text(), timeout=20, interval=0.05,
                        message="the fake server did not write its port"))
        url = f"http://127.0.0.1:{port}"
        assert _get(f"{url}/health") == {"ok": True}

        started = time.monotonic()
        statuses = asyncio.run(_completions(port, concurrency=200, rounds=3))
        elapsed = time.monotonic() - started

        assert statuses == [200] * 600
        # 600 requests of 500 ms each, 200 at a time: 1.5 s when nothing queues (a generous bound
        # for a busy machine; serialised it would take 300 s).
        assert elapsed < 6, elapsed
        stats = _get(f"{url}/stats")
        assert stats["requests"] == 600
        assert stats["max_concurrency"] == 200
        assert stats["in_flight"] == 0
        assert stats["authorization"] == {"Bearer k": 600}

        assert _post(f"{url}/config", {"every": {"500": 2}, "latency_ms": 0})["every"] == {"500": 2}
        assert _post(f"{url}/reset") == {"ok": True}
        assert sorted(asyncio.run(_completions(port, concurrency=1, rounds=4))) == [200, 200, 500, 500]
        assert _get(f"{url}/stats")["responses"] == {"200": 2, "500": 2}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert "listening on" in output


def test_fake_server_faults_are_deterministic(fake_openai):
    fake_openai.configure(schedule={2: "503"}, every={"429": 3}, rates={"500": 0.5}, seed=7, retry_after=2)

    def statuses() -> list[int]:
        return asyncio.run(_completions(fake_openai.port, concurrency=1, rounds=12))

    first = statuses()
    assert first[1] == 503  # the schedule first
    assert [first[i] for i in (2, 5, 8, 11)] == [429] * 4  # then every third request
    assert 500 in first and 200 in first  # the rest drawn from the seeded generator
    fake_openai.reset()
    assert statuses() == first  # the same seed, the same sequence
    assert fake_openai.stats()["faults"]["429"] == 4
