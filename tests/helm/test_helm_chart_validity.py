"""The chart lints strictly, renders valid Kubernetes objects for 1.29 and 1.34, and refuses bad values."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import kubernetes_validate
import pytest
from fake_kube_api import fake_kube_api
from helm_chart import CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS, Rendering, run_helm, template, value_file


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_passes_strict_lint(value_set: str) -> None:
    result = run_helm("lint", str(CHART), "--strict", "--values", str(value_file(value_set)))
    assert result.returncode == 0, f"helm lint --strict with {value_set}:\n{result.stdout}\n{result.stderr}"


# cert-manager v1 enums (Certificate CRD) for the fields the chart sets.
CERT_MANAGER_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
    "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
    "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
CERT_MANAGER_SPEC_FIELDS = {"secretName", "commonName", "dnsNames", "usages", "duration", "renewBefore",
                            "privateKey", "issuerRef"}


def _validate_certificate(obj: dict[str, Any]) -> None:
    """cert-manager's Certificate is a CRD without a bundled schema: check the fields cert-manager requires."""
    assert obj["apiVersion"] == "cert-manager.io/v1"
    spec = obj["spec"]
    name = obj["metadata"]["name"]
    assert set(spec) <= CERT_MANAGER_SPEC_FIELDS, f"{name}: unexpected fields {set(spec) - CERT_MANAGER_SPEC_FIELDS}"
    assert spec["secretName"], f"{name}: a Certificate needs secretName"
    assert spec.get("dnsNames") or spec.get("commonName"), f"{name}: a Certificate needs a subject or SANs"
    assert len(spec.get("commonName", "")) <= 64, f"{name}: commonName longer than 64 characters"
    assert all(0 < len(dns) <= 253 for dns in spec.get("dnsNames", [])), name
    assert set(spec.get("usages", [])) <= CERT_MANAGER_USAGES, f"{name}: unknown usages {spec['usages']}"
    key = spec["privateKey"]
    assert key["algorithm"] in ("RSA", "ECDSA", "Ed25519") and key["rotationPolicy"] in ("Never", "Always"), name
    assert key.get("encoding", "PKCS1") in ("PKCS1", "PKCS8"), name
    for field in ("duration", "renewBefore"):
        assert re.fullmatch(r"[0-9]+(h|m|s)", spec[field]), f"{name}: {field} {spec[field]!r}"
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
        (["--set", "tls.source=vault"], "/tls/source"),
        (["--set", "tls.mutual=sometimes"], "/tls/mutual"),
        (["--set", "tls.gatewayMutual=no"], "/tls/gatewayMutual"),
        (["--set", "tls.healthPort=80"], "/tls/healthPort"),
        (["--set", "tls.caBundle.kind=Vault"], "/tls/caBundle/kind"),
        (["--set", "tls.clientCertificates[0]=Ingress_Nginx"], "/tls/clientCertificates/0"),
        (["--set", "tls.secretNames.gateway=x"], "additional properties 'gateway' not allowed"),
        # The gateway's Ingress certificate moved to ingress.tls: the old keys are refused, not ignored.
        (["--set", "tls.secretName=my-tls"], "at '/tls': additional properties 'secretName' not allowed"),
        (["--set", "ingress.tls.source=acme"], "/ingress/tls/source"),
        (["--set", "networkPolicy.probeFrom[0].nodeSelector.x=y"], "/networkPolicy/probeFrom/0"),
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
        ("minimal", ["--set", "audit.replicas=2"], "use audit.store=etcd to run more than one replica"),
        ("minimal", ["--set", "otel.tracesExporter=otlp"], "otel.endpoint: required"),
        ("minimal", ["--set", "ingress.tls.enabled=true"], "set ingress.enabled=true"),
        ("minimal", ["--set", "ingress.enabled=true", "--set", "ingress.tls.enabled=true", "--set",
                     "ingress.tls.source=certManager"], "ingress.tls.certManager.issuerRef.name: required"),
        ("minimal", ["--set", "tls.enabled=true"],
         "tls.certManager.issuerRef.name: required when tls.source=certManager"),
        ("tls", ["--set", "tls.source=existingSecret"], "tls.clientCertificates: the chart issues client certificates"),
        ("tls", ["--set", "tls.healthPort=7103"], "tls.healthPort: 7103 is ledger.port"),
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

    # `global` is shared with a parent chart, which may put its own keys there (Helm passes them down).
    shared = {"#/properties/global"}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False
                    and path not in shared):
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
    assert "Every service serves TLS (mutual: callers need a client certificate of the CA in ca.crt, except at " \
        "the gateway)" in notes
    assert "WARNING" not in notes


def test_notes_say_how_to_check_health_when_services_serve_mutual_tls(tmp_path: pathlib.Path) -> None:
    code, stdout, stderr = _dry_run_install(tmp_path, "embedded-tls")
    assert code == 0, stderr
    notes = stdout.split("NOTES:", 1)[1]
    assert ("grpcurl -cacert ca.crt -cert tls.crt -key tls.key -authority cc-carechain-records.carechain.svc "
            "localhost:7100 grpc.health.v1.Health/Check") in notes
    assert "port-forward deployment/cc-carechain-records 7180:7180" in notes
    assert "grpcurl -plaintext localhost:7180 grpc.health.v1.Health/Check" in notes
    assert "grpcurl -plaintext localhost:7100" not in notes


def test_notes_warn_when_the_ingress_would_proxy_plaintext_to_a_tls_gateway(tmp_path: pathlib.Path) -> None:
    code, stdout, stderr = _dry_run_install(
        tmp_path, "tls", "--set", "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/backend-protocol=GRPC")
    assert code == 0, stderr
    notes = stdout.split("NOTES:", 1)[1]
    assert "backend-protocol: GRPC (plaintext). Use GRPCS" in notes


def test_notes_warn_when_the_ingress_controller_cannot_present_the_client_certificate_the_gateway_demands(
    tmp_path: pathlib.Path,
) -> None:
    code, stdout, stderr = _dry_run_install(tmp_path, "tls", "--set", "tls.gatewayMutual=true")
    assert code == 0, stderr
    notes = stdout.split("NOTES:", 1)[1]
    assert "ingress-nginx cannot present to a gRPC backend" in notes and "Set tls.gatewayMutual=false" in notes
