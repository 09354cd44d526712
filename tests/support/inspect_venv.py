"""Inspect AI in a virtual environment of its own, for the interop tests and the benchmark harness:
the one place that knows the pinned version and where the environment lives. Inspect's
dependencies never enter evalfleet's environment; its programs run as subprocesses of the
environment's interpreter."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Pinned so that test results and benchmark figures from different days concern the same program.
INSPECT_AI = "inspect-ai==0.3.285"
REPO = Path(__file__).resolve().parents[2]
INSPECT_VENV = REPO / "benchmarks" / ".work" / "inspect-venv"
# Written last, once pip succeeded: a venv without it is a build that was interrupted.
READY_MARKER = "evalfleet-ready.txt"
PIP_TIMEOUT_S = 1800
# Variables that would send pip's files somewhere other than the venv, or load evalfleet's packages.
ISOLATING_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PIP_TARGET", "PIP_PREFIX", "PIP_USER",
                 "PIP_REQUIRE_VIRTUALENV", "VIRTUAL_ENV")


class PackageIndexUnreachable(RuntimeError):
    """The venv is missing and the package index cannot be reached to build it."""


def venv_python(venv: Path = INSPECT_VENV) -> Path:
    return venv / "bin" / "python"


def venv_env() -> dict[str, str]:
    """The environment for the venv's programs: none of evalfleet's Python paths."""
    return {k: v for k, v in os.environ.items() if k not in ISOLATING_ENV}


def _ready(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    marker = venv / READY_MARKER
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip() == INSPECT_AI
    # A venv from before the marker existed: accept it if it holds exactly the pinned version.
    probe = subprocess.run([str(python), "-c", "import inspect_ai, importlib.metadata as m; "
                            "print(m.version('inspect-ai'))"], capture_output=True, text=True, timeout=300,
                           env=venv_env())
    if probe.returncode == 0 and f"inspect-ai=={probe.stdout.strip()}" == INSPECT_AI:
        marker.write_text(INSPECT_AI + "\n", encoding="utf-8")
        return True
    return False


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def index_reachable(timeout: float = 15) -> bool:
    """Whether the package index answers for inspect-ai (the index pip would use)."""
    try:
        with urllib.request.urlopen(f"{index_url()}/inspect-ai/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ensure_inspect_venv(install: bool = True, log: Callable[[str], None] | None = None,
                        venv: Path = INSPECT_VENV) -> Path:
    """The venv's python, building the venv (`python -m venv`, then `pip install` of the pinned
    version) when it is missing or incomplete. Processes that call this at the same time wait for
    one build under a file lock. Raises `PackageIndexUnreachable` when a build is needed and the
    index cannot be reached, and RuntimeError for any other failure (or a missing venv with
    `install=False`)."""
    if _ready(venv):
        return venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _ready(venv):  # another process built it while this one waited
                return venv_python(venv)
            if not install:
                raise RuntimeError(f"no {INSPECT_AI} in {venv}, and installing it is turned off")
            if not index_reachable():
                raise PackageIndexUnreachable(f"cannot reach the package index {index_url()} to install "
                                              f"{INSPECT_AI} into {venv}")
            _build(venv, log)
            return venv_python(venv)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(venv: Path, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(f"installing {INSPECT_AI} into {venv} (python -m venv + pip; a few minutes)")
    shutil.rmtree(venv, ignore_errors=True)
    env = venv_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    pip = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          INSPECT_AI], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=env)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        reason = pip.stderr.strip()[-2000:]
        if not index_reachable():
            raise PackageIndexUnreachable(f"pip could not install {INSPECT_AI}: the package index "
                                          f"{index_url()} became unreachable:\n{reason}")
        raise RuntimeError(f"pip could not install {INSPECT_AI} into {venv}:\n{reason}")
    (venv / READY_MARKER).write_text(INSPECT_AI + "\n", encoding="utf-8")


def inspect_version(venv: Path = INSPECT_VENV) -> str | None:
    """The installed inspect-ai version, or None when the venv does not exist (never builds it)."""
    python = venv_python(venv)
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('inspect-ai'))"],
                         capture_output=True, text=True, timeout=120, env=venv_env())
    return out.stdout.strip() or None


if __name__ == "__main__":
    print(ensure_inspect_venv(log=lambda message: print(message, file=sys.stderr)))
