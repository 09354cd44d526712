"""Workers that die, stop or are missing, at default settings: a SIGKILLed worker's samples run
again within a minute while a live worker's long sample is never delivered twice; SIGTERM finishes
or hands back in-flight samples; Ctrl+C on `evalfleet run`; a run or a cancel with no worker; two
workers on one host told apart."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest

from tests.faults.conftest import (
    assert_every_sample_once,
    fake_openai_model,
    logs_of,
    poll,
    prompt_of,
    read_log,
    requests_per_prompt,
    rows,
    run_file,
    run_progress,
)

pytestmark = pytest.mark.services


def _latest_run_id() -> str | None:
    from services.runs import list_runs

    found = list_runs(limit=1)
    return found[0].run_id if found else None


def test_a_killed_worker_s_samples_run_again_within_a_minute_at_default_settings(redis_cluster, workers,
                                                                                 background):
    # No EVALFLEET_VISIBILITY_TIMEOUT here: the default must do.
    data = rows(120)
    model = {"key": "slowmock", "provider": "mock", "name": "target", "latency_ms": 400}
    path = run_file(redis_cluster.root, "killed", data, models=[model])
    victim, _survivor = workers.start(2, concurrency=4)
    run = background.start("run", "-f", str(path), "--json")
    run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
    poll(lambda: run_progress(run_id)[0] >= 8, timeout=60, message="no samples done")
    assert "] received" in victim.log()
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.process.wait(10)
    result = run.wait(timeout=150)
    finished_after = time.monotonic() - killed_at
    assert result.returncode == 0, str(result)
    # What was left took the survivor a few seconds; the rest is waiting for the dead worker's samples.
    assert finished_after < 90, f"the run finished {finished_after:.0f} s after the kill"
    [log] = logs_of(result.json()).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    assert log["samples_errored"] == 0


def test_a_live_worker_s_long_sample_is_never_delivered_twice(redis_cluster, workers, fake_openai, background):
    """One sample whose model call takes 18 s, far longer than the visibility timeout (10 s) and
    several heartbeats: the worker's heartbeat keeps it, so the server sees it exactly once."""
    redis_cluster.setenv("EVALFLEET_VISIBILITY_TIMEOUT", "10")
    fake_openai.configure(latency_ms=18_000)
    data = rows(1)
    path = run_file(redis_cluster.root, "long", data, models=[fake_openai_model(fake_openai, timeout=60)])
    workers.start(2, concurrency=2, env={"FAKE_OPENAI_KEY": "sk-test"})
    result = background.start("run", "-f", str(path), "--json").wait(timeout=120)
    assert result.returncode == 0, str(result)
    assert requests_per_prompt(fake_openai) == Counter({prompt_of(data[0]): 1})
    [log] = logs_of(result.json()).values()
    assert log["samples"][0]["model_calls"] == 1


def test_sigterm_finishes_in_flight_samples_and_hands_back_the_rest(redis_cluster, workers, fake_openai,
                                                                   background):
    fake_openai.configure(latency_ms=200)
    data = rows(300)
    path = run_file(redis_cluster.root, "sigterm", data, models=[fake_openai_model(fake_openai)])
    leaving, staying = workers.start(2, concurrency=8, env={"FAKE_OPENAI_KEY": "sk-test"})
    run = background.start("run", "-f", str(path), "--json")
    run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
    poll(lambda: run_progress(run_id)[0] >= 40, timeout=60, message="no progress")
    leaving.process.send_signal(signal.SIGTERM)
    assert leaving.process.wait(40) == 0, leaving.log()[-3000:]
    result = run.wait(timeout=120)
    assert result.returncode == 0, str(result)
    [log] = logs_of(result.json()).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    # Nothing in flight was abandoned and nothing was run twice.
    assert set(requests_per_prompt(fake_openai).values()) == {1}
    assert len(requests_per_prompt(fake_openai)) == 300
    workers_seen = Counter(s["worker"].split("@")[0] for s in log["samples"])
    assert workers_seen[leaving.name] > 0 and workers_seen[staying.name] > 0, workers_seen


