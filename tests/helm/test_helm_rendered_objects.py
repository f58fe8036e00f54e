"""What the rendered objects promise: network edges, hardened pods, gRPC probes, workloads per service."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import ROOT, SERVICES, VALUE_SETS, Rendering, component, selects

# The architecture's edges: who calls whom (docs/deploy.md). "test" is the helm test pod.
CALLEES = {
    "records": {"identity", "storage", "ledger", "consent", "audit"},
    "consent": {"ledger", "audit", "identity"},
    "identity": {"ledger", "consent"},
    "ledger": {"identity"},
    "audit": {"identity", "ledger", "consent"},  # consent: guardians reading an accounting
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
        # runAsUser may be left to the platform (OpenShift assigns one from the namespace's range), never 0.
        assert pod["runAsNonRoot"] is True and pod.get("runAsUser") != 0, name
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
def test_every_service_is_probed_with_native_grpc_health_on_its_probe_port(value_set: str) -> None:
    """Plaintext: the serving port. TLS: the plaintext health-only port (kubelet gRPC probes cannot speak TLS)."""
    rendering = Rendering.of(value_set)
    for workload in rendering.service_workloads():
        name = workload["metadata"]["name"]
        container = workload["spec"]["template"]["spec"]["containers"][0]
        port, *health = container["ports"]
        assert port["name"] == "grpc"
        env = rendering.container_env(workload)
        assert env["CARECHAIN_LISTEN_ADDRESS"] == f"0.0.0.0:{port['containerPort']}"
        if _tls_on(rendering):
            assert [p["name"] for p in health] == ["health"], name
            probe_port = health[0]["containerPort"]
            assert env["CARECHAIN_HEALTH_LISTEN_ADDRESS"] == f"0.0.0.0:{probe_port}", name
            assert probe_port != port["containerPort"]
        else:
            assert health == [] and "CARECHAIN_HEALTH_LISTEN_ADDRESS" not in env, name
            probe_port = port["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": probe_port}, (
                f"{name}: {probe} is not native gRPC health on port {probe_port}")


# --- TLS between the services --------------------------------------------------------------------

TLS_VALUE_SETS = ("tls", "tls-existing-secrets", "embedded-tls")


def _tls_on(rendering: Rendering) -> bool:
    return any("CARECHAIN_TLS_CERT_FILE" in c.get("data", {}) for c in rendering.of_kind("ConfigMap"))


def _tls_sources(spec: dict[str, Any]) -> dict[str, Any]:
    """{file name in the tls volume: (kind, object name, key)} of a pod."""
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    assert volume["projected"]["defaultMode"] == 0o440
    files = {}
    for source in volume["projected"]["sources"]:
        ((kind, ref),) = source.items()
        for item in ref["items"]:
            files[item["path"]] = (kind, ref["name"], item["key"])
    return files


def test_without_tls_nothing_of_it_is_rendered(minimal: Rendering) -> None:
    assert minimal.of_kind("Certificate") == []
    for name, spec in minimal.pod_specs():
        assert not [v for v in spec["volumes"] if v["name"] == "tls"], name
    for config_map in minimal.of_kind("ConfigMap"):
        assert not [k for k in config_map.get("data", {}) if k.startswith(("CARECHAIN_TLS", "CARECHAIN_HEALTH"))]


@pytest.mark.parametrize("value_set", TLS_VALUE_SETS)
def test_with_tls_every_service_serves_and_calls_with_its_own_mounted_certificate(value_set: str) -> None:
    rendering = Rendering.of(value_set)
    for workload in rendering.workloads():
        service = component(workload["spec"]["template"])
        spec = workload["spec"]["template"]["spec"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls"]
        assert mount["readOnly"] is True
        env = rendering.container_env(workload)
        assert env["CARECHAIN_TLS_CERT_FILE"] == mount["mountPath"] + "/tls.crt"
        assert env["CARECHAIN_TLS_KEY_FILE"] == mount["mountPath"] + "/tls.key"
        assert env["CARECHAIN_TLS_CA_FILE"] == mount["mountPath"] + "/ca.crt"
        mutual = "false" if (value_set, service) == ("tls", "records") else "true"  # tls.yaml: gatewayMutual=false
        assert env["CARECHAIN_TLS_REQUIRE_CLIENT_CERT"] == mutual, f"{value_set}: {service}"
        files = _tls_sources(spec)
        assert set(files) == {"tls.crt", "tls.key", "ca.crt"}
        (secret,) = {name for kind, name, _ in files.values() if kind == "secret" and name != "carechain-ca-bundle"}
        assert files["tls.crt"] == ("secret", secret, "tls.crt") and files["tls.key"] == ("secret", secret, "tls.key")
        expected = {"tls-existing-secrets": {"records": "gateway-tls", "ledger": "ledger-validators-tls"}}.get(
            value_set, {}).get(service, f"cc-carechain-{service}-tls")
        assert secret == expected, f"{value_set}: {service} mounts {secret}"


def test_mutual_tls_can_be_turned_off_keeping_tls() -> None:
    rendering = Rendering.of("embedded-tls", "--set", "tls.mutual=false")
    for workload in rendering.workloads():
        env = rendering.container_env(workload)
        assert env["CARECHAIN_TLS_REQUIRE_CLIENT_CERT"] == "false"
        assert env["CARECHAIN_TLS_CERT_FILE"] and env["CARECHAIN_TLS_CA_FILE"], "still TLS, and still verifying peers"


def test_cert_manager_issues_one_certificate_per_service_for_every_service_name_that_reaches_it() -> None:
    rendering = Rendering.of("tls")
    certificates = {c["spec"]["secretName"]: c for c in rendering.of_kind("Certificate")}
    for service in SERVICES:
        certificate = certificates.pop(f"cc-carechain-{service}-tls")
        spec = certificate["spec"]
        assert spec["issuerRef"] == {"name": "carechain-ca", "kind": "Issuer", "group": "cert-manager.io"}
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert (spec["duration"], spec["renewBefore"]) == ("720h", "240h")
        pods = [w["spec"]["template"]["metadata"]["labels"] for w in rendering.workloads_of(service)]
        reaching = [obj["metadata"]["name"] for obj in rendering.of_kind("Service")
                    if any(selects({"matchLabels": obj["spec"]["selector"]}, labels) for labels in pods)]
        assert reaching, service
        expected = {f"{name}{suffix}" for name in reaching
                    for suffix in ("", ".carechain", ".carechain.svc", ".carechain.svc.cluster.local")}
        assert set(spec["dnsNames"]) == expected, f"{service}: SANs {spec['dnsNames']}"
    test_client = certificates.pop("cc-carechain-test-tls")["spec"]
    ingress_client = certificates.pop("cc-carechain-client-patient-portal-tls")["spec"]
    for client in (test_client, ingress_client):
        assert client["usages"] == ["digital signature", "client auth"] and "dnsNames" not in client
    assert set(certificates) == {"carechain-gateway-tls"}, "and the gateway's Ingress certificate"


def test_validator_names_are_in_the_ledger_certificate() -> None:
    rendering = Rendering.of("ha", "--set", "tls.enabled=true", "--set", "tls.certManager.issuerRef.name=ca")
    dns_names = rendering.get("Certificate", "cc-carechain-ledger-tls")["spec"]["dnsNames"]
    for validator in ("st-example", "north-clinic", "city-hospital", "lab-partners"):
        assert f"cc-carechain-ledger-{validator}.carechain.svc" in dns_names


def test_existing_secrets_and_a_separate_ca_bundle_need_no_cert_manager() -> None:
    rendering = Rendering.of("tls-existing-secrets")
    assert rendering.of_kind("Certificate") == []
    for name, spec in rendering.pod_specs():
        assert _tls_sources(spec)["ca.crt"] == ("configMap", "carechain-ca-bundle", "ca.pem"), name
    (pod,) = rendering.of_kind("Pod")
    assert _tls_sources(pod["spec"])["tls.crt"] == ("secret", "carechain-helm-test-client", "tls.crt")
    records = rendering.get("Deployment", "cc-carechain-records")
    assert records["metadata"]["annotations"] == {
        "secret.reloader.stakater.com/reload": "gateway-tls",
        "configmap.reloader.stakater.com/reload": "carechain-ca-bundle"}


def test_helm_test_pod_calls_with_its_own_client_certificate() -> None:
    rendering = Rendering.of("embedded-tls")
    (pod,) = rendering.of_kind("Pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    assert {k: v for k, v in env.items() if k.startswith("CARECHAIN_TLS")} == {
        "CARECHAIN_TLS_CA_FILE": mount["mountPath"] + "/ca.crt",
        "CARECHAIN_TLS_CERT_FILE": mount["mountPath"] + "/tls.crt",
        "CARECHAIN_TLS_KEY_FILE": mount["mountPath"] + "/tls.key"}
    assert _tls_sources(pod["spec"])["tls.key"] == ("secret", "cc-carechain-test-tls", "tls.key")
    certificate = rendering.get("Certificate", "cc-carechain-test-tls")
    assert "client auth" in certificate["spec"]["usages"]
    disabled = Rendering.of("embedded-tls", "--set", "tests.enabled=false")
    assert [c["metadata"]["name"] for c in disabled.of_kind("Certificate") if "test" in c["metadata"]["name"]] == []


@pytest.mark.parametrize("value_set", TLS_VALUE_SETS)
def test_the_plaintext_health_port_is_on_no_service(value_set: str) -> None:
    rendering = Rendering.of(value_set)
    for service_obj in rendering.of_kind("Service"):
        assert [p["targetPort"] for p in service_obj["spec"]["ports"]] == ["grpc"], service_obj["metadata"]["name"]


def test_the_probe_port_is_opened_only_to_the_configured_probe_sources() -> None:
    for value_set in ("tls", "embedded-tls"):  # default: no rule, kubelet traffic from the node is allowed anyway
        rendering = Rendering.of(value_set)
        for policy in rendering.of_kind("NetworkPolicy"):
            ports = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule["ports"]}
            assert 7180 not in ports, policy["metadata"]["name"]
    rendering = Rendering.of("tls-existing-secrets")
    for service in SERVICES:
        policy = rendering.get("NetworkPolicy", f"cc-carechain-{service}")
        probe_rules = [r for r in policy["spec"]["ingress"] if any(p["port"] == 7190 for p in r["ports"])]
        assert probe_rules == [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
                                "ports": [{"port": 7190, "protocol": "TCP"}]}], service
        other = [r for r in policy["spec"]["ingress"] if r not in probe_rules]
        assert all(p["port"] == PORTS[service] for r in other for p in r["ports"])
    plaintext = Rendering.of("minimal", "--set", "networkPolicy.probeFrom[0].ipBlock.cidr=10.0.0.0/16")
    rules = plaintext.get("NetworkPolicy", "cc-carechain-ledger")["spec"]["ingress"]
    assert rules[-1] == {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 7103, "protocol": "TCP"}]}


def test_workloads_roll_on_certificate_renewal_with_reloader() -> None:
    rendering = Rendering.of("tls")
    for workload in rendering.workloads():
        service = component(workload["spec"]["template"])
        assert workload["metadata"]["annotations"] == {
            "secret.reloader.stakater.com/reload": f"cc-carechain-{service}-tls"}
    for workload in Rendering.of("embedded-tls").workloads():
        assert "annotations" not in workload["metadata"], "tls.reloader is off by default"


def test_services_route_to_the_serving_port_of_their_pods(minimal: Rendering) -> None:
    for service_obj in minimal.of_kind("Service"):
        targets = [w for w in minimal.workloads() if selects({"matchLabels": service_obj["spec"]["selector"]},
                                                              w["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"Service {service_obj['metadata']['name']} selects no pod"
        assert service_obj["spec"]["ports"][0]["targetPort"] == "grpc"


def test_peer_addresses_are_the_service_dns_names(minimal: Rendering) -> None:
    """round_robin (default): dns:/// of each balanced service's headless Service of ready pods; the ledger
    (validators) stays on its ClusterIP Service. pick_first: every peer through its ClusterIP Service."""
    env = minimal.container_env(minimal.workloads_of("records")[0])
    assert env["CARECHAIN_PEER_LOAD_BALANCING"] == "round_robin"
    assert (env["CARECHAIN_MAX_CONNECTION_AGE_SECONDS"], env["CARECHAIN_MAX_CONNECTION_AGE_GRACE_SECONDS"]) == (
        "300", "30")
    for peer in ("identity", "storage", "consent", "audit"):
        service = minimal.get("Service", f"cc-carechain-{peer}-replicas")
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is False
        assert service["spec"]["selector"] == minimal.get("Service", f"cc-carechain-{peer}")["spec"]["selector"]
        port = service["spec"]["ports"][0]["port"]
        assert env[f"CARECHAIN_{peer.upper()}_ADDRESS"] == f"dns:///cc-carechain-{peer}-replicas.carechain.svc:{port}"
    assert env["CARECHAIN_LEDGER_ADDRESS"] == "cc-carechain-ledger.carechain.svc:7103"

    pick_first = Rendering.of("minimal", "--set", "grpc.loadBalancing=pick_first")
    env = pick_first.container_env(pick_first.workloads_of("records")[0])
    assert env["CARECHAIN_PEER_LOAD_BALANCING"] == "pick_first"
    for peer in ("identity", "storage", "ledger", "consent", "audit"):
        service = pick_first.get("Service", f"cc-carechain-{peer}")
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
    assert "carechain.io/validator" not in ledger["spec"]["selector"], "any validator takes writes"
    ids = ["validator-st-example", "validator-north-clinic", "validator-city-hospital", "validator-lab-partners"]
    for validator, own_id in zip(validators, ids, strict=True):
        env = rendering.container_env(validator)
        assert env["CARECHAIN_VALIDATOR_ID"] == own_id
        assert env["CARECHAIN_VALIDATORS"].split(",") == ids
        assert env["CARECHAIN_QUORUM"] == "0"  # a majority
        peers = env["CARECHAIN_PEER_ADDRESSES"].split(",")
        assert len(peers) == 3 and all(p.startswith("cc-carechain-ledger-") and p.endswith(":7103") for p in peers)
        assert f"cc-carechain-ledger-{validator['metadata']['name'].removeprefix('cc-carechain-ledger-')}:7103" \
            not in peers
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
    # A validator with its own id logs in with the role `vault-bootstrap --validator <id>` makes.
    assert roles == {"identity": "carechain-identity", "storage": "carechain-storage",
                     "ledger": "carechain-validator-st-example", "consent": "carechain-consent",
                     "audit": "carechain-audit", "records": "carechain-records"}
    validator = rendering.workloads_of("ledger")[0]
    assert rendering.container_env(validator)["CARECHAIN_SIGNING_KEY_NAME"] == "validator-st-example"
    gateway = Rendering.of("external-backends", "--set", "vault.auth.roles.records=carechain-gateway")
    assert gateway.container_env(gateway.workloads_of("records")[0])["CARECHAIN_VAULT_KUBERNETES_ROLE"] == (
        "carechain-gateway")


def test_tls_certificate_and_ingress_for_the_gateway() -> None:
    rendering = Rendering.of("tls")
    certificate = rendering.get("Certificate", "cc-carechain-records")
    assert certificate["spec"]["dnsNames"] == ["carechain.hospital-network.example"]
    assert certificate["spec"]["issuerRef"]["name"] == "letsencrypt-prod"
    ingress = rendering.get("Ingress", "cc-carechain-records")
    assert ingress["spec"]["tls"] == [{"hosts": ["carechain.hospital-network.example"],
                                       "secretName": certificate["spec"]["secretName"]}]
    existing = Rendering.of("tls", "--set", "ingress.tls.source=existingSecret",
                            "--set", "ingress.tls.secretName=my-tls")
    assert "cc-carechain-records" not in [c["metadata"]["name"] for c in existing.of_kind("Certificate")]
    assert existing.get("Ingress", "cc-carechain-records")["spec"]["tls"][0]["secretName"] == "my-tls"
    # The Ingress certificate and the services' TLS are independent.
    ingress_only = Rendering.of("tls", "--set", "tls.enabled=false")
    assert [c["metadata"]["name"] for c in ingress_only.of_kind("Certificate")] == ["cc-carechain-records"]
    assert not _tls_on(ingress_only)


def test_the_ingress_controller_reencrypts_to_a_gateway_that_may_waive_client_certificates() -> None:
    rendering = Rendering.of("tls")
    annotations = rendering.get("Ingress", "cc-carechain-records")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    required = {component(w["spec"]["template"]): rendering.container_env(w)["CARECHAIN_TLS_REQUIRE_CLIENT_CERT"]
                for w in rendering.workloads()}
    assert required == {**{s: "true" for s in SERVICES}, "records": "false"}, "tls.gatewayMutual=false: gateway only"
    gateway = rendering.container_env(rendering.workloads_of("records")[0])
    assert gateway["CARECHAIN_TLS_CERT_FILE"] and gateway["CARECHAIN_TLS_CA_FILE"], "still TLS, mutual to its peers"
    portal = rendering.get("Certificate", "cc-carechain-client-patient-portal-tls")["spec"]
    assert portal["commonName"] == "patient-portal" and portal["usages"] == ["digital signature", "client auth"]


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
