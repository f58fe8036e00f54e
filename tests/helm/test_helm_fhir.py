"""The FHIR REST gateway's objects in the chart (fhir.enabled): Deployment with HTTP probes and no key, Service,
optional Ingress, a NetworkPolicy whose egress reaches only records, DNS and the collector (SMART token requests
go through records' relay), the records policy admitting it and identity's not, and identity's SMART token URL.
Validity for Kubernetes and the settings it reads: the generic tests with the ``fhir`` value set
(tests/helm/values/fhir.yaml)."""

from __future__ import annotations

from helm_chart import Rendering, selects

GATEWAY = "cc-carechain-fhir"


def _pod_labels(rendering: Rendering, name: str) -> dict[str, str]:
    return rendering.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]


def test_off_by_default() -> None:
    assert not [o for o in Rendering.of("minimal").objects if o["metadata"]["name"].startswith(GATEWAY)]


def test_the_deployment_serves_http_with_no_key_and_calls_records() -> None:
    rendering = Rendering.of("fhir")
    deployment = rendering.get("Deployment", GATEWAY)
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["args"] == ["serve", "fhir"] and container["ports"][0]["name"] == "http"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["automountServiceAccountToken"] is False
    assert {v["name"] for v in spec["volumes"]} == {"tmp", "tls", "trust"}  # no signing key, no data
    assert {"name": "trust", "mountPath": "/etc/carechain/trust", "readOnly": True} in container["volumeMounts"]
    env = rendering.container_env(deployment)
    assert env["CARECHAIN_RECORDS_ADDRESS"] == "cc-carechain-records.carechain.svc:7100"
    assert env["CARECHAIN_PUBLIC_BASE_URL"] == "https://fhir.hospital-network.example"
    assert env["CARECHAIN_TRUST_DIR"] == "/etc/carechain/trust"  # the token issuer's key: bearer tokens verified
    assert env["CARECHAIN_TLS_CA_FILE"].endswith("/ca.crt") and "CARECHAIN_HTTPS_CERT_FILE" not in env
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    certificate = rendering.get("Certificate", "cc-carechain-fhir-tls")["spec"]
    assert certificate["usages"] == ["digital signature", "client auth"]  # a client of records only


def test_service_and_optional_ingress() -> None:
    rendering = Rendering.of("fhir")
    service = rendering.get("Service", GATEWAY)
    assert service["spec"]["ports"][0]["port"] == 7106 and selects({"matchLabels": service["spec"]["selector"]},
                                                                   _pod_labels(rendering, GATEWAY))
    ingress = rendering.get("Ingress", GATEWAY)["spec"]
    assert ingress["rules"][0]["host"] == "fhir.hospital-network.example"
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": GATEWAY, "port": {"name": "http"}}
    assert ingress["tls"] == [{"hosts": ["fhir.hospital-network.example"], "secretName": "carechain-fhir-tls"}]
    without = Rendering.of("fhir", "--set", "fhir.ingress.enabled=false")
    assert [i["metadata"]["name"] for i in without.of_kind("Ingress")] == []
    assert without.container_env(without.get("Deployment", GATEWAY))["CARECHAIN_PUBLIC_BASE_URL"] == ""


def test_identity_names_the_gateways_token_endpoint() -> None:
    rendering = Rendering.of("fhir")
    identity = rendering.container_env(rendering.get("Deployment", "cc-carechain-identity"))
    assert identity["CARECHAIN_SMART_TOKEN_URL"] == "https://fhir.hospital-network.example/token"
    custom = Rendering.of("fhir", "--set", "fhir.publicBaseUrl=https://ehr.example/fhir/")
    env = custom.container_env(custom.get("Deployment", "cc-carechain-identity"))
    assert env["CARECHAIN_SMART_TOKEN_URL"] == "https://ehr.example/fhir/token"
    minimal = Rendering.of("minimal")
    assert "CARECHAIN_SMART_TOKEN_URL" not in minimal.container_env(minimal.get("Deployment", "cc-carechain-identity"))


def test_the_network_policy_lets_it_reach_records_only() -> None:
    rendering = Rendering.of("fhir")
    policy = rendering.get("NetworkPolicy", GATEWAY)["spec"]
    assert selects(policy["podSelector"], _pod_labels(rendering, GATEWAY))
    peers = [rule for rule in policy["egress"] if "to" in rule and "podSelector" in rule["to"][0]]
    reached = {name for rule in peers for name in ("records", "identity")
               if selects(rule["to"][0]["podSelector"], _pod_labels(rendering, f"cc-carechain-{name}"))}
    assert reached == {"records"} and len(peers) == 1
    others = [rule for rule in policy["egress"] if rule not in peers]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in others] == [[53, 53], [4317]]  # DNS, collector
    [ingress] = policy["ingress"]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    # records (reachable only from the ingress namespace here) admits the gateway's pods; identity does not.
    for callee, admitted in (("records", True), ("identity", False)):
        callee_policy = rendering.get("NetworkPolicy", f"cc-carechain-{callee}")["spec"]
        sources = [peer for rule in callee_policy["ingress"] for peer in rule.get("from", [])]
        assert any("podSelector" in peer and selects(peer["podSelector"], _pod_labels(rendering, GATEWAY))
                   for peer in sources) == admitted, callee