def test_a_second_sigterm_stops_at_once_and_the_samples_come_back(redis_cluster, workers, fake_openai, background):
    # The samples abandoned in flight come back after the visibility timeout: its minimum, to be quick.
    redis_cluster.setenv("EVALFLEET_VISIBILITY_TIMEOUT", "10")
    fake_openai.configure(latency_ms=1500)
    data = rows(16)
    path = run_file(redis_cluster.root, "twice", data, models=[fake_openai_model(fake_openai)])
    leaving, _staying = workers.start(2, concurrency=4, env={"FAKE_OPENAI_KEY": "sk-test"})
    run = background.start("run", "-f", str(path), "--json")
    poll(lambda: "] received" in leaving.log(), timeout=60, message="the worker took no sample")
    leaving.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    leaving.process.send_signal(signal.SIGTERM)
    leaving.process.wait(10)
    assert time.monotonic() - started < 5
    handed = re.search(r"handed (\d+) messages back", leaving.log())
    assert handed and int(handed.group(1)) > 0, leaving.log()[-2000:]
    result = run.wait(timeout=120)
    assert result.returncode == 0, str(result)
    [log] = logs_of(result.json()).values()
    assert_every_sample_once(log, [r["id"] for r in data])
    assert log["samples_errored"] == 0


def test_two_workers_on_one_host_record_different_names(redis_cluster, workers, cli):
    workers.start(2, concurrency=2, named=False)
    path = run_file(redis_cluster.root, "names", rows(40),
                    models=[{"key": "m", "provider": "mock", "name": "target", "latency_ms": 50}])
    report = cli("run", "-f", str(path), "--json", check=0).json()
    [log] = logs_of(report).values()
    names = Counter(s["worker"] for s in log["samples"])
    assert len(names) == 2, names
    assert all(name.startswith("evalfleet-") and "@" in name for name in names)


def test_run_with_no_worker_says_so_then_finishes_when_one_starts(redis_cluster, workers, background):
    path = run_file(redis_cluster.root, "noworker", rows(10), models=[{"key": "m", "provider": "mock",
                                                                      "name": "target"}])
    run = background.start("run", "-f", str(path), "--json")
    poll(lambda: "no worker has consumed queue" in run.stderr(), timeout=60,
         message="`run` never said that no worker consumes its queue")
    assert redis_cluster.queue in run.stderr() and "evalfleet worker -Q" in run.stderr()
    assert run.stderr().count("no worker has consumed") == 1
    workers.start(1, concurrency=4)
    result = run.wait(timeout=60)
    assert result.returncode == 0, str(result)


def test_status_and_cancel_with_no_worker(redis_cluster, cli):
    path = run_file(redis_cluster.root, "cancelnone", rows(10), models=[{"key": "m", "provider": "mock",
                                                                        "name": "target"}])
    run_id = cli("run", "-f", str(path), "--detach", check=0).stdout.strip()
    status = cli("status", run_id)
    assert "no worker has consumed queue" in status.stderr, str(status)
    assert cli("status", run_id, "--json").json()["idle_queues"] == [redis_cluster.queue]
    started = time.monotonic()
    cancelled = cli("cancel", run_id, "--json")
    assert time.monotonic() - started < 10
    report = cancelled.json()
    assert report["status"] == "cancelled", report
    [task_result] = report["task_results"]
    assert task_result["status"] == "cancelled" and task_result["log_path"], task_result
    assert read_log(task_result["log_path"])["status"] == "cancelled"


