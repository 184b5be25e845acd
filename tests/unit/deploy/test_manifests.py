"""The Kubernetes manifests (deploy/k8s), rendered with kustomize and validated offline.

kustomize is built from its Go module by `make tools` into .cache/tools/bin; kubernetes-validate
(the test extra) ships the Kubernetes JSON schemas, so nothing here needs a cluster. Beyond the
schemas, the tests hold the manifests to what the engine needs: every RISKENGINE_* they set is a
real setting with a valid value, credentials only in Secrets, probes on /health, a volume per
worker for its tables, resources everywhere, a PodDisruptionBudget over the workers.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from riskengine.settings import PREFIX, Secret, Settings

ROOT = Path(__file__).parents[3]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZE = ROOT / ".cache" / "tools" / "bin" / "kustomize"
#: What each rendering holds; the overlay adds the namespace, the Secret and the ServiceMonitor.
TARGETS = ("base", "overlays/local")
#: The oldest Kubernetes still maintained and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
#: Custom resources whose schemas are not Kubernetes' own.
CUSTOM_KINDS = {"ServiceMonitor"}
SETTING_NAMES = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
SECRET_SETTINGS = {
    PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if isinstance(f.default, Secret)
}


def kustomize() -> str:
    """The kustomize binary: `make tools` builds it; one on PATH does too."""
    if KUSTOMIZE.is_file():
        return str(KUSTOMIZE)
    found = shutil.which("kustomize")
    assert found, f"kustomize is missing: `make tools` builds it into {KUSTOMIZE.parent}"
    return found


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """`kustomize build deploy/k8s/<target>` as a tuple of objects."""
    result = subprocess.run(
        [kustomize(), "build", str(K8S / target)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(target: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(target) if o["kind"] == kind]


def one(target: str, kind: str, name_start: str) -> dict[str, Any]:
    (found,) = [o for o in objects(target, kind) if o["metadata"]["name"].startswith(name_start)]
    return found


def pod_templates(target: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in render(target):
        if workload["kind"] in ("Deployment", "StatefulSet"):
            yield workload["metadata"]["name"], workload["spec"]["template"]


def containers(target: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in pod_templates(target):
        for container in template["spec"]["containers"]:
            yield name, container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_is_valid_against_the_kubernetes_schemas(target: str, version: str):
    checked = set()
    for resource in render(target):
        if resource["kind"] in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(resource, version, strict=True)
            continue
        # strict: a property the schema does not know (a typo) is an error, not ignored.
        kubernetes_validate.validate(resource, version, strict=True)
        checked.add(resource["kind"])
    assert {"StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= checked


def test_the_validation_refuses_a_broken_manifest():
    statefulset = dict(one("base", "StatefulSet", "riskengine-worker"))
    broken = {**statefulset, "spec": {**statefulset["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    no_port = dict(one("base", "Service", "riskengine-worker"))
    no_port["spec"] = {**no_port["spec"], "ports": [{"name": "web"}]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(no_port, KUBERNETES_VERSIONS[-1], strict=True)


def environment(target: str) -> dict[str, str]:
    """Every RISKENGINE_* the rendering sets: ConfigMap, Secret and containers' env, merged."""
    found: dict[str, str] = {}
    for config in objects(target, "ConfigMap"):
        found.update(config.get("data", {}))
    for secret in objects(target, "Secret"):
        found.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        found.update(secret.get("stringData", {}))
    for _name, container in containers(target):
        for variable in container.get("env", []):
            found[variable["name"]] = variable.get("value", "10.0.0.1")  # fieldRef: a pod IP
    return {k: v for k, v in found.items() if k.startswith("RISKENGINE_")}


@pytest.mark.parametrize("target", TARGETS)
def test_every_riskengine_setting_the_manifests_set_exists_and_is_valid(target: str):
    env = environment(target)
    unknown = sorted(set(env) - SETTING_NAMES)
    assert not unknown, f"{target} sets variables riskengine does not know: {unknown}"
    settings = Settings.from_env(env)  # a bad value raises, naming the variable
    assert settings.worker_standby_replicas >= 1


def test_the_environment_check_catches_an_unknown_variable():
    env = {**environment("base"), "RISKENGINE_WORKER_STANDBYS": "1"}
    assert sorted(set(env) - SETTING_NAMES) == ["RISKENGINE_WORKER_STANDBYS"]


