"""Prometheus metrics: the definition of every `evalfleet_*` metric, the children the per-sample
path increments (looked up once per task and model, not per sample), and the gauges computed when
scraped (queue depth from the broker, model leases from Redis). `evalfleet worker --metrics-port`
serves them over HTTP; `evalfleet serve` at `/metrics`.

Labels are bounded: `task` (the task's key, e.g. `qa`), `model` (the model's key in the run file),
`queue`, and for the API the route template. Never a sample or run id, a URL or a credential."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)
# The `_created` series double what a scrape carries and no dashboard of ours reads them.
disable_created_metrics()

# Model calls take from tens of milliseconds (a cache-warm small model) to minutes (long outputs).
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
AGGREGATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

SAMPLES_STARTED = Counter("evalfleet_samples_started", "Samples whose evaluation began in this process.",
                          ["task", "model"])
SAMPLES_FINISHED = Counter("evalfleet_samples_finished",
                           "Samples evaluated in this process, errored ones included.", ["task", "model"])
SAMPLES_ERRORED = Counter("evalfleet_samples_errored", "Samples evaluated in this process that ended in an error.",
                          ["task", "model"])
CACHE_LOOKUPS = Counter("evalfleet_cache_lookups", "Samples looked up in the result store (by the submitter "
                        "at submission, or by a worker).", ["task", "model"])
CACHE_HITS = Counter("evalfleet_cache_hits", "Lookups that found the sample's model output in the result store.",
                     ["task", "model"])
MODEL_REQUESTS = Counter("evalfleet_model_requests", "Requests the model server answered (what is billed).",
                         ["model"])
MODEL_ATTEMPTS = Counter("evalfleet_model_attempts", "Every try of a request, answered or not (connection "
                         "failures and timeouts too).", ["model"])
MODEL_RATE_LIMITED = Counter("evalfleet_model_rate_limited", "Requests the model server refused with 429.",
                             ["model"])
MODEL_REQUEST_SECONDS = Histogram("evalfleet_model_request_seconds", "Duration of each request attempt "
                                  "(not the wait for a connection slot).", ["model"], buckets=REQUEST_BUCKETS)
MODEL_INPUT_TOKENS = Counter("evalfleet_model_input_tokens", "Prompt tokens of answered requests.", ["model"])
MODEL_OUTPUT_TOKENS = Counter("evalfleet_model_output_tokens", "Completion tokens of answered requests.", ["model"])
MODEL_COST = Counter("evalfleet_model_cost_usd", "Cost of answered requests, for models with `pricing`.", ["model"])
MODEL_IN_FLIGHT = Gauge("evalfleet_model_requests_in_flight",
                        "Requests of this process holding one of the model's `max_connections`.", ["model"],
                        multiprocess_mode="livesum")
AGGREGATION_SECONDS = Histogram("evalfleet_aggregation_seconds", "Writing one task result log, by final status "
                                "(`failed`: not written, tried again later).", ["task", "status"],
                                buckets=AGGREGATION_BUCKETS)
HTTP_REQUESTS = Counter("evalfleet_http_requests", "Requests to `evalfleet serve`, by route template.",
                        ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram("evalfleet_http_request_seconds", "Time to answer a request to `evalfleet serve`.",
                                 ["method", "route"], buckets=HTTP_BUCKETS)


class SampleCounters(NamedTuple):
    """The children of one (task, model): incrementing one is a lock and an add."""

    started: Counter
    finished: Counter
    errored: Counter
    lookups: Counter
    hits: Counter


@lru_cache(maxsize=4096)
def sample_counters(task: str, model: str) -> SampleCounters:
    labels = (task, model)
    return SampleCounters(SAMPLES_STARTED.labels(*labels), SAMPLES_FINISHED.labels(*labels),
                          SAMPLES_ERRORED.labels(*labels), CACHE_LOOKUPS.labels(*labels), CACHE_HITS.labels(*labels))


class ModelCounters(NamedTuple):
    requests: Counter
    attempts: Counter
    rate_limited: Counter
    seconds: Histogram
    input_tokens: Counter
    output_tokens: Counter
    cost_usd: Counter
    in_flight: Gauge


@lru_cache(maxsize=1024)
def model_counters(model: str) -> ModelCounters:
    return ModelCounters(MODEL_REQUESTS.labels(model), MODEL_ATTEMPTS.labels(model),
                         MODEL_RATE_LIMITED.labels(model), MODEL_REQUEST_SECONDS.labels(model),
                         MODEL_INPUT_TOKENS.labels(model), MODEL_OUTPUT_TOKENS.labels(model),
                         MODEL_COST.labels(model), MODEL_IN_FLIGHT.labels(model))


class ScrapeTimeGauges(Collector):
    """Gauges read from the broker and Redis when scraped, so their value is the cluster's now,
    whichever process is asked: messages waiting per queue, and per model the leases held
    across every worker against its `max_connections`. A service that does not answer leaves
    its gauge out of that scrape rather than failing it."""

    def __init__(self, queues: Callable[[], Iterable[str]]):
        self.queues = queues

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from workers.app import queue_depth
        from workers.limits import lease_counts

        depth = GaugeMetricFamily("evalfleet_queue_messages", "Messages waiting in a broker queue (not those "
                                  "delivered to a worker).", labels=["queue"])
        try:
            for queue in sorted(set(self.queues())):
                waiting = queue_depth(queue)
                if waiting is not None:
                    depth.add_metric([queue], waiting)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even with the broker away
            logger.warning("queue depth not available: %s", exc)
        yield depth
        leases = GaugeMetricFamily("evalfleet_model_leases", "Requests in flight to a model across every worker "
                                   "(its Redis leases, idle ones kept for reuse included).", labels=["model"])
        limit = GaugeMetricFamily("evalfleet_model_max_connections", "The model's `max_connections`.",
                                  labels=["model"])
        try:
            for model, held, max_connections in lease_counts():
                limit.add_metric([model], max_connections)
                if held is not None:
                    leases.add_metric([model], held)
        except Exception as exc:  # noqa: BLE001
            logger.warning("model leases not available: %s", exc)
        yield leases
        yield limit


def scrape_registry(queues: Callable[[], Iterable[str]]) -> CollectorRegistry:
    """What a scrape answers: this process's metrics (every process's of a multi-process server
    when PROMETHEUS_MULTIPROC_DIR is set) and the scrape-time gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessMetrics())
    registry.register(ScrapeTimeGauges(queues))
    return registry


class _ProcessMetrics(Collector):
    """The default registry (our metrics, and the process and Python collectors), re-exposed so
    scrape-time gauges join it without being registered in every process that imports this."""

    def collect(self) -> Iterable:
        return REGISTRY.collect()


def start_exporter(port: int, host: str, queues: list[str]) -> None:
    """Serve /metrics over HTTP from a daemon thread of this process."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=scrape_registry(lambda: queues))
