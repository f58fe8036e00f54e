"""Issue 16: the chart's metrics: /metrics ports, NetworkPolicy, ServiceMonitor, PrometheusRule, dashboard.

Kubernetes objects are validated strictly against the 1.29 and 1.34 schemas; ServiceMonitor and
PrometheusRule are prometheus-operator CRDs, so their structure is checked here field by field.
"""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml
from helm_chart import CHART, KUBE_VERSIONS, NAMESPACE, SERVICES, Rendering, component, selects, template

EVERYTHING = ("--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
              "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.grafanaDashboard.enabled=true")
CRDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", ["minimal", "ha", "tls"])
def test_metrics_objects_are_valid(value_set: str, kube_version: str) -> None:
    rendering = Rendering.of(value_set, *EVERYTHING, kube_version=kube_version)
    assert {o["kind"] for o in rendering.objects} >= CRDS
    for obj in rendering.objects:
        if obj["kind"] in CRDS or obj["kind"] == "Certificate":
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid at {list(exc.path)}: {exc.message}")


def _metrics_port(container: dict) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    return port


@pytest.mark.parametrize("value_set", ["minimal", "ha"])
def test_every_pod_serves_metrics_and_the_service_monitor_scrapes_each_pod_once(value_set: str) -> None:
    rendering = Rendering.of(value_set, *EVERYTHING)
    [monitor] = rendering.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s",
                        "scrapeTimeout": "10s"}
    scraped = [s for s in rendering.of_kind("Service") if selects(spec["selector"], s["metadata"]["labels"])]
    # One Service per service: the headless audit and per-validator Services would scrape pods twice.
    assert sorted(component(s) for s in scraped) == sorted(SERVICES)
    for service in scraped:
        [port] = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
        assert port["targetPort"] == "metrics" and port["port"] == 9464
    for workload in rendering.workloads():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert _metrics_port(container) == 9464
        env = rendering.container_env(workload)
        assert env["CARECHAIN_METRICS_LISTEN_ADDRESS"] == "0.0.0.0:9464", workload["metadata"]["name"]


def test_metrics_are_off_by_default_and_nothing_is_exposed() -> None:
    rendering = Rendering.of("minimal")
    assert not {o["kind"] for o in rendering.objects} & CRDS
    for workload in rendering.workloads():
        assert "CARECHAIN_METRICS_LISTEN_ADDRESS" not in rendering.container_env(workload)
        assert all(p["name"] != "metrics" for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"])
    assert all(p["name"] != "metrics" for s in rendering.of_kind("Service") for p in s["spec"]["ports"])


def test_the_network_policy_lets_only_scrapers_reach_the_metrics_port() -> None:
    scrapers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    rendering = Rendering.of("minimal", *EVERYTHING, "--set-json", f"metrics.scrapeFrom={json.dumps(scrapers)}")
    for service in SERVICES:
        policy = rendering.get("NetworkPolicy", f"cc-carechain-{service}")
        rules = [r for r in policy["spec"]["ingress"] if {"port": 9464, "protocol": "TCP"} in r.get("ports", [])]
        assert rules == [{"ports": [{"port": 9464, "protocol": "TCP"}], "from": scrapers}], service


def test_alert_rules_are_the_shipped_file_and_well_formed() -> None:
    rendering = Rendering.of("minimal", *EVERYTHING)
    [rule] = rendering.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    shipped = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"] == shipped
    alerts = {}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}, item
            assert item["labels"]["severity"] in ("critical", "warning")
            assert item["annotations"]["summary"] and isinstance(item["expr"], str)
            alerts[item["alert"]] = item
    assert set(alerts) == {"CareChainFinalityStalled", "CareChainValidatorEvidence", "CareChainAuditAnchoringLag",
                           "CareChainAuditUnavailable", "CareChainBreakGlassUsed"}


def test_the_dashboard_config_map_holds_the_shipped_dashboard() -> None:
    rendering = Rendering.of("minimal", *EVERYTHING)
    config_map = rendering.get("ConfigMap", "cc-carechain-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["carechain.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboards" / "carechain.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all("carechain_" in e for e in exprs)


@pytest.mark.parametrize(("settings", "expected"), [
    (["--set", "metrics.serviceMonitor.enabled=true"], "metrics.serviceMonitor.enabled needs metrics.enabled"),
    (["--set", "metrics.enabled=true", "--set", "metrics.port=7100"], "metrics.port: 7100 is records.port"),
    (["--set", "metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    (["--set", "metrics.scrapeFrom[0].nodeSelector.x=y"], "/metrics/scrapeFrom/0"),
])
def test_inconsistent_metrics_values_are_refused_with_a_message(settings: list[str], expected: str) -> None:
    result = template("minimal", *settings)
    assert result.returncode != 0, f"{settings} was accepted"
    assert expected in result.stderr, result.stderr
