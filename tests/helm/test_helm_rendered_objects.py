"""What the rendered objects promise: network edges, hardened pods, gRPC probes, workloads per service."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import ROOT, SERVICES, VALUE_SETS, Rendering, component, selects

# The architecture's edges: who calls whom (docs/deploy.md). "test" is the helm test pod.
CALLEES = {
    "records": {"identity", "storage", "ledger", "consent", "audit"},
    "consent": {"ledger", "audit", "identity"},
    "identity": {"ledger"},
    "ledger": {"identity"},
    "audit": {"identity"},
    "storage": {"identity"},
}
PORTS = {"records": 7100, "identity": 7101, "storage": 7102, "ledger": 7103, "consent": 7104, "audit": 7105}


@pytest.fixture(scope="module")
def minimal() -> Rendering:
    return Rendering.of("minimal")


def _policy_for(rendering: Rendering, pod_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in rendering.of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], pod_labels)]


def _allowed_ingress_components(policy: dict[str, Any]) -> set[str]:
    sources = set()
    for rule in policy["spec"].get("ingress", []):
        if "from" not in rule:
            sources.add("*anyone*")
        for peer in rule.get("from", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            sources.add(labels.get("app.kubernetes.io/component", "*other*"))
    return sources


def _allowed_egress_components(policy: dict[str, Any]) -> dict[str, set[int]]:
    targets: dict[str, set[int]] = {}
    for rule in policy["spec"].get("egress", []):
        for peer in rule.get("to", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if "app.kubernetes.io/component" in labels:
                targets.setdefault(labels["app.kubernetes.io/component"], set()).update(
                    p["port"] for p in rule["ports"])
    return targets


def test_default_deny_covers_every_pod_of_the_release(minimal: Rendering) -> None:
    deny = minimal.get("NetworkPolicy", "cc-carechain-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for name, _ in minimal.pod_specs():
        labels = _pod_labels(minimal, name)
        assert selects(deny["spec"]["podSelector"], labels), f"{name} is not covered by default deny"


def _pod_labels(rendering: Rendering, name: str) -> dict[str, str]:
    for obj in rendering.workloads():
        if obj["metadata"]["name"] == name:
            return obj["spec"]["template"]["metadata"]["labels"]
    return rendering.get("Pod", name)["metadata"]["labels"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_accepts_exactly_its_callers(minimal: Rendering, service: str) -> None:
    for workload in minimal.workloads_of(service):
        policies = [p for p in _policy_for(minimal, workload["spec"]["template"]["metadata"]["labels"])
                    if p["spec"].get("ingress")]
        names = [p["metadata"]["name"] for p in policies]
        assert len(policies) == 1, f"{service}: expected one allow policy, got {names}"
        allowed = _allowed_ingress_components(policies[0])
        callers = {caller for caller, callees in CALLEES.items() if service in callees} | {"test"}
        if service == "records":
            assert allowed == {"*anyone*"}, "the gateway is the one service open to clients outside the release"
        else:
            assert allowed == callers, f"{service} accepts calls from {sorted(allowed)}, expected {sorted(callers)}"
        for rule in policies[0]["spec"]["ingress"]:
            assert [p["port"] for p in rule["ports"]] == [PORTS[service]]


def test_only_records_reaches_storage(minimal: Rendering) -> None:
    policy = minimal.get("NetworkPolicy", "cc-carechain-storage")
    assert _allowed_ingress_components(policy) == {"records", "test"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_calls_only_its_callees_and_dns(minimal: Rendering, service: str) -> None:
    policy = minimal.get("NetworkPolicy", f"cc-carechain-{service}")
    egress = _allowed_egress_components(policy)
    assert set(egress) == CALLEES[service]
    for callee, ports in egress.items():
        assert ports == {PORTS[callee]}, f"{service} -> {callee} on {ports}"
    other_rules = [r for r in policy["spec"]["egress"] if "to" not in r]
    assert [sorted((p["port"], p["protocol"]) for p in r["ports"]) for r in other_rules] == [
        [(53, "TCP"), (53, "UDP")]
    ], f"{service}: with embedded backends the only other egress is DNS"


def test_backend_egress_is_opened_only_for_the_services_that_use_it() -> None:
    rendering = Rendering.of("external-backends")
    expected_ports = {
        "identity": {53, 8200, 4317},  # Vault Transit for keys and signing
        "storage": {53, 8200, 9000, 4317},  # S3 for blobs
        "ledger": {53, 8200, 2379, 4317},  # etcd ordering
        "audit": {53, 8200, 2379, 4317},  # etcd store
        "consent": {53, 8200, 4317},
        "records": {53, 8200, 4317},
    }
    for service, ports in expected_ports.items():
        policy = rendering.get("NetworkPolicy", f"cc-carechain-{service}")
        backend_rules = [r for r in policy["spec"]["egress"]
                         if not any("podSelector" in peer and "namespaceSelector" not in peer
                                    for peer in r.get("to", []))]
        opened = {p["port"] for r in backend_rules for p in r["ports"]}
        assert opened == ports, f"{service} may reach {sorted(opened)}, expected {sorted(ports)}"
        assert all(r.get("to") for r in backend_rules), f"{service}: configured destinations must be kept"


def test_gateway_can_be_limited_to_the_ingress_controller() -> None:
    rendering = Rendering.of("tls")
    policy = rendering.get("NetworkPolicy", "cc-carechain-records")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    assert all("namespaceSelector" in p or p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
               for p in peers)
    consent = rendering.get("NetworkPolicy", "cc-carechain-consent")
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "patient-portal"}}} in (
        consent["spec"]["ingress"][0]["from"])


def test_network_policies_can_be_turned_off() -> None:
    assert Rendering.of("no-networkpolicy").of_kind("NetworkPolicy") == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_is_hardened(value_set: str) -> None:
    rendering = Rendering.of(value_set)
    for name, spec in rendering.pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, f"{name}: root filesystem is writable"
            assert ctx["allowPrivilegeEscalation"] is False, f"{name}: may escalate privileges"
            assert ctx["privileged"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, f"{name}: keeps capabilities"
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["resources"]["requests"], f"{name}: no resource requests"


def test_service_account_tokens_are_mounted_only_for_vault_kubernetes_login() -> None:
    for _, spec in Rendering.of("minimal").pod_specs():
        assert spec["automountServiceAccountToken"] is False
    for name, spec in Rendering.of("external-backends").pod_specs():
        assert spec["automountServiceAccountToken"] is (not name.endswith("-test")), name


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_service_is_probed_with_native_grpc_health_on_its_serving_port(value_set: str) -> None:
    rendering = Rendering.of(value_set)
    for workload in rendering.workloads():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        port = container["ports"][0]
        assert port["name"] == "grpc"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port["containerPort"]}, (
                f"{workload['metadata']['name']}: {probe} is not native gRPC health on the serving port")
        env = rendering.container_env(workload)
        assert env["CARECHAIN_LISTEN_ADDRESS"] == f"0.0.0.0:{port['containerPort']}"


def test_services_route_to_the_serving_port_of_their_pods(minimal: Rendering) -> None:
    for service_obj in minimal.of_kind("Service"):
        targets = [w for w in minimal.workloads() if selects({"matchLabels": service_obj["spec"]["selector"]},
                                                              w["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"Service {service_obj['metadata']['name']} selects no pod"
        assert service_obj["spec"]["ports"][0]["targetPort"] == "grpc"


def test_peer_addresses_are_the_service_dns_names(minimal: Rendering) -> None:
    records = minimal.workloads_of("records")[0]
    env = minimal.container_env(records)
    for peer in ("identity", "storage", "ledger", "consent", "audit"):
        service = minimal.get("Service", f"cc-carechain-{peer}")
        port = service["spec"]["ports"][0]["port"]
        assert env[f"CARECHAIN_{peer.upper()}_ADDRESS"] == f"cc-carechain-{peer}.carechain.svc:{port}"


def test_workload_kinds_match_the_architecture(minimal: Rendering) -> None:
    kinds = {(component(w["spec"]["template"]), w["kind"]) for w in minimal.workloads()}
    assert kinds == {("records", "Deployment"), ("consent", "Deployment"), ("identity", "Deployment"),
                     ("storage", "Deployment"), ("ledger", "StatefulSet"), ("audit", "StatefulSet")}
    for statefulset in minimal.of_kind("StatefulSet"):
        claims = statefulset["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["data"], statefulset["metadata"]["name"]
    assert {p["metadata"]["name"] for p in minimal.of_kind("PodDisruptionBudget")} == {
        f"cc-carechain-{s}" for s in SERVICES}
    assert minimal.of_kind("Secret") == [], "the chart never renders secrets"


def test_ha_runs_one_validator_per_member_with_its_own_volume_and_key() -> None:
    rendering = Rendering.of("ha")
    validators = rendering.workloads_of("ledger")
    assert [v["metadata"]["name"] for v in validators] == [
        "cc-carechain-ledger-st-example", "cc-carechain-ledger-north-clinic",
        "cc-carechain-ledger-city-hospital", "cc-carechain-ledger-lab-partners"]
    keys = set()
    for validator in validators:
        assert validator["spec"]["replicas"] == 1
        assert validator["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
        (key_volume,) = [v for v in validator["spec"]["template"]["spec"]["volumes"] if v["name"] == "signing-key"]
        keys.add(key_volume["secret"]["secretName"])
        assert rendering.container_env(validator)["CARECHAIN_ORDERER"] == "etcd"
    assert len(keys) == 4, "each validator signs with its own key"
    ledger = rendering.get("Service", "cc-carechain-ledger")
    assert ledger["spec"]["selector"]["carechain.io/validator"] == "st-example"
    assert {h["spec"]["scaleTargetRef"]["name"] for h in rendering.of_kind("HorizontalPodAutoscaler")} == {
        "cc-carechain-records", "cc-carechain-consent", "cc-carechain-storage"}
    identity = rendering.get("Deployment", "cc-carechain-identity")
    assert identity["spec"]["replicas"] == 1 and identity["spec"]["strategy"] == {"type": "Recreate"}, (
        "keyBackend=local: one identity pod owns the keyring volume")
    for deployment in rendering.of_kind("Deployment"):
        assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"] == (
            "DoNotSchedule")
        if component(deployment["spec"]["template"]) in ("records", "consent", "storage"):
            assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_secrets_are_referenced_never_inlined() -> None:
    rendering = Rendering.of("external-backends")
    storage = rendering.workloads_of("storage")[0]
    env = {e["name"]: e for e in storage["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CARECHAIN_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "carechain-minio", "key": "rootUser"}
    assert env["CARECHAIN_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "carechain-minio", "key": "rootPassword"}
    for config_map in rendering.of_kind("ConfigMap"):
        for key in config_map.get("data", {}):
            assert not key.endswith(("_SECRET_KEY", "_ACCESS_KEY", "_TOKEN")), f"{key} in a ConfigMap"


def test_vault_roles_are_per_service() -> None:
    rendering = Rendering.of("external-backends")
    # `carechain admin vault-bootstrap` binds role carechain-<service> to service account carechain-<service>.
    for service in SERVICES:
        (workload, *_) = rendering.workloads_of(service)
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == f"carechain-{service}"
        rendering.get("ServiceAccount", f"carechain-{service}")
    roles = {s: rendering.container_env(rendering.workloads_of(s)[0])["CARECHAIN_VAULT_KUBERNETES_ROLE"]
             for s in SERVICES}
    assert roles == {"identity": "carechain-identity", "storage": "carechain-storage", "ledger": "carechain-ledger",
                     "consent": "carechain-consent", "audit": "carechain-audit", "records": "carechain-gateway"}
    validator = rendering.workloads_of("ledger")[0]
    assert rendering.container_env(validator)["CARECHAIN_SIGNING_KEY_NAME"] == "validator-st-example"


def test_tls_certificate_and_ingress_for_the_gateway() -> None:
    rendering = Rendering.of("tls")
    certificate = rendering.get("Certificate", "cc-carechain-records")
    assert certificate["spec"]["dnsNames"] == ["carechain.hospital-network.example"]
    assert certificate["spec"]["issuerRef"]["name"] == "letsencrypt-prod"
    ingress = rendering.get("Ingress", "cc-carechain-records")
    assert ingress["spec"]["tls"] == [{"hosts": ["carechain.hospital-network.example"],
                                       "secretName": certificate["spec"]["secretName"]}]
    existing = Rendering.of("tls", "--set", "tls.source=existingSecret", "--set", "tls.secretName=my-tls")
    assert existing.of_kind("Certificate") == []
    assert existing.get("Ingress", "cc-carechain-records")["spec"]["tls"][0]["secretName"] == "my-tls"


def test_helm_test_pod_is_a_test_hook() -> None:
    rendering = Rendering.of("embedded")
    (pod,) = rendering.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"] == ["--operator-key", "/etc/carechain/operator/operator.pem"]
    assert Rendering.of("no-networkpolicy").of_kind("Pod") == []


def test_image_and_chart_agree_on_user_and_command(minimal: Rendering) -> None:
    """There is no Docker engine here: check the Dockerfile's promises the chart relies on."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[1].endswith(" AS runtime"), "multi-stage: build, then a clean runtime"
    runtime = dockerfile.split(stages[1], 1)[1]
    assert "ARG UID=10001" in runtime and "USER ${UID}:${UID}" in runtime
    assert 'ENTRYPOINT ["carechain"]' in runtime
    assert not any(tool in runtime for tool in ("gcc", "build-essential", "apt-get install")), "build tools in runtime"
    for _, spec in minimal.pod_specs():
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["containers"][0]["command"][0] in ("carechain", "python")
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored[0] == "*" and {"!services/", "!pyproject.toml", "!README.md"} <= set(ignored)
