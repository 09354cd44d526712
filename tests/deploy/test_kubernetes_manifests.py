"""deploy/kubernetes, checked without a cluster: every document against the Kubernetes schemas
(kubernetes-validate, strict) or, for KEDA's resources, against the CRDs shipped in
deploy/schemas; then what the documents must agree on (names, images, probes, the worker's stop
grace, the queue the autoscalers watch, credentials only from Secrets)."""

from __future__ import annotations

import copy
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from tests.deploy.deploy_files import (
    HAND_BACK_MARGIN_S,
    HEARTBEAT_FILE,
    SCHEMAS,
    container_environment,
    default_setting,
    manifest,
    manifest_files,
    manifests,
    pod_containers,
    project_version,
    worker_grace,
)

KUBERNETES_VERSION = "1.31.0"
KEDA_VERSION = "2.20.2"
CRD_FILES = {"ScaledObject": "keda.sh_scaledobjects.yaml", "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
WORKLOADS = ("Deployment", "Job")
# Variables whose value is, or usually carries, a credential: never written inline.
CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|^EVALFLEET_(BROKER|DATABASE|REDIS)_URL$")


@cache
def crd_schema(kind: str, api_version: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema, closed: the API server drops fields a structural schema does not
    name, silently, so a misspelt field would be lost without a word; here it is an error."""
    crd = yaml.safe_load((SCHEMAS / CRD_FILES[kind]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return close_objects(copy.deepcopy(served["schema"]["openAPIV3Schema"]))


def close_objects(schema: Any) -> Any:
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            close_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            close_objects(value)
    return schema


def validate(document: dict[str, Any]) -> None:
    if document["kind"] in CRD_FILES:
        jsonschema.Draft7Validator(crd_schema(document["kind"], document["apiVersion"])).validate(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def ids(items: list[tuple[Path, dict]]) -> list[str]:
    return [f"{path.name}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in items]


def test_kubernetes_validate_is_the_pinned_version():
    assert kubernetes_validate.version.__version__ == "1.31.0"


def test_the_manifests_are_the_expected_set():
    assert [p.name for p in manifest_files()] == [
        "hpa.yaml", "keda-rabbitmq.yaml", "keda-redis.yaml", "migrate-job.yaml", "server.yaml", "workers.yaml"]


@pytest.mark.parametrize(("path", "document"), manifests(), ids=ids(manifests()))
def test_every_manifest_is_valid(path, document):
    try:
        validate(document)
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
        pytest.fail(f"{path.name}: {document['kind']} {document['metadata']['name']}: {exc}")


@pytest.mark.parametrize("mistake", [
    ("Deployment", "evalfleet-worker", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=90)),
    ("Deployment", "evalfleet-worker", lambda d: d["spec"].update(replicas="2")),
    ("ScaledObject", "evalfleet-worker", lambda d: d["spec"]["scaleTargetRef"].update(nme="x")),
    ("ScaledObject", "evalfleet-worker", lambda d: d["spec"]["triggers"][0]["metadata"].update(listLength=500)),
    ("TriggerAuthentication", "evalfleet-redis", lambda d: d["spec"]["secretTargetRef"][0].pop("key")),
], ids=["unknown pod field", "string replicas", "unknown KEDA field", "non-string trigger value", "missing key"])
def test_the_validation_catches_mistakes(mistake):
    kind, name, change = mistake
    document = copy.deepcopy(manifest(kind, name, "keda-redis.yaml" if kind in CRD_FILES else None))
    change(document)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(document)


def test_the_shipped_keda_crds_are_the_pinned_release():
    notes = (SCHEMAS / "README.md").read_text()
    assert f"KEDA v{KEDA_VERSION}" in notes
    for name in CRD_FILES.values():
        digest = hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in notes, f"{name} differs from the file recorded in deploy/schemas/README.md"


def test_the_worker_is_given_longer_than_its_grace_before_it_is_killed():
    deployment = manifest("Deployment", "evalfleet-worker")
    (container,) = pod_containers(deployment)
    grace = worker_grace(container_environment(container))
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period > grace + HAND_BACK_MARGIN_S, (
        f"terminationGracePeriodSeconds {period} leaves no time to hand samples back after "
        f"EVALFLEET_WORKER_GRACE {grace:g} s (+{HAND_BACK_MARGIN_S:g} s)")


def test_worker_probes_read_the_heartbeat_file_the_worker_writes():
    (container,) = pod_containers(manifest("Deployment", "evalfleet-worker"))
    args = container["args"]
    assert args[0] == "worker" and args[args.index("--heartbeat-file") + 1] == HEARTBEAT_FILE
    for probe in ("startupProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["evalfleet", "worker", "--probe"], command
        assert command[command.index("--heartbeat-file") + 1] == HEARTBEAT_FILE
    # The probe is the real command: it parses these arguments.
    from services.cli import main

    result = CliRunner().invoke(main, container["livenessProbe"]["exec"]["command"][1:])
    assert result.exit_code == 1 and "no heartbeat in" in result.output


def test_server_probes_are_ready_and_health_on_its_port():
    (container,) = pod_containers(manifest("Deployment", "evalfleet-server"))
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0" and "--no-auth" not in args
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    service = manifest("Service", "evalfleet-server")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == manifest("Deployment", "evalfleet-server")["spec"]["selector"]["matchLabels"]


def test_the_migration_job_runs_evalfleet_db_upgrade():
    job = manifest("Job", "evalfleet-migrate")
    (container,) = pod_containers(job)
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    from services.cli import main

    assert CliRunner().invoke(main, [*container["args"], "--help"]).exit_code == 0


@pytest.mark.parametrize(("path", "document"), [m for m in manifests() if m[1]["kind"] in WORKLOADS],
                         ids=ids([m for m in manifests() if m[1]["kind"] in WORKLOADS]))
def test_every_container_has_requests_limits_an_image_of_this_version_and_no_root(path, document):
    pod = document["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for container in pod_containers(document):
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"} and set(resources["limits"]) == {"cpu", "memory"}
        image, _, tag = container["image"].partition(":")
        assert image in ("evalfleet", "evalfleet-worker", "evalfleet-server") and tag == project_version()
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(("path", "document"), [m for m in manifests() if m[1]["kind"] in WORKLOADS],
                         ids=ids([m for m in manifests() if m[1]["kind"] in WORKLOADS]))
def test_credentials_come_only_from_the_secret(path, document):
    for container in pod_containers(document):
        for name, value in container_environment(container).items():
            inline = value is not None and (CREDENTIAL.search(name) or re.search(r"://[^/@\s]*:[^/@\s]*@", value))
            assert not inline, f"{path.name}: {name} is written inline; it belongs in the Secret"
        assert {"secretRef": {"name": "evalfleet"}} in container["envFrom"]


@pytest.mark.parametrize("file", ["keda-redis.yaml", "keda-rabbitmq.yaml"])
def test_keda_scales_the_worker_deployment_on_the_default_queue(file):
    scaled = manifest("ScaledObject", "evalfleet-worker", file)
    assert scaled["spec"]["scaleTargetRef"]["name"] == manifest("Deployment", "evalfleet-worker")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    queue = trigger["metadata"]["listName" if trigger["type"] == "redis" else "queueName"]
    assert queue == default_setting("queue")
    assert trigger["type"] == file.removeprefix("keda-").removesuffix(".yaml")
    auth = manifest("TriggerAuthentication", trigger["authenticationRef"]["name"], file)
    assert all(ref["name"] == "evalfleet-keda" for ref in auth["spec"]["secretTargetRef"])
    assert scaled["spec"]["minReplicaCount"] >= 1 and scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]


def test_the_hpa_scales_the_worker_deployment_on_the_queue_depth_metric():
    hpa = manifest("HorizontalPodAutoscaler", "evalfleet-worker")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "evalfleet-worker"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "evalfleet_queue_messages"
    assert metric["external"]["metric"]["selector"]["matchLabels"]["queue"] == default_setting("queue")
