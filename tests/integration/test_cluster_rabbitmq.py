"""Cluster mode on RabbitMQ with PostgreSQL: `evalfleet run` submits and waits while two
`evalfleet worker` subprocesses do the work."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.conftest import assert_complete_log, only_log, qa_run_file

pytestmark = pytest.mark.services

SAMPLES = 1_000


def test_run_1000_samples_on_two_workers(rabbitmq_cluster, postgres_url, workers, cli):
    workers.start(2, concurrency=8)
    run_file = qa_run_file(rabbitmq_cluster.root, SAMPLES, key="amqp1k")

    result = cli("run", "-f", str(run_file), "--json", check=0)

    report = result.json()
    assert report["status"] == "success", report
    [task_result] = report["task_results"]
    assert (task_result["samples"], task_result["done"], task_result["errors"]) == (SAMPLES, SAMPLES, 0)
    assert task_result["metrics"]["includes"]["accuracy"] == 1.0
    assert_complete_log(only_log(report), SAMPLES, workers.names())
    assert workers.tasks_logged("evalfleet.aggregate") == 1  # claimed exactly once
    with psycopg.connect(postgres_url) as connection:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT (task_result_id, sample_id)) FROM sample_results").fetchone()
        [(run_status,)] = connection.execute("SELECT status FROM runs").fetchall()
    assert (rows, distinct) == (SAMPLES, SAMPLES)
    assert run_status == "success"