@pytest.mark.parametrize("target", TARGETS)
def test_credentials_come_from_secrets_only(target: str):
    for config in objects(target, "ConfigMap"):
        assert not set(config.get("data", {})) & SECRET_SETTINGS, "a credential in a ConfigMap"
    for _name, container in containers(target):
        # kustomize appends a content hash to the generated Secret's name (and to the references).
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert [re.sub(r"-[a-z0-9]{10}$", "", ref) for ref in refs] == ["riskengine-credentials"]
        for variable in container.get("env", []):
            assert variable["name"] not in SECRET_SETTINGS
    secrets = objects(target, "Secret")
    if target == "overlays/local":
        (secret,) = secrets
        assert set(secret["data"]) <= SETTING_NAMES
        assert "RISKENGINE_S3_SECRET_ACCESS_KEY" in secret["data"]


@pytest.mark.parametrize("target", TARGETS)
def test_workers_keep_their_tables_on_their_own_volume_with_standbys(target: str):
    workers = one(target, "StatefulSet", "riskengine-worker")
    spec = workers["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    datadir = {e["name"]: e.get("value") for e in container["env"]}["WORKER_DATADIR"]
    assert datadir.startswith(mounts[claim["metadata"]["name"]] + "/")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    settings = Settings.from_env(environment(target))
    # Listening on every interface (probes, port-forward), advertising the pod IP to the others.
    assert settings.worker_web_bind == "0.0.0.0"
    web_host = {e["name"]: e.get("valueFrom") for e in container["env"]}["RISKENGINE_WORKER_WEB_HOST"]
    assert web_host == {"fieldRef": {"fieldPath": "status.podIP"}}
    # Partitions bound the workers that do work; standbys need a second worker.
    assert 2 <= spec["replicas"] <= settings.topic_partitions
    assert settings.worker_standby_replicas >= 1
    # The dashboard reads every worker by its stable name.
    urls = settings.dashboard_worker_urls.split(",")
    service = spec["serviceName"]
    assert urls == [f"http://riskengine-worker-{i}.{service}:6066" for i in range(spec["replicas"])]


@pytest.mark.parametrize("target", TARGETS)
def test_probes_resources_and_security_of_every_container(target: str):
    health_paths = {"worker": "/health", "producer": "/health", "dashboard": "/api/health"}
    for name, container in containers(target):
        role = container["args"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == health_paths[role], (name, probe)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        # The image's HEALTHCHECK and the probe ask the same thing.
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HEALTHCHECK_URL"].endswith(
            f":{container['ports'][0]['containerPort']}{health_paths[role]}"
        )
    for name, template in pod_templates(target):
        pod = template["spec"]["securityContext"]
        # The image's user (docker/Dockerfile: USER 10001:10001).
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
    workers = one(target, "StatefulSet", "riskengine-worker")
    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    # Liveness tolerates a long recovery or rebalance; the startup probe covers the first recovery.
    live = worker["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 300
    start = worker["startupProbe"]
    assert start["httpGet"]["path"] == "/health" and start["periodSeconds"] * start["failureThreshold"] >= 600


@pytest.mark.parametrize("target", TARGETS)
def test_the_disruption_budget_and_the_services_select_the_right_pods(target: str):
    templates = dict(pod_templates(target))
    worker_labels = templates["riskengine-worker"]["metadata"]["labels"]
    budget = one(target, "PodDisruptionBudget", "riskengine-worker")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    for workload in ("riskengine-worker", "riskengine-producer", "riskengine-dashboard"):
        service = one(target, "Service", workload)
        labels = templates[workload]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), workload
        (container,) = templates[workload]["spec"]["containers"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    headless = one(target, "Service", "riskengine-worker")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("target", TARGETS)
def test_prometheus_finds_the_workers_metrics(target: str):
    template = dict(pod_templates(target))["riskengine-worker"]
    annotations = template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    monitors = objects(target, "ServiceMonitor")
    if target == "base":
        assert monitors == []  # a component: clusters without the operator's CRDs would refuse it
        return
    (monitor,) = monitors
    service = one(target, "Service", "riskengine-worker")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_local_overlay_puts_everything_in_its_namespace():
    namespaced = [o for o in render("overlays/local") if o["kind"] != "Namespace"]
    (namespace,) = objects("overlays/local", "Namespace")
    assert {o["metadata"]["namespace"] for o in namespaced} == {namespace["metadata"]["name"]}
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
