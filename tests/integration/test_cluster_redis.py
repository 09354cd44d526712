"""Cluster mode on Redis: `evalfleet run` submits and waits while two `evalfleet worker` subprocesses
do the work, recording into a SQLite file they share."""

from __future__ import annotations

import os
import sqlite3
import uuid

import pytest

from tests.integration.conftest import FINAL_STATUSES, assert_complete_log, only_log, poll, qa_run_file

pytestmark = pytest.mark.services

SAMPLES = 5_000


def sample_rows_in_database(database_url: str) -> tuple[int, int]:
    path = database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    try:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT task_result_id || ':' || sample_id) FROM sample_results").fetchone()
    finally:
        connection.close()
    return rows, distinct


def test_run_5000_samples_on_two_workers(redis_cluster, sqlite_url, workers, cli):
    workers.start(2, concurrency=16)
    run_file = qa_run_file(redis_cluster.root, SAMPLES, key="redis5k")

    result = cli("run", "-f", str(run_file), "--json", check=0)

    report = result.json()
    assert report["status"] == "success", report
    [task_result] = report["task_results"]
    assert (task_result["samples"], task_result["done"], task_result["errors"]) == (SAMPLES, SAMPLES, 0)
    assert task_result["model_calls"] == SAMPLES
    assert task_result["metrics"]["includes"]["accuracy"] == 1.0
    log = only_log(report)
    assert log["run_id"] == report["run_id"]
    assert_complete_log(log, SAMPLES, workers.names())
    assert workers.tasks_logged("evalfleet.aggregate") == 1  # claimed exactly once
    assert sample_rows_in_database(sqlite_url) == (SAMPLES, SAMPLES)


def test_detach_then_status_until_finished(redis_cluster, workers, cli):
    workers.start(2, concurrency=8)
    count = 200
    run_file = qa_run_file(redis_cluster.root, count, key="detached")

    submitted = cli("run", "-f", str(run_file), "--detach", check=0)
    run_id = submitted.stdout.strip()
    assert len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id), str(submitted)

    def finished_report():
        status = cli("status", run_id, "--json", check=0)  # 0 while running, and once it succeeded
        report = status.json()
        assert report["run_id"] == run_id
        return report if report["status"] in FINAL_STATUSES else None

    report = poll(finished_report, timeout=90, interval=0.3, message=f"run {run_id} did not finish")
    assert report["status"] == "success", report
    assert report["task_results"][0]["done"] == count
    assert_complete_log(only_log(report), count, workers.names())


def test_openai_model_limits_hold_across_workers(redis_cluster, workers, cli, fake_openai):
    """`max_connections` caps requests in flight across every worker together (Redis leases), and
    the API key, passed to the workers by environment only, is written nowhere."""
    key = f"sk-cluster-{uuid.uuid4().hex}"
    redis_cluster.setenv("FAKE_OPENAI_CLUSTER_KEY", key)
    workers.start(2, concurrency=8)
    count = 24
    rows = [{"id": f"s{i:05d}", "input": f"question {i}", "target": f"answer-{i}"} for i in range(count)]
    fake_openai.configure(answers={r["input"]: r["target"] for r in rows}, latency_ms=150)
    model = {"key": "fake-gpt", "provider": "openai", "name": "gpt-fake-1", "base_url": fake_openai.base_url,
             "api_key_env": "FAKE_OPENAI_CLUSTER_KEY", "max_connections": 3, "timeout": 10}
    run_file = qa_run_file(redis_cluster.root, count, key="limits", model_key="fake-gpt", rows=rows,
                           models=[model])

    result = cli("run", "-f", str(run_file), "--json", check=0)

    log = only_log(result.json())
    assert_complete_log(log, count, workers.names())
    stats = fake_openai.stats()
    assert stats["requests"] == count
    assert stats["max_concurrency"] == 3, stats
    assert stats["authorization"] == {f"Bearer {key}": count}
    for path in redis_cluster.root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert key not in result.stdout + result.stderr


def test_a_worker_opens_and_migrates_the_database_before_its_first_sample(redis_cluster, sqlite_url, workers):
    """The first samples a worker takes do not wait for the database's migration check (alembic)."""
    path = sqlite_url.split("///", 1)[1]
    assert not os.path.exists(path)
    workers.start(1)
    with sqlite3.connect(path) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "task_results", "sample_results", "alembic_version"} <= tables


def test_a_worker_starts_while_its_database_is_unreachable(redis_cluster, workers):
    """An unreachable database is reported at start, not fatal: samples retry until it is back."""
    [worker] = workers.start(1, env={"EVALFLEET_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/absent"})
    assert "the database is not reachable yet" in worker.log()


def test_a_worker_introduces_itself_in_one_line_without_celery_s_banner(redis_cluster, workers):
    [worker] = workers.start(1, concurrency=3)
    log = worker.log()
    assert f"evalfleet worker {worker.name}@" in log and "ready; queues " in log and "concurrency 3" in log
    assert "redis://127.0.0.1" in log
    for noise in ("--uid", "-------------- ", "[config]", "celery@"):
        assert noise not in log, noise
