"""`evalfleet worker --probe`: the liveness probe of a worker (Docker HEALTHCHECK, Kubernetes
livenessProbe). It exits 0 while the heartbeat file the worker writes is fresh, 1 when it is
stale or missing, and needs no broker or database of its own."""

from __future__ import annotations

import time

from click.testing import CliRunner

from services.cli import main
from workers.heartbeat import PROBE_MAX_AGE_S


def probe(*args: str):  # noqa: ANN201
    return CliRunner().invoke(main, ["worker", "--probe", *args])


def write_heartbeat(path, seconds_ago: float):  # noqa: ANN001, ANN201
    path.write_text(f"{time.time() - seconds_ago:.0f}\n")
    return path


def test_a_fresh_heartbeat_is_live(tmp_path):
    result = probe("--heartbeat-file", str(write_heartbeat(tmp_path / "heartbeat", 2)))
    assert result.exit_code == 0, result.output


def test_a_stale_heartbeat_is_not_live_and_says_how_old_it_is(tmp_path):
    path = write_heartbeat(tmp_path / "heartbeat", PROBE_MAX_AGE_S + 30)
    result = probe("--heartbeat-file", str(path))
    assert result.exit_code == 1
    assert f"is {PROBE_MAX_AGE_S + 30:.0f} s old (more than {PROBE_MAX_AGE_S:g} s)" in result.output


def test_a_missing_or_unreadable_heartbeat_is_not_live(tmp_path):
    result = probe("--heartbeat-file", str(tmp_path / "never-written"))
    assert result.exit_code == 1 and "no heartbeat in" in result.output
    garbage = tmp_path / "garbage"
    garbage.write_text("not a time\n")
    assert probe("--heartbeat-file", str(garbage)).exit_code == 1


def test_max_age_sets_how_old_a_heartbeat_may_be(tmp_path):
    path = write_heartbeat(tmp_path / "heartbeat", 30)
    assert probe("--heartbeat-file", str(path), "--max-age", "20").exit_code == 1
    assert probe("--heartbeat-file", str(path), "--max-age", "45").exit_code == 0


def test_the_probe_needs_the_heartbeat_file():
    result = probe()
    assert result.exit_code == 2 and "--heartbeat-file" in result.output


def test_the_help_states_the_default_max_age():
    help_text = " ".join(CliRunner().invoke(main, ["worker", "--help"]).output.split())
    assert f"(default {PROBE_MAX_AGE_S:g})" in help_text


def test_the_probe_follows_a_real_worker_from_live_to_stopped(redis_url, sqlite_url, sandbox, workers, cli):
    """A worker on Redis writes its heartbeat file; the probe, a separate process as in a pod,
    finds it live; once the worker is stopped the file ages and the probe fails."""
    heartbeat = sandbox.root / "run" / "heartbeat"
    sandbox.use_broker(redis_url, sqlite_url)
    workers.start(1, concurrency=2, args=["--heartbeat-file", str(heartbeat)])
    deadline = time.monotonic() + 20
    while not heartbeat.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert heartbeat.exists(), workers.logs()
    cli("worker", "--probe", "--heartbeat-file", str(heartbeat), check=0)
    assert set(workers.stop().values()) == {0}
    time.sleep(1.5)
    stale = cli("worker", "--probe", "--heartbeat-file", str(heartbeat), "--max-age", "1", check=1)
    assert "s old (more than 1 s)" in stale.stderr
