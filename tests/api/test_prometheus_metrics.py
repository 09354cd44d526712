"""Prometheus metrics during a real run on Redis: a worker started with `--metrics-port` and
`evalfleet serve` (`/metrics`), the fake model server answering some requests with 429 and some
with 400. What the metrics count (samples, errors, requests, attempts, 429s, tokens, cost, cache
hits, aggregations) is what the task result logs record; mid-run they show the queue and the
requests in flight."""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared.log.reader import read_log
from tests.integration.conftest import fake_openai, free_port, poll  # noqa: F401 - a fixture

pytestmark = pytest.mark.services

COUNT = 40
API_KEY = "sk-metrics-secret-0123456789"
RATE_LIMITED = {i for i in range(COUNT) if i % 5 == 0}  # a 429, then an answer
REFUSED = {i for i in range(COUNT) if i % 10 == 3}  # a 400: the sample errs
PRICING = {"input_per_million": 1000.0, "output_per_million": 3000.0}
LABELS = {"task": "qa", "model": "fake-gpt"}


class Scrape:
    """One scrape: every sample by name, with its labels."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        """The sum over the series of `name` whose labels include `labels` (0 when none)."""
        return sum(value for found, value in self.samples.get(name, []) if labels.items() <= found.items())

    def has(self, name: str, **labels: str) -> bool:
        return any(labels.items() <= found.items() for found, _ in self.samples.get(name, []))


def scrape(url: str) -> Scrape:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return Scrape(answer.text)


def run_file(base_url: str) -> str:
    rows = [{"id": f"m{i:03d}", "input": f"q{i:03d} what is it", "target": f"a{i:03d}"} for i in range(COUNT)]
    return yaml.safe_dump({
        "datasets": [{"key": "inline", "rows": rows}],
        "models": [{"key": "fake-gpt", "provider": "openai", "name": "gpt-fake-1", "base_url": base_url,
                    "api_key_env": "FAKE_METRICS_KEY", "max_connections": 2, "timeout": 10, "pricing": PRICING}],
        "evaluation": {"key": "metrics", "fail_on_error": 0.5, "task_specifications": [
            {"key": "qa-fake", "task_key": "qa", "model_key": "fake-gpt", "dataset_key": "inline"}]},
    })


def finished_log(api, uuid: str, timeout: float = 60) -> dict:  # noqa: ANN001
    """The run's log, read with the project's reader, once its evaluation run has finished."""
    def done() -> dict | None:
        run = api.get(f"/v2/gen-ai/evaluation_runs/{uuid}").json()["evaluation_run"]
        return run if run["status"] in ("EVALUATION_RUN_SUCCESSFUL", "EVALUATION_RUN_PARTIALLY_SUCCESSFUL",
                                        "EVALUATION_RUN_FAILED", "EVALUATION_RUN_CANCELLED") else None

    poll(done, timeout=timeout, interval=0.2, message=f"evaluation run {uuid} did not finish")
    from services.runs import run_report

    run_id = api.get(f"/v2/gen-ai/evaluation_runs/{uuid}").json()["evaluation_run"]["run_id"]
    [task_result] = poll(lambda: run_report(run_id).task_results if run_report(run_id).finished else None,
                         timeout=30, message="the run was not settled")
    return read_log(task_result.log_path).model_dump()


def test_worker_and_server_metrics_add_up_to_what_the_logs_record(sandbox, redis_url, sqlite_url, workers, server,
                                                                  fake_openai):  # noqa: F811
    sandbox.use_broker(redis_url, sqlite_url)
    sandbox.setenv("FAKE_METRICS_KEY", API_KEY)
    fake_openai.configure(
        answers={f"q{i:03d} what is it": f"a{i:03d}" for i in range(COUNT)}, latency_ms=120, retry_after=0.05,
        prompt_sequences={f"q{i:03d} ": ["429", "ok"] for i in RATE_LIMITED},
        prompt_faults={f"q{i:03d} ": "400" for i in REFUSED})
    port = free_port()
    workers.start(1, concurrency=4, args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"])
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    api = server("--no-auth", tokens=False)
    server_metrics = api.base + "/metrics"

    created = api.post("/v2/gen-ai/evaluation_runs", content=run_file(fake_openai.base_url), token=None)
    assert created.status_code == 200, created.text
    [uuid] = created.json()["evaluation_run_uuids"]

    # Mid-run: samples are waiting in the queue and requests are in flight, within max_connections.
    mid_run = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = scrape(worker_metrics)
        if seen.value("evalfleet_samples_finished_total", **LABELS) >= COUNT:
            break
        if seen.value("evalfleet_samples_started_total", **LABELS):
            mid_run.append(seen)
        time.sleep(0.05)
    assert mid_run, "no scrape saw the run in progress"
    assert max(s.value("evalfleet_queue_messages", queue=sandbox.queue) for s in mid_run) > 0
    assert max(s.value("evalfleet_model_requests_in_flight", model="fake-gpt") for s in mid_run) >= 1
    assert max(s.value("evalfleet_model_leases", model="fake-gpt") for s in mid_run) >= 1
    for seen in mid_run:
        assert seen.value("evalfleet_model_leases", model="fake-gpt") <= 2
        assert seen.value("evalfleet_model_requests_in_flight", model="fake-gpt") <= 2
        assert seen.value("evalfleet_samples_finished_total", **LABELS) < COUNT

    log = finished_log(api, uuid)
    samples, stats = log["samples"], log["stats"]
    usage = stats["model_usage"]["fake-gpt"]
    assert len(samples) == COUNT and log["samples_errored"] == len(REFUSED)
    assert sum(s["attempts"] - 1 for s in samples) == len(RATE_LIMITED)  # each 429 retried once
    after = scrape(worker_metrics)
    assert after.value("evalfleet_samples_started_total", **LABELS) == COUNT
    assert after.value("evalfleet_samples_finished_total", **LABELS) == len(samples)
    assert after.value("evalfleet_samples_errored_total", **LABELS) == log["samples_errored"]
    assert after.value("evalfleet_model_requests_total", model="fake-gpt") == stats["model_calls"] == usage["calls"]
    assert after.value("evalfleet_model_attempts_total", model="fake-gpt") == stats["attempts"]
    assert after.value("evalfleet_model_request_seconds_count", model="fake-gpt") == stats["attempts"]
    assert after.value("evalfleet_model_rate_limited_total", model="fake-gpt") == len(RATE_LIMITED)
    assert fake_openai.stats()["responses"]["429"] == len(RATE_LIMITED)
    assert after.value("evalfleet_model_input_tokens_total", model="fake-gpt") == usage["input_tokens"] > 0
    assert after.value("evalfleet_model_output_tokens_total", model="fake-gpt") == usage["output_tokens"] > 0
    assert after.value("evalfleet_model_cost_usd_total", model="fake-gpt") == pytest.approx(usage["cost_usd"])
    assert after.value("evalfleet_model_requests_in_flight", model="fake-gpt") == 0
    assert after.value("evalfleet_model_max_connections", model="fake-gpt") == 2
    assert after.value("evalfleet_aggregation_seconds_count", task="qa", status=log["status"]) == 1
    assert after.value("evalfleet_queue_messages", queue=sandbox.queue) == 0
    # The submitter (the server) looked every sample up and found none; the worker was told so.
    first = scrape(server_metrics)
    assert first.value("evalfleet_cache_lookups_total", **LABELS) == COUNT
    assert first.value("evalfleet_cache_hits_total", **LABELS) == 0 == stats["cache_hits"]
    assert after.value("evalfleet_cache_lookups_total", **LABELS) == 0

    # The same run again: every sample that succeeded comes from the result store, at submission.
    again = api.post("/v2/gen-ai/evaluation_runs", content=run_file(fake_openai.base_url), token=None)
    [uuid] = again.json()["evaluation_run_uuids"]
    second = finished_log(api, uuid)
    assert second["stats"]["cache_hits"] == COUNT - len(REFUSED)
    served = scrape(server_metrics)
    assert served.value("evalfleet_cache_hits_total", **LABELS) == second["stats"]["cache_hits"]
    assert served.value("evalfleet_cache_lookups_total", **LABELS) == 2 * COUNT
    rerun = scrape(worker_metrics)
    assert rerun.value("evalfleet_samples_finished_total", **LABELS) == COUNT + len(REFUSED)
    assert rerun.value("evalfleet_samples_errored_total", **LABELS) == 2 * len(REFUSED)
    assert rerun.value("evalfleet_model_requests_total", model="fake-gpt") == (
        stats["model_calls"] + second["stats"]["model_calls"])

    # The server's own requests, by route template; its queue gauge; and no secret anywhere.
    assert served.value("evalfleet_http_requests_total", method="POST", route="/v2/gen-ai/evaluation_runs",
                        status="200") == 2
    assert served.has("evalfleet_http_requests_total", route="/v2/gen-ai/evaluation_runs/{evaluation_run_uuid}")
    assert not any(uuid in labels.get("route", "") for labels, _ in served.samples["evalfleet_http_requests_total"])
    assert served.has("evalfleet_queue_messages", queue=sandbox.queue)
    for text in (served.text, rerun.text):
        assert API_KEY not in text and fake_openai.base_url not in text and redis_url not in text


def test_metrics_need_a_read_token_when_configured(sandbox, server):
    api = server(env={"EVALFLEET_METRICS_AUTH": "1"})
    assert api.get("/metrics", token=None).status_code == 401
    assert api.get("/metrics", token="read").status_code == 200


def test_several_server_processes_answer_with_the_sum_of_all(sandbox, server):
    api = server("--workers", "2", "--no-auth", tokens=False)
    for _ in range(12):
        assert api.get("/v2/gen-ai/evaluation_runs/0123456789abcdef", token=None).status_code == 404
    for _ in range(4):  # whichever process answers the scrape
        seen = scrape(api.base + "/metrics")
        assert seen.value("evalfleet_http_requests_total", method="GET", status="404",
                          route="/v2/gen-ai/evaluation_runs/{evaluation_run_uuid}") == 12
