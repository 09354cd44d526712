"""Model provider faults against real workers: rate limiting (429 with Retry-After), requests the
provider rejects (400) and the `fail_on_error` budget, and an API key that must never be stored."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import (
    assert_every_sample_once,
    logs_of,
    openai_model,
    prompt_of,
    rows,
    run_file,
    sqlite_query,
    submit_in_process,
    wait_finished,
    wait_in_process,
)

pytestmark = pytest.mark.services


def test_rate_limited_requests_are_retried_until_every_sample_is_scored(redis_cluster, workers, cli, fake_openai):
    samples = rows(40)
    fake_openai.configure(rates={"429": 0.3}, seed=1234, retry_after=0.1)
    # 12 tries: a sample fails only after 12 429s in a row, p = 0.3**12 (5e-7).
    model = openai_model("limited", fake_openai, max_attempts=12)
    path = run_file(redis_cluster.root, "ratelimited", samples, models=[model])
    workers.start(2, concurrency=8, env={"FAKE_OPENAI_KEY": "sk-test"})

    result = cli("run", "-f", str(path), "--json", check=0)

    report = result.json()
    assert report["status"] == "success", report
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in samples])
    assert all(s["error"] is None for s in log["samples"]), [s["error"] for s in log["samples"] if s["error"]]
    assert log["samples_errored"] == 0
    assert log["results"]["includes"]["scored"] == len(samples)
    assert log["results"]["includes"]["metrics"]["accuracy"] == 1.0
    stats = fake_openai.stats()
    assert stats["responses"].get("429", 0) > 0, stats
    assert stats["requests"] > len(samples), stats
    assert stats["responses"]["200"] == len(samples), stats
    # Each retry is a model call the log accounts for.
    assert sum(s["model_calls"] for s in log["samples"]) == stats["requests"]
    assert log["stats"]["model_calls"] == stats["requests"]
    assert any(s["model_calls"] > 1 for s in log["samples"])
    # Retry-After (0.1 s) was honoured: a retried prompt was never asked again sooner than that.
    by_prompt: dict[str, list[float]] = {}
    for entry in fake_openai.requests_log():
        by_prompt.setdefault(entry["prompt"], []).append(entry["t"])
    gaps = [b - a for times in by_prompt.values() for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= 0.09, sorted(gaps)[:5]


def test_rejected_requests_fail_their_samples_at_once_within_the_error_budget(redis_cluster, workers, cli,
                                                                             fake_openai):
    samples = rows(10)
    bad = {"s03", "s07"}
    fake_openai.configure(prompt_faults={prompt_of(r): "400" for r in samples if r["id"] in bad})
    model = openai_model("picky", fake_openai, max_attempts=5)
    tolerant = run_file(redis_cluster.root, "tolerant", samples, models=[model], fail_on_error=0.25)
    strict = run_file(redis_cluster.root, "strict", samples, models=[model], fail_on_error=True,
                      cache_policy="no-cache")
    workers.start(2, concurrency=4, env={"FAKE_OPENAI_KEY": "sk-test"})

    # Two failures of ten, within a budget of 25 %: the run succeeds.
    result = cli("run", "-f", str(tolerant), "--json", check=0)
    report = result.json()
    assert report["status"] == "success", report
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in samples])
    _assert_rejected_samples(log, bad, len(samples))
    assert log["status"] == "success"
    requests = Counter(e["prompt"] for e in fake_openai.requests_log())
    # 400 is not retried: one request per failed sample, though max_attempts is 5.
    assert all(requests[prompt_of(r)] == 1 for r in samples), requests

    # The same failures with `fail_on_error: true`: the run is an error and `run` exits 1, with a
    # complete log all the same.
    result = cli("run", "-f", str(strict), "--json", check=1)
    report = result.json()
    assert report["status"] == "error", report
    [task_result] = report["task_results"]
    assert (task_result["status"], task_result["done"], task_result["errors"]) == ("error", 10, 2)
    [log] = logs_of(report).values()
    assert log["status"] == "error"
    assert "2 of 10 samples failed" in log["error"]["message"]
    assert_every_sample_once(log, [r["id"] for r in samples])
    _assert_rejected_samples(log, bad, len(samples))

    # A count from 1 fails from that many failed samples on.
    for budget, expected in ((3, "success"), (2, "error")):
        counted = run_file(redis_cluster.root, f"count{budget}", samples, models=[model], fail_on_error=budget)
        report = wait_in_process(submit_in_process(counted))
        assert report["status"] == expected, (budget, report)
        [log] = logs_of(report).values()
        assert log["status"] == expected
        _assert_rejected_samples(log, bad, len(samples))


def _assert_rejected_samples(log: dict, bad: set[str], total: int) -> None:
    by_id = {s["id"]: s for s in log["samples"]}
    for sample_id, sample in by_id.items():
        if sample_id in bad:
            error = sample["error"]
            assert error is not None, sample
            assert error["status_code"] == 400, error
            assert error["attempts"] == 1, error
            assert sample["model_calls"] == 1
            assert sample["scores"] == {}
        else:
            assert sample["error"] is None, sample
            assert sample["scores"]["includes"]["value"] == 1.0
    assert log["samples_errored"] == len(bad)
    assert log["results"]["includes"]["scored"] == total - len(bad)
    assert log["results"]["includes"]["errors"] == len(bad)


def test_the_api_key_is_stored_nowhere(redis_cluster, sqlite_url, redis_url, workers, cli, fake_openai):
    sentinel = f"sk-SENTINEL-{uuid.uuid4().hex}"
    samples = rows(12)
    refused = {"s02", "s05", "s09"}
    # The fake server's 401 message echoes the key it was given, as the real service does.
    fake_openai.configure(prompt_faults={prompt_of(r): "401" for r in samples if r["id"] in refused})
    model = openai_model("secret", fake_openai)
    model["api_key_env"] = "SENTINEL_KEY"
    path = run_file(redis_cluster.root, "sentinel", samples, models=[model], fail_on_error=False)
    redis_cluster.setenv("SENTINEL_KEY", sentinel)

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        # Submitted with no worker running: the messages wait in the broker, where we read them.
        submitted = cli("run", "-f", str(path), "--detach", check=0)
        run_id = submitted.stdout.strip()
        queued = [_readable(m) for m in client.lrange(redis_cluster.queue, 0, -1)]
        assert len(queued) == len(samples), (redis_cluster.queue, client.keys("*"))
        assert not any(sentinel.encode() in message for message in queued)
        assert any(b"question 02" in message for message in queued)  # we did read the messages

        workers.start(1, concurrency=4)
        report = wait_finished(cli, run_id, timeout=90)
        assert report["status"] == "success", report
        export = cli("export", "eval", "--id", run_id, "-o", str(redis_cluster.root / "export"), "--link-logs",
                     check=0)

        # The key was used, and the server did echo it back for the refused samples.
        stats = fake_openai.stats()
        assert stats["authorization"] == {f"Bearer {sentinel}": len(samples)}, stats
        assert stats["responses"]["401"] == len(refused)
        [log] = logs_of(report).values()
        errors = {s["id"]: s["error"] for s in log["samples"] if s["error"]}
        assert set(errors) == refused
        assert all(e["status_code"] == 401 and "***" in e["message"] for e in errors.values()), errors
        assert (redis_cluster.root / "export" / "sentinel.yaml").exists(), str(export)

        # Not in any file under the test's directory: logs, database (and its WAL), result store,
        # worker logs, CLI output, the export.
        files = [p for p in Path(redis_cluster.root).rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in files) and any("worker-logs" in p.parts for p in files)
        leaking = [str(p) for p in files if sentinel.encode() in p.read_bytes()]
        assert leaking == []

        # Not in any row of any table.
        tables = [name for (name,) in sqlite_query(sqlite_url, "SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"runs", "task_results", "sample_results", "entities"} <= set(tables)
        for table in tables:
            for row in sqlite_query(sqlite_url, f'SELECT * FROM "{table}"'):
                assert sentinel not in json.dumps(row, default=str), (table, row)

        # Not in any Redis key or value of the test's database.
        keys = client.keys("*")
        assert keys, "the cluster left nothing in Redis (the result store index at least)"
        for key in keys:
            assert sentinel.encode() not in key
            assert sentinel.encode() not in _redis_value(client, key), key
        for result in cli.history:
            assert sentinel not in result.stdout + result.stderr
    finally:
        client.close()


def _readable(value: bytes) -> bytes:
    """A value as stored, plus, for a kombu message, its decoded body (base64 on Redis)."""
    try:
        message = json.loads(value)
    except ValueError:
        return value
    if isinstance(message, list) and message:  # kombu's `unacked` entries: [message, exchange, key]
        message = message[0]
    if not isinstance(message, dict) or not isinstance(message.get("body"), str):
        return value
    body = message["body"].encode()
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return value + b"\n" + body


def _redis_value(client, key: bytes) -> bytes:  # noqa: ANN001
    kind = client.type(key).decode()
    if kind == "string":
        items = [client.get(key) or b""]
    elif kind == "list":
        items = client.lrange(key, 0, -1)
    elif kind == "set":
        items = list(client.smembers(key))
    elif kind == "zset":
        items = client.zrange(key, 0, -1)
    elif kind == "hash":
        items = [part for pair in client.hgetall(key).items() for part in pair]
    else:
        items = []
    return b"\n".join(_readable(item) for item in items)