def test_ctrl_c_cancels_an_embedded_run_writes_its_logs_and_a_rerun_reuses_them(sandbox, background, cli):
    path = run_file(sandbox.root, "ctrlc", rows(60),
                    models=[{"key": "m", "provider": "mock", "name": "target", "latency_ms": 200}])
    run = background.start("run", "-f", str(path), "--json", "--concurrency", "2")
    poll(lambda: (sandbox.home / "evalfleet.db").exists() and _latest_run_id(), timeout=60,
         message="the run did not start")
    run_id = _latest_run_id()
    poll(lambda: run_progress(run_id)[0] >= 6, timeout=60, message="no progress")
    os.kill(run.process.pid, signal.SIGINT)
    result = run.wait(timeout=60)
    assert result.returncode == 130, str(result)
    assert "cancelling the run" in result.stderr
    report = result.json()
    assert report["status"] == "cancelled", report
    [task_result] = report["task_results"]
    log = read_log(task_result["log_path"])
    assert log["status"] == "cancelled"
    finished = len(log["samples"])
    assert 6 <= finished < 60
    assert cli("list", "--json").json()[0]["status"] == "cancelled"
    rerun = cli("run", "-f", str(path), "--json", check=0).json()
    assert rerun["task_results"][0]["cache_hits"] >= finished


def test_ctrl_c_detaches_from_a_cluster_run(redis_cluster, workers, background):
    path = run_file(redis_cluster.root, "detach", rows(40),
                    models=[{"key": "m", "provider": "mock", "name": "target", "latency_ms": 100}])
    workers.start(1, concurrency=4)
    run = background.start("run", "-f", str(path))
    run_id = poll(_latest_run_id, timeout=60, message="the run was not submitted")
    poll(lambda: run_progress(run_id)[0] >= 2, timeout=60, message="no progress")
    os.kill(run.process.pid, signal.SIGINT)
    result = run.wait(timeout=30)
    assert result.returncode == 130, str(result)
    assert f"evalfleet status {run_id}" in result.stderr and f"evalfleet cancel {run_id}" in result.stderr
    poll(lambda: run_progress(run_id)[2] == "success", timeout=60, message="the run did not go on")


def test_two_embedded_runs_at_once_in_one_directory(sandbox, background):
    models = [{"key": "m", "provider": "mock", "name": "target", "latency_ms": 20}]
    first = run_file(sandbox.root, "first", rows(80, "a"), models=models)
    second = run_file(sandbox.root, "second", rows(80, "b"), models=models)
    runs = [background.start("run", "-f", str(path), "--json") for path in (first, second)]
    for run, prefix in zip(runs, "ab", strict=True):
        result = run.wait(timeout=120)
        assert result.returncode == 0, str(result)
        [log] = logs_of(result.json()).values()
        assert_every_sample_once(log, [r["id"] for r in rows(80, prefix)])


@pytest.mark.parametrize("waiting", [True, False], ids=["waiting-run", "detached-run"])
def test_samples_lost_by_the_broker_are_enqueued_again_by_the_safety_net(redis_cluster, redis_url, workers, cli,
                                                                        waiting):
    """Three messages vanish from the queue (as a message does when a worker dies between taking it
    and noting it as delivered): the waiting `run`, or with none the workers' own sweep, sees that
    nobody holds those samples any more and enqueues them again."""
    import redis

    data = rows(20)
    path = run_file(redis_cluster.root, "lost", data, models=[{"key": "m", "provider": "mock", "name": "target"}])
    run_id = cli("run", "-f", str(path), "--detach", check=0).stdout.strip()
    client = redis.Redis.from_url(redis_url)
    assert client.llen(redis_cluster.queue) == 20
    for _ in range(3):
        client.rpop(redis_cluster.queue)  # kombu takes from the right: these were next in line
    workers.start(1, concurrency=4)
    if waiting:
        from services.runs import wait_for_run  # what `evalfleet run` waits with

        report = wait_for_run(run_id, timeout_s=90, poll_s=0.2)
    else:
        report = poll(lambda: (r := _report(run_id)).finished and r, timeout=120,
                      message="the workers' sweep did not recover the lost samples")
    assert report.status == "success", report
    log = read_log(report.task_results[0].log_path)
    assert_every_sample_once(log, [r["id"] for r in data])


def _report(run_id: str):  # noqa: ANN202
    from services.runs import run_report

    return run_report(run_id)
