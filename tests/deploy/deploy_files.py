"""The files under deploy/, parsed for the deploy tests, and what they must agree with: the
settings, the project's version and the worker's stop grace."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
# What a stopped worker does after its grace: hand the unfinished samples back to the broker,
# remove its heartbeat row and exit. The container must not be killed before that.
HAND_BACK_MARGIN_S = 10.0
HEARTBEAT_FILE = "/tmp/evalfleet/heartbeat"


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def default_setting(name: str) -> Any:
    from shared.settings import Settings

    return Settings.model_fields[name].default


def worker_grace(environment: dict[str, str]) -> float:
    """EVALFLEET_WORKER_GRACE as set in a container's environment, or the default."""
    value = environment.get("EVALFLEET_WORKER_GRACE")
    return float(value) if value is not None else float(default_setting("worker_grace"))


def setting_variables() -> set[str]:
    from shared.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name.upper()}" for name in Settings.model_fields}


# -- Kubernetes ---------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.glob("*.yaml"))


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every manifest, with its file."""
    found = []
    for path in manifest_files():
        found += [(path, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return found


def manifest(kind: str, name: str, file: str | None = None) -> dict[str, Any]:
    matching = [doc for path, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name
                and (file is None or path.name == file)]
    assert len(matching) == 1, f"expected one {kind} {name} in deploy/kubernetes, found {len(matching)}"
    return matching[0]


def pod_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


# -- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {name: None if value is None else str(value) for name, value in environment.items()}


def interpolated_variables(text: str) -> set[str]:
    """Variables a compose file takes from the host: ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def duration_seconds(value: str) -> float:
    """A compose duration (`1m30s`, `45s`, `500ms`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """The stages of deploy/Dockerfile, each with its instructions (continuation lines joined)."""
    text = DOCKERFILE.read_text() if text is None else text
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[Stage] = []
    for line in re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest.strip()))
    return stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, base first."""
    by_name = {stage.name: stage for stage in stages}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def effective(stages: list[Stage], name: str, instruction: str) -> str | None:
    """The last value of an instruction that a stage has or inherits (USER, CMD, HEALTHCHECK...)."""
    values = [value for stage in stage_chain(stages, name) for value in stage.arguments(instruction)]
    return values[-1] if values else None
