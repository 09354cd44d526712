"""Celery's own tools see `evalfleet worker` processes on the Redis broker: `celery -A workers.app
inspect ping|stats|active` lists each worker by its name, and Flower's API shows both."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Sandbox, evalfleet_command, free_port, poll, write_run_file

pytestmark = pytest.mark.services

CELERY_APP = "workers.app"  # the value README gives for -A


def celery(sandbox: Sandbox, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "celery"), "-A", CELERY_APP, *args]
    return subprocess.run(command, cwd=sandbox.root, env=sandbox.env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def inspect(sandbox: Sandbox, command: str, destination: set[str] | None = None) -> dict:
    """`celery inspect <command> --json`: {worker name: its answer}. Asked of every worker, it
    waits out its whole timeout; asked of named ones (`-d`), only until they have all answered."""
    chosen = ["-d", ",".join(sorted(destination)), "--timeout", "10"] if destination else ["--timeout", "2"]
    done = celery(sandbox, "inspect", command, *chosen, "--json")
    assert done.returncode == 0, f"celery inspect {command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_celery_inspect_and_flower_see_both_workers(redis_cluster, workers, fake_openai):
    workers.start(2, concurrency=2)
    names = {f"{worker.name}@{os.uname().nodename}" for worker in workers.workers}

    assert set(inspect(redis_cluster, "ping")) == names
    stats = inspect(redis_cluster, "stats", names)
    assert set(stats) == names
    for answer in stats.values():
        assert answer["pool"]["max-concurrency"] == 2
        # The pool of workers.pool, with as many threads as the concurrency.
        assert answer["pool"]["implementation"] == "workers.pool:ThreadPool"
        assert answer["pool"]["threads"] == 2
        assert answer["broker"]["transport"] == "workers.broker:Transport"
    assert inspect(redis_cluster, "active", names) == {name: [] for name in names}

    # With a sample held at the model, `inspect active` shows it on the worker running it.
    fake_openai.configure(latency_ms=4000)
    run_file = write_run_file(redis_cluster.root / "slow.yaml", {
        "models": [{"key": "slow", "provider": "openai", "name": "slow-1", "base_url": fake_openai.base_url,
                    "timeout": 10}],
        "evaluation": {"key": "tools", "task_specifications": [
            {"key": "one", "task_key": "qa", "model_key": "slow", "dataset_key": "inline"}]},
        "datasets": [{"key": "inline", "rows": [{"id": "a", "input": "hold on", "target": "x"}]}],
    })
    submitted = subprocess.run(evalfleet_command() + ["run", "-f", str(run_file), "--detach"],
                               cwd=redis_cluster.root, env=redis_cluster.env(),
                               capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    active = poll(lambda: {name: tasks for name, tasks in inspect(redis_cluster, "active", names).items()
                                                   if tasks},
                  timeout=20, interval=0.3, message="no worker reported the sample as active")
    [(_, [task])] = active.items()
    assert task["name"] == "evalfleet.sample"

    port = free_port()
    flower = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", CELERY_APP, "flower", f"--port={port}",
         "--address=127.0.0.1"], cwd=redis_cluster.root, env=redis_cluster.env(FLOWER_UNAUTHENTICATED_API="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def flower_workers() -> dict | None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/workers", params={"refresh": "1"}, timeout=10)
            except httpx.TransportError:
                assert flower.poll() is None, flower.stdout.read().decode(errors="replace")
                return None
            return answer.json() if answer.status_code == 200 and set(answer.json()) == names else None

        listed = poll(flower_workers, timeout=30, interval=0.3, message="Flower did not list both workers")
        for name in names:
            assert listed[name]["stats"]["pool"]["max-concurrency"] == 2
            # Celery censors the broker password in what it shows of the configuration.
            assert listed[name]["conf"]["broker_url"].startswith("redis://")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(flower.pid, signal.SIGTERM)
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(flower.pid, signal.SIGKILL)
            flower.wait(5)
