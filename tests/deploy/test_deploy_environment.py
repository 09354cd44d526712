"""Every environment variable the deploy files give an evalfleet process is a setting
(shared/settings.py, EVALFLEET_*) or one of a short list read by the libraries evalfleet uses;
third-party images get only their own variables. A misspelt variable would otherwise be ignored
without a word."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    DEPLOY,
    SCHEMAS,
    compose,
    container_environment,
    dockerfile_stages,
    interpolated_variables,
    manifests,
    pod_containers,
    service_environment,
    setting_variables,
)

# Read inside evalfleet processes but not settings: S3 endpoint and credentials (boto3), model API
# keys (each model's `api_key_env`), and the pod's name (Kubernetes' downward API, in worker names).
EVALFLEET_FOREIGN = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                     "OPENAI_API_KEY", "POD_NAME"}
# The image's own configuration: Python's and pip's (Dockerfile), the third-party services'.
IMAGE_VARIABLES = {
    "python": {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
               "PIP_DISABLE_PIP_VERSION_CHECK"},
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "minio/minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    "minio/mc": {"MC_HOST_s3"},
    "mher/flower": {"CELERY_BROKER_URL", "FLOWER_PORT"},
}
# Taken from the host when compose starts: the two passwords and the model key.
HOST_VARIABLES = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "OPENAI_API_KEY"}


def deploy_texts() -> dict[str, str]:
    return {str(path.relative_to(DEPLOY)): path.read_text() for path in sorted(DEPLOY.rglob("*"))
            if path.is_file() and SCHEMAS not in path.parents}


def test_every_evalfleet_variable_named_in_deploy_is_a_setting():
    settings = setting_variables()
    named = {(file, name) for file, text in deploy_texts().items() for name in re.findall(r"EVALFLEET_[A-Z0-9_]+", text)}
    assert named, "no EVALFLEET_ variable found under deploy/"
    unknown = sorted(f"{file}: {name}" for file, name in named if name not in settings)
    assert not unknown, "not settings (shared/settings.py):\n" + "\n".join(unknown)


def test_a_misspelt_variable_is_caught():
    assert "EVALFLEET_WORKER_GRACE" in setting_variables()
    assert "EVALFLEET_WORKERS_GRACE" not in setting_variables()


@pytest.mark.parametrize("service", sorted(compose()["services"]))
def test_compose_services_get_only_known_variables(service):
    definition = compose()["services"][service]
    image = definition["image"].split(":")[0]
    allowed = (setting_variables() | EVALFLEET_FOREIGN if image.startswith("evalfleet")
               else IMAGE_VARIABLES.get(image, set()))
    unknown = set(service_environment(definition)) - allowed
    assert not unknown, f"{service} ({image}): {sorted(unknown)}"


def test_compose_takes_only_the_documented_variables_from_the_host():
    assert interpolated_variables(COMPOSE_FILE.read_text()) == HOST_VARIABLES


@pytest.mark.parametrize(("path", "document"), [m for m in manifests() if pod_containers(m[1])],
                         ids=[f"{p.name}:{d['metadata']['name']}" for p, d in manifests() if pod_containers(d)])
def test_kubernetes_containers_get_only_known_variables(path, document):
    for container in pod_containers(document):
        unknown = set(container_environment(container)) - setting_variables() - EVALFLEET_FOREIGN
        assert not unknown, f"{path.name} {container['name']}: {sorted(unknown)}"


def test_the_dockerfile_sets_only_python_variables():
    names = set()
    for stage in dockerfile_stages():
        for arguments in stage.arguments("ENV"):
            names |= set(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments))
    assert names and names <= IMAGE_VARIABLES["python"], sorted(names - IMAGE_VARIABLES["python"])
