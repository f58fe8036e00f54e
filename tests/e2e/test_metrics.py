"""Issue 16: every process of a running network serves Prometheus metrics, and each listed series moves.

The test scrapes each process's /metrics (addresses from the endpoints file), plays a hospital writing
records, a permitted read, a denied read and a break-glass read, an audit outage (reads fail closed)
and, with real backends, a MinIO outage; then scrapes again and checks each series increased. The
chart's alert rules and dashboard may only name series found in these real scrapes.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
import urllib.request
import uuid

import grpc
import pytest
import yaml
from helpers import new_hospital, new_patient, new_practitioner
from prometheus_client.parser import text_string_to_metric_families

from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
from carechain.client.sdk import Purpose, permit

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "carechain"
Samples = dict[tuple[str, frozenset], float]


def scrape(address: str) -> Samples:
    """Every sample of one /metrics page: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:  # noqa: S310 - localhost
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include labels."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= lab)


def has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def scrape_all(network) -> dict[str, Samples]:
    return {name: scrape(address) for name, address in network.endpoints.metrics.items()}


def condition(fhir_id: str) -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91302008", "display": "Sepsis"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "onsetDateTime": "2024-01-02"}


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traffic(network):
    """Scrapes before and after real traffic, and the identifiers that traffic used."""
    before = scrape_all(network)
    hospital = new_hospital(network)
    doctor = new_practitioner(network, hospital, "general-practice")
    stranger = new_practitioner(network, hospital, "dermatology")
    emergency = new_practitioner(network, hospital, "emergency-medicine")
    patient, fhir_id = new_patient(network, hospital)
    stored = [hospital.client.put_record(patient.principal_id, condition(fhir_id)) for _ in range(3)]
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=doctor.principal_id))
    assert doctor.client.get_record(stored[0].record_id).resource_json
    with pytest.raises(grpc.RpcError) as denied:
        stranger.client.get_record(stored[1].record_id)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    glass = emergency.client.get_record(stored[2].record_id, Purpose.PURPOSE_OF_USE_ETREAT,
                                        break_glass_reason="unresponsive on arrival")
    assert glass.break_glass
    anchored = total(before["audit"], "carechain_audit_batches_anchored_total")
    # A batch seals once its first event has waited batch_max_seconds (60 s by default), then the next
    # maintenance round anchors it: on a loaded machine that is more than a minute.
    wait_for("no audit batch was anchored",
             lambda: total(scrape(network.endpoints.metrics["audit"]), "carechain_audit_batches_anchored_total")
             > anchored, timeout=240.0)
    after = scrape_all(network)
    ids = {fhir_id, *(r.record_id for r in stored),
           *(a.principal_id for a in (hospital, doctor, stranger, emergency, patient))}
    yield before, after, ids, (hospital, doctor, patient, stored)
    for actor in (hospital, doctor, stranger, emergency, patient):
        actor.client.close()


def test_the_endpoints_file_lists_a_metrics_address_per_process(network) -> None:
    saved = Endpoints.load(network.layout.root / ENDPOINTS_FILE)
    assert set(saved.metrics) == set(network.start_order)
    for name, address in saved.metrics.items():
        page = scrape(address)
        assert total(page, "target_info", service_name=f"carechain-{name}") == 1, name


def test_rpc_rate_errors_and_latency_move_per_method(traffic) -> None:
    before, after, _, _ = traffic
    records = "carechain.records.v1.RecordsService/"
    calls = "carechain_rpc_server_calls_total"
    assert total(after["records"], calls, rpc_method=records + "PutRecord", grpc_code="OK") \
        >= total(before["records"], calls, rpc_method=records + "PutRecord", grpc_code="OK") + 3
    assert total(after["records"], calls, rpc_method=records + "GetRecord", grpc_code="OK") \
        >= total(before["records"], calls, rpc_method=records + "GetRecord", grpc_code="OK") + 2
    assert total(after["records"], calls, rpc_method=records + "GetRecord", grpc_code="PERMISSION_DENIED") \
        >= total(before["records"], calls, rpc_method=records + "GetRecord", grpc_code="PERMISSION_DENIED") + 1
    latency = "carechain_rpc_server_duration_seconds_count"
    assert total(after["records"], latency, rpc_method=records + "PutRecord") \
        >= total(before["records"], latency, rpc_method=records + "PutRecord") + 3
    for name, samples in after.items():  # every process counts the calls it serves
        assert total(samples, calls) > total(before[name], calls), name


