"""Outages of the services a run depends on, for real: a private PostgreSQL stopped mid-run (5 s
and 30 s) and restarted, an S3 endpoint failing during the log upload, and values the database
refuses in a sample. Every sample is recorded exactly once, none errs because of the outage, and
the waiting `evalfleet run` rides it out with a message instead of a traceback."""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.conftest import (
    assert_every_sample_once,
    logs_of,
    poll,
    rows,
    run_file,
    run_progress,
    use_cluster,
)

pytestmark = pytest.mark.services


def _latest_run_id() -> str | None:
    from services.runs import list_runs

    found = list_runs(limit=1)
    return found[0].run_id if found else None


@pytest.mark.parametrize("outage_s", [5, 30])
def test_a_database_outage_mid_run_loses_no_sample(sandbox, redis_url, private_postgres, workers, background,
                                                   outage_s):
    use_cluster(sandbox, redis_url, private_postgres.url)
    data = rows(600)
    model = {"key": "slowmock", "provider": "mock", "name": "target", "latency_ms": 60}
    path = run_file(sandbox.root, "dbdown", data, models=[model])
    workers.start(2, concurrency=8)
    run = background.start("run", "-f", str(path), "--json")
    run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
    poll(lambda: run_progress(run_id)[0] >= 100, timeout=60, message="no progress before the outage")

    private_postgres.stop()
    time.sleep(outage_s)
    private_postgres.start()

    result = run.wait(timeout=180)
    assert result.returncode == 0, str(result)
    report = result.json()
    assert report["status"] == "success", report
    [task_result] = report["task_results"]
    assert (task_result["done"], task_result["errors"]) == (600, 0), task_result
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    assert all(s["error"] is None for s in log["samples"])
    from sqlalchemy import func, select

    from shared.db import get_engine, sample_results

    with get_engine().connect() as connection:
        count, distinct = connection.execute(select(func.count(), func.count(sample_results.c.sample_id.distinct()))
                                             ).one()
    assert (count, distinct) == (600, 600)
    if outage_s >= 30:
        # The waiting command said what it was waiting for, and did not crash.
        assert "the database is unreachable" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_database_restart_mid_run_loses_no_sample(sandbox, redis_url, private_postgres, workers, background):
    use_cluster(sandbox, redis_url, private_postgres.url)
    data = rows(400)
    path = run_file(sandbox.root, "dbrestart", data,
                    models=[{"key": "slowmock", "provider": "mock", "name": "target", "latency_ms": 50}])
    workers.start(2, concurrency=8)
    run = background.start("run", "-f", str(path), "--json")
    run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
    poll(lambda: run_progress(run_id)[0] >= 60, timeout=60, message="no progress before the restart")
    private_postgres.restart()
    result = run.wait(timeout=120)
    assert result.returncode == 0, str(result)
    [log] = logs_of(result.json()).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    assert log["samples_errored"] == 0


def test_values_the_database_refuses_fail_only_their_own_sample(sandbox, postgres_url, cli):
    """On PostgreSQL a lone surrogate cannot be stored: that sample is recorded as its own error,
    and the samples batched with it are recorded as they are. A NUL in an input is stored escaped."""
    sandbox.setenv("EVALFLEET_DATABASE_URL", postgres_url)
    data = rows(40)
    data[7]["input"] = "question \ud800 07"
    data[9]["input"] = "question \x00 09"
    data[11]["topic"] = "metadata \x00 with NUL"
    path = run_file(sandbox.root, "poison", data, models=[{"key": "m", "provider": "mock", "name": "target"}])
    result = cli("run", "-f", str(path), "--json")
    assert result.returncode == 0, str(result)
    report = result.json()
    [task_result] = report["task_results"]
    assert (task_result["done"], task_result["errors"]) == (40, 1), task_result
    [log] = logs_of(report).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    by_id = {s["id"]: s for s in log["samples"]}
    assert by_id["s07"]["error"]["type"] in ("UnrecordableResult", "UnicodeEncodeError"), by_id["s07"]
    assert by_id["s09"]["error"] is None and by_id["s09"]["input"] == "question \x00 09"
    assert by_id["s11"]["error"] is None and by_id["s11"]["metadata"]["topic"] == "metadata \x00 with NUL"


def test_a_nul_in_a_sample_id_is_refused_before_anything_is_submitted(sandbox, cli):
    data = rows(5)
    data[3]["id"] = "s\x0003"
    path = run_file(sandbox.root, "nulid", data, models=[{"key": "m", "provider": "mock", "name": "target"}])
    result = cli("run", "-f", str(path))
    assert result.returncode == 2, str(result)
    assert "row 3: id" in result.stderr and "NUL" in result.stderr
    assert not (sandbox.root / "logs").exists()


def test_a_failing_s3_endpoint_delays_the_log_but_never_half_writes_it(sandbox, tmp_path, background):
    """The log upload fails while the endpoint is cut (retried, then the claim is released); once the
    endpoint is back the waiting run writes the log, whole."""
    import boto3

    from tests.support.moto import moto_server, s3_environment
    from tests.support.proxy import TcpProxy

    with moto_server(tmp_path / "moto.log") as endpoint:
        port = int(endpoint.rsplit(":", 1)[1])
        proxy = TcpProxy("127.0.0.1", port)
        try:
            for name, value in s3_environment(proxy.url, tmp_path).items():
                sandbox.monkeypatch.setenv(name, value)
            client = boto3.client("s3")
            client.create_bucket(Bucket="logs")
            sandbox.setenv("EVALFLEET_OUTAGE_BUDGET", "4")
            data = rows(30)
            path = run_file(sandbox.root, "s3down", data,
                            models=[{"key": "m", "provider": "mock", "name": "target", "latency_ms": 20}])
            proxy.down()
            run = background.start("run", "-f", str(path), "--json", "--log-dir", "s3://logs/runs")
            run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
            poll(lambda: run_progress(run_id)[0] == 30, timeout=60, message="the samples did not finish")
            time.sleep(6)  # the first upload is tried and given up (budget 4 s); nothing may appear
            assert proxy.refused > 0
            proxy.up()
            assert not [o["Key"] for o in client.list_objects_v2(Bucket="logs").get("Contents", [])]
            result = run.wait(timeout=90)
            assert result.returncode == 0, str(result)
            report = result.json()
            [task_result] = report["task_results"]
            assert task_result["log_path"].startswith("s3://logs/runs/s3down/"), task_result
            key = task_result["log_path"].removeprefix("s3://logs/")
            log = json.loads(client.get_object(Bucket="logs", Key=key)["Body"].read())
            assert_every_sample_once(log, [r["id"] for r in data])
        finally:
            proxy.close()
