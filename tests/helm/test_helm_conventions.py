"""Chart conventions (Bitnami style), rendered from tests/helm/values/conventions.yaml.

(The same value set is linted, validated against the strict Kubernetes schemas and loaded into the
services' settings classes by the other chart tests, as every value set is.)
"""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import Rendering, component

SERVICES = ("identity", "storage", "ledger", "consent", "audit", "records")


@pytest.fixture(scope="module")
def conventions() -> Rendering:
    return Rendering.of("conventions")


def _main_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return pod_spec["containers"][0]


def test_image_comes_from_the_global_registry(conventions: Rendering) -> None:
    images = {_main_container(spec)["image"] for _, spec in conventions.pod_specs()}
    assert images == {"mirror.registry.example.org:5000/carechain/carechain:0.1.0"}
    own_registry = Rendering.of("conventions", "--set", "global.imageRegistry=")
    assert {_main_container(s)["image"] for _, s in own_registry.pod_specs()} == {
        "registry.example.org/carechain/carechain:0.1.0"}
    default = Rendering.of("minimal", "--set", "image.digest=sha256:" + "ab" * 32)
    assert {_main_container(s)["image"] for _, s in default.pod_specs()} == {"carechain/carechain@sha256:" + "ab" * 32}


def test_uids_can_be_left_to_the_platform_and_the_rest_of_the_hardening_stays(conventions: Rendering) -> None:
    for name, spec in conventions.pod_specs():
        pod = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy"} & set(pod), name
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = _main_container(spec)["securityContext"]
        assert "runAsUser" not in container, name
        assert container["readOnlyRootFilesystem"] is True and container["capabilities"] == {"drop": ["ALL"]}, name
        assert container["allowPrivilegeEscalation"] is False, name
    consent = conventions.workloads_of("consent")[0]["spec"]["template"]["spec"]
    assert consent["securityContext"]["supplementalGroups"] == [5000]
    default = dict(Rendering.of("minimal").pod_specs())
    assert {spec["securityContext"]["runAsUser"] for spec in default.values()} == {10001}


def test_common_labels_and_annotations_are_on_every_object(conventions: Rendering) -> None:
    for obj in conventions.objects:
        metadata = obj["metadata"]
        assert metadata["labels"]["cost-centre"] == "health-it", (obj["kind"], metadata["name"])
        assert metadata["annotations"]["owner.example.org/team"] == "platform", (obj["kind"], metadata["name"])
    pvc = Rendering.of("minimal", "--set", "commonAnnotations.a=b").get("PersistentVolumeClaim",
                                                                       "cc-carechain-identity-data")
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep", "a": "b"}


def test_extra_variables_secrets_volumes_and_containers(conventions: Rendering) -> None:
    for workload in conventions.workloads():
        service = component(workload["spec"]["template"])
        spec = workload["spec"]["template"]["spec"]
        container = _main_container(spec)
        env = {item["name"]: item for item in container["env"]}
        assert env["CARECHAIN_MAX_WORKERS"]["value"] == "32"
        assert env["HTTPS_PROXY"]["valueFrom"] == {"configMapKeyRef": {"name": "cc-proxy", "key": "https"}}  # tpl
        assert {"secretRef": {"name": "carechain-extra-env"}} in container["envFrom"]
        assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca-bundle"}} in spec["volumes"]
        assert {"name": "corporate-ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in container[
            "volumeMounts"]
        names = [c["name"] for c in spec["containers"]]
        if service == "records":
            assert env["CARECHAIN_MAX_RECORD_BYTES"]["value"] == "8388608"
            assert names == ["records", "log-shipper"]
            (init,) = spec["initContainers"]
            assert init["command"][-1] == "until nc -z cc-carechain-ledger 7103; do sleep 2; done"
            assert init["image"] == "mirror.registry.example.org:5000/library/busybox:1.37"
        else:
            assert names == [service] and "initContainers" not in spec


def test_probe_timing_and_update_strategies(conventions: Rendering) -> None:
    for workload in conventions.workloads():
        service = component(workload["spec"]["template"])
        container = _main_container(workload["spec"]["template"]["spec"])
        assert container["startupProbe"]["periodSeconds"] == 5 and container["startupProbe"][
            "failureThreshold"] == 120
        assert container["livenessProbe"]["timeoutSeconds"] == 5 and container["livenessProbe"]["periodSeconds"] == 10
        assert container["readinessProbe"]["periodSeconds"] == (3 if service == "records" else 5)
        assert set(container["readinessProbe"]["grpc"]) == {"port"}
    records = conventions.get("Deployment", "cc-carechain-records")
    assert records["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2,
                                                                                     "maxUnavailable": 0}}
    assert conventions.get("StatefulSet", "cc-carechain-audit")["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert {v["spec"]["updateStrategy"]["type"] for v in conventions.workloads_of("ledger")} == {"RollingUpdate"}


def test_ca_bundles_for_the_otlp_collector_and_etcd(conventions: Rendering) -> None:
    for workload in conventions.workloads():
        service = component(workload["spec"]["template"])
        spec = workload["spec"]["template"]["spec"]
        env = conventions.container_env(workload)
        assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == "/etc/carechain/ca/otel/ca.crt"
        assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "false"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["otel-ca"]["configMap"] == {"name": "corporate-ca-bundle",
                                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        if service in ("ledger", "audit"):
            sources = volumes["etcd-credentials"]["projected"]["sources"]
            assert {"configMap": {"name": "corporate-ca-bundle", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in (
                sources)
            assert env["CARECHAIN_ETCD_CA_FILE"] == "/etc/carechain/etcd/ca.crt"