def test_ledger_height_finality_and_evidence_series(traffic, network) -> None:
    before, after, _, _ = traffic
    for name in network.validator_names:
        assert total(after[name], "carechain_ledger_height") > total(before[name], "carechain_ledger_height"), name
        assert total(after[name], "carechain_ledger_final_height") \
            > total(before[name], "carechain_ledger_final_height"), name
        assert has(after[name], "carechain_ledger_finality_lag") and has(after[name], "carechain_ledger_evidence")
        assert total(after[name], "carechain_ledger_evidence") == 0, "an honest network holds no evidence"
    assert total(after["ledger"], "carechain_ledger_time_to_final_seconds_count") \
        > total(before["ledger"], "carechain_ledger_time_to_final_seconds_count")


def test_audit_consent_and_break_glass_series(traffic) -> None:
    before, after, _, _ = traffic
    for name in ("carechain_audit_events_appended_total", "carechain_audit_batches_anchored_total"):
        assert total(after["audit"], name) > total(before["audit"], name), name
    assert has(after["audit"], "carechain_audit_anchoring_lag_seconds")
    for effect in ("permit", "deny"):
        assert total(after["consent"], "carechain_consent_decisions_total", effect=effect) \
            > total(before["consent"], "carechain_consent_decisions_total", effect=effect), effect
    assert total(after["consent"], "carechain_break_glass_uses_total") \
        == total(before["consent"], "carechain_break_glass_uses_total") + 1


def test_no_label_carries_an_identifier(traffic) -> None:
    _, after, ids, _ = traffic
    values = {value for samples in after.values() for _, labels in samples for _, value in labels}
    leaked = {v for v in values for i in ids if i in v}
    assert not leaked, f"identifiers in metric labels: {leaked}"


def test_reads_failing_closed_and_backend_outages_are_counted(traffic, network) -> None:
    _, _, _, (hospital, doctor, patient, stored) = traffic
    records = network.endpoints.metrics["records"]
    refused = total(scrape(records), "carechain_audit_fail_closed_total", service="records")
    network.stop_service("audit")
    try:
        with pytest.raises(grpc.RpcError) as failed:
            doctor.client.get_record(stored[0].record_id)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        network.start_service("audit")
    assert total(scrape(records), "carechain_audit_fail_closed_total", service="records") > refused
    if network.backends is None:
        return
    storage = network.endpoints.metrics["storage"]
    errors = total(scrape(storage), "carechain_backend_errors_total", backend="s3")
    network.backends.minio.stop()
    try:
        with pytest.raises(grpc.RpcError) as down:
            doctor.client.get_record(stored[0].record_id)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        network.backends.minio.start()
    assert total(scrape(storage), "carechain_backend_errors_total", backend="s3") > errors


def _series_names(promql: str) -> set[str]:
    return set(re.findall(r"\bcarechain_[a-z0-9_]+", promql))


def test_alerts_and_dashboard_name_only_series_the_services_export(traffic, network) -> None:
    exported = {name for samples in scrape_all(network).values() for name, _ in samples}
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yaml").read_text())
    alert_series = {name for group in rules["groups"] for rule in group["rules"]
                    for name in _series_names(rule["expr"])}
    dashboard = json.loads((CHART / "files" / "dashboards" / "carechain.json").read_text())
    panel_series = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
                    for name in _series_names(target["expr"])}
    assert alert_series and panel_series
    assert not alert_series - exported, f"alerts name series nobody exports: {alert_series - exported}"
    assert not panel_series - exported, f"the dashboard names series nobody exports: {panel_series - exported}"
