"""The subprocesses of the Inspect interop tests: this directory's scripts and the `inspect`
command, run by the Inspect venv's python, and `evalfleet run` in a directory of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.inspect_venv import venv_env

HERE = Path(__file__).resolve().parent
SUBPROCESS_TIMEOUT_S = 120


def inspect_env() -> dict[str, str]:
    """The venv's environment, without INSPECT_* settings of the machine (a log directory, a display)."""
    env = {k: v for k, v in venv_env().items() if not k.startswith("INSPECT_")}
    env.update({"INSPECT_DISPLAY": "none", "PYTHONUNBUFFERED": "1"})
    return env


def run_inspect_script(python: Path, script: str, *args: str) -> Any:
    """Run a script of this directory with the venv's python; its last line of output is JSON."""
    completed = subprocess.run([str(python), str(HERE / script), *args], capture_output=True, text=True,
                               timeout=SUBPROCESS_TIMEOUT_S, env=inspect_env())
    assert completed.returncode == 0, f"{script} failed:\n{completed.stderr[-4000:]}"
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_inspect_cli(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The venv's `inspect` command."""
    return subprocess.run([str(python.parent / "inspect"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=SUBPROCESS_TIMEOUT_S, env=inspect_env())


def evalfleet_run(run_file: Path, home: Path, expected_exit: int = 0) -> dict[str, Any]:
    """`evalfleet run -f RUN_FILE --json` in a subprocess, embedded, with its own home and logs
    under `home`; returns the report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALFLEET_")}
    env.update({"EVALFLEET_HOME": str(home / ".evalfleet"), "EVALFLEET_LOG_DIR": str(home / "logs")})
    completed = subprocess.run([sys.executable, "-c", "from services.cli import main; main()", "run", "-f",
                                str(run_file), "--json"], capture_output=True, text=True, cwd=home, env=env,
                               timeout=SUBPROCESS_TIMEOUT_S)
    assert completed.returncode == expected_exit, (completed.stdout[-3000:], completed.stderr[-3000:])
    return json.loads(completed.stdout)
