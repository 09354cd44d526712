"""deploy/docker-compose.yml, checked without a Docker engine: against the compose
specification's JSON Schema (shipped in deploy/schemas), then what the services must agree on
(images of this version, health-gated start order, data on volumes, the worker's stop grace,
passwords only from the host's environment). `docker compose up` is not run here."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    HAND_BACK_MARGIN_S,
    HEARTBEAT_FILE,
    SCHEMAS,
    compose,
    duration_seconds,
    project_version,
    service_environment,
    worker_grace,
)

EVALFLEET_SERVICES = {"migrate": "cli", "worker": "worker", "server": "server", "cli": "cli"}
DATA_SERVICES = {"redis": "/data", "postgres": "/var/lib/postgresql/data", "minio": "/data"}


def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_follows_the_compose_specification():
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("change", [
    lambda c: c["services"]["worker"].update(enviroment={"EVALFLEET_QUEUE": "q"}),
    lambda c: c["services"]["worker"].update(depends_on={"redis": {"condition": "service_ready"}}),
    lambda c: c["services"]["worker"].update(stop_grace_period=45),
], ids=["misspelt key", "unknown condition", "duration without a unit"])
def test_the_schema_catches_mistakes(change):
    document = copy.deepcopy(compose())
    change(document)
    assert list(compose_validator().iter_errors(document))


def test_every_part_of_the_cluster_is_there():
    services = compose()["services"]
    assert set(services) >= {"redis", "postgres", "minio", "create-bucket", "migrate", "worker", "server", "flower", "cli"}


@pytest.mark.parametrize(("service", "target"), EVALFLEET_SERVICES.items())
def test_evalfleet_services_use_the_image_target_of_their_role_at_this_version(service, target):
    definition = compose()["services"][service]
    expected = {"cli": "evalfleet", "worker": "evalfleet-worker", "server": "evalfleet-server"}[target]
    assert definition["image"] == f"{expected}:{project_version()}"
    assert definition["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile", "target": target}
    assert (COMPOSE_FILE.parent / definition["build"]["context"] / definition["build"]["dockerfile"]).exists()


def test_evalfleet_services_start_after_the_services_answer_and_the_schema_is_migrated():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("worker", "server", "cli"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["create-bucket"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}
    for name in ("redis", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"


@pytest.mark.parametrize(("service", "path"), DATA_SERVICES.items())
def test_data_lives_on_named_volumes(service, path):
    document = compose()
    mounts = [m.split(":") for m in document["services"][service]["volumes"]]
    (volume,) = [source for source, target, *_ in mounts if target == path]
    assert volume in document["volumes"]


def test_the_worker_is_given_longer_than_its_grace_before_it_is_killed():
    worker = compose()["services"]["worker"]
    grace = worker_grace(service_environment(worker))
    assert duration_seconds(worker["stop_grace_period"]) > grace + HAND_BACK_MARGIN_S


def test_the_worker_command_keeps_the_heartbeat_file_of_the_image_health_check():
    command = compose()["services"]["worker"]["command"]
    assert command[0] == "worker" and command[command.index("--heartbeat-file") + 1] == HEARTBEAT_FILE


def test_passwords_come_from_the_host_environment_and_ports_from_loopback_only():
    services = compose()["services"]
    for name, service in services.items():
        for variable, value in service_environment(service).items():
            if "PASSWORD" in variable or "SECRET" in variable or variable == "EVALFLEET_DATABASE_URL":
                assert "${" in value, f"{name}: {variable} is written inline"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address"
