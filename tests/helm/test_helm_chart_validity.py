"""The chart lints strictly, renders valid Kubernetes objects for 1.29 and 1.34, and refuses bad values."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import kubernetes_validate
import pytest
from fake_kube_api import fake_kube_api
from helm_chart import CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS, Rendering, run_helm, template, value_file


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_passes_strict_lint(value_set: str) -> None:
    result = run_helm("lint", str(CHART), "--strict", "--values", str(value_file(value_set)))
    assert result.returncode == 0, f"helm lint --strict with {value_set}:\n{result.stdout}\n{result.stderr}"


def _validate_certificate(obj: dict[str, Any]) -> None:
    """cert-manager's Certificate is a CRD without a bundled schema: check the fields cert-manager requires."""
    assert obj["apiVersion"] == "cert-manager.io/v1"
    spec = obj["spec"]
    assert spec["secretName"] and spec["dnsNames"], "a Certificate needs secretName and dnsNames"
    assert set(spec["issuerRef"]) <= {"name", "kind", "group"} and spec["issuerRef"]["name"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_are_valid_for_kubernetes(value_set: str, kube_version: str) -> None:
    rendering = Rendering.of(value_set, kube_version=kube_version)
    assert rendering.objects, "nothing rendered"
    for obj in rendering.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Certificate":
            _validate_certificate(obj)
            continue
        try:
            validated_against = kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(part) for part in exc.path)
            pytest.fail(f"{value_set}: {name} is invalid for Kubernetes {kube_version} at {path}: {exc.message}")
        assert validated_against == kube_version.rsplit(".", 1)[0], f"{name}: validated against {validated_against}"


def test_schemas_for_both_kubernetes_versions_are_bundled() -> None:
    versions = kubernetes_validate.utils.all_versions()
    assert {"1.29.0", "1.34.0"} <= set(versions), versions


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (["--set", "ledger.orderer=raft"], "/ledger/orderer"),
        (["--set", "records.replicaCount=3"], "replicaCount"),
        (["--set", "records.replicas=three"], "/records/replicas"),
        (["--set", "records.port=80"], "/records/port"),
        (["--set", "signing.backend=hsm"], "/signing/backend"),
        (["--set", "ledger.validators[0].name=Org_One"], "/ledger/validators/0/name"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "records.resources.requests.memory=lots"], "/records/resources/requests/memory"),
    ],
)
def test_a_wrong_value_fails_with_a_message_naming_it(settings: list[str], expected: str) -> None:
    result = template("minimal", *settings)
    assert result.returncode != 0, f"{settings} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert expected in result.stderr, f"the error does not name {expected}:\n{result.stderr}"


@pytest.mark.parametrize(
    ("value_set", "settings", "expected"),
    [
        (None, [], "trustBundle: set exactly one of"),
        ("minimal", ["--set", "trustBundle.existingSecret=also"], "trustBundle: set exactly one of"),
        ("minimal", ["--set", "signing.backend=vault"], "vault.address: required"),
        ("minimal", ["--set", "storage.blobBackend=s3"], "s3.endpoint: required"),
        ("minimal", ["--set", "ledger.orderer=etcd"], "etcd.endpoints: required"),
        ("minimal", ["--set", "storage.replicas=3"], "storage.replicas=1"),
        ("minimal", ["--set", "identity.autoscaling.enabled=true"], "identity.autoscaling.enabled=false"),
        ("minimal", ["--set", "identity.persistence.enabled=false", "--set", "identity.replicas=2"],
         "use identity.keyBackend=vault to run more than one replica"),
        ("minimal", ["--set", "otel.tracesExporter=otlp"], "otel.endpoint: required"),
        ("minimal", ["--set", "tls.enabled=true"], "set ingress.enabled=true"),
        ("ha", ["--set", "ledger.validators[1].name=st-example"], 'the name "st-example" is used twice'),
    ],
)
def test_inconsistent_values_fail_with_a_message_saying_what_to_set(
    value_set: str | None, settings: list[str], expected: str
) -> None:
    result = template(value_set, *settings)
    assert result.returncode != 0, f"{value_set} {settings} was accepted"
    assert expected in result.stderr, f"the error does not say {expected!r}:\n{result.stderr}"


def _dry_run_install(directory: pathlib.Path, value_set: str, *settings: str) -> tuple[int, str, str]:
    """`helm install --dry-run=client` against a discovery-only API (no cluster here)."""
    with fake_kube_api(directory) as kubeconfig:
        result = run_helm("install", RELEASE, str(CHART), "--dry-run=client", "--disable-openapi-validation",
                          "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE,
                          "--values", str(value_file(value_set)), *settings)
    return result.returncode, result.stdout, result.stderr


def test_helm_install_refuses_a_wrong_value_before_anything_is_sent(tmp_path: pathlib.Path) -> None:
    code, _, stderr = _dry_run_install(tmp_path, "minimal", "--set", "audit.store=postgres")
    assert code != 0
    assert "at '/audit/store': value must be one of 'sqlite', 'etcd'" in stderr, stderr


def test_schema_rejects_unknown_keys_everywhere() -> None:
    """additionalProperties: false on every object of the schema, so a misspelt key never passes silently."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path)
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}/{index}")

    walk(schema, "#")
    assert not loose, f"objects accepting unknown keys: {loose}"


def test_notes_tell_how_to_reach_the_gateway_and_check_health(tmp_path: pathlib.Path) -> None:
    code, stdout, stderr = _dry_run_install(tmp_path, "embedded")
    assert code == 0, stderr
    notes = stdout.split("NOTES:", 1)[1]
    assert "port-forward service/cc-carechain-records 7100:7100" in notes
    assert "grpcurl -plaintext localhost:7100 grpc.health.v1.Health/Check" in notes
    assert "helm test cc -n carechain --logs" in notes
    assert "stores and reads back one synthetic record" in notes


def test_notes_point_at_the_ingress_when_there_is_one(tmp_path: pathlib.Path) -> None:
    code, stdout, stderr = _dry_run_install(tmp_path, "tls")
    assert code == 0, stderr
    notes = stdout.split("NOTES:", 1)[1]
    assert "grpcs://carechain.hospital-network.example:443" in notes
    assert "grpcurl carechain.hospital-network.example:443 grpc.health.v1.Health/Check" in notes
    assert "round trip is skipped until tests.operatorKeySecret.name" in notes
