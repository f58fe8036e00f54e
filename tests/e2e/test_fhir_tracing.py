"""Issue 15: OTel traces continue from a REST client through the FHIR gateway into the gRPC services, with real
processes.

The network runs with ``OTEL_TRACES_EXPORTER=console``: each process writes its finished spans as JSON lines to
its log file (tests/e2e/test_telemetry.py). A REST create and a read, each sent with its own W3C ``traceparent``,
are one trace each across processes: the gateway's SERVER span is the child of the client's span, its CLIENT span
to records the parent of records' SERVER span, and records' own CLIENT spans the parents of the SERVER spans of
the services it calls (consent, identity, ledger, storage, audit). No span attribute and no log line of any
process holds the patient's pseudonym, the record id or the resource's content.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from helpers import Actor, new_hospital, new_patient, new_practitioner
from test_fhir_gateway import _bearer

from carechain.client.sdk import Purpose, permit
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL

FHIR_JSON = "application/fhir+json"
DOWNSTREAM = ("consent", "identity", "ledger", "storage", "audit")
# A word of the resource's content that no service has any reason to write anywhere but the encrypted blob.
CANARY = "tracing-canary-" + secrets.token_hex(6)


@dataclass
class Traced:
    """The network and who acts through its gateway."""

    network: LocalNetwork
    hospital: str
    reader: str
    patient: Actor


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    # Spans exported every 200 ms rather than every 5 s, so the test reads them soon after the request.
    network = LocalNetwork(tmp_path_factory.mktemp("fhir-tracing"), fhir=True,
                           extra_env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "200"})
    network.start()
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "general-practice")
        patient, _ = new_patient(network, hospital)
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=[NORMAL]))
        yield Traced(network, _bearer(network, hospital), _bearer(network, reader), patient)
        for actor in (hospital, reader, patient):
            actor.client.close()
    finally:
        network.stop()


def _traceparent() -> tuple[str, str, str]:
    """A W3C traceparent of a fresh (sampled) client span: the header, its trace id and its span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _log_entries(network: LocalNetwork, process: str) -> list[dict[str, Any]]:
    entries = []
    for line in (network.log_dir / f"{process}.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line of another format (e.g. an embedded backend's) holds no span
    return entries


def _spans(network: LocalNetwork, trace_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every finished span of the trace, by process (the console exporter's JSON: ids as 0x-hex)."""
    return {process: [e for e in _log_entries(network, process)
                      if e.get("context", {}).get("trace_id") == f"0x{trace_id}"]
            for process in ("fhir", "records", *DOWNSTREAM)}


def _trace(network: LocalNetwork, trace_id: str, method: str) -> dict[str, list[dict[str, Any]]]:
    """The trace once records' server span of method and a downstream server span are exported (a few seconds)."""
    deadline = time.monotonic() + 30
    while True:
        spans = _spans(network, trace_id)
        if any(s["name"].endswith(f"/{method}") and s["kind"] == "SpanKind.SERVER" for s in spans["records"]) and \
                any(s["kind"] == "SpanKind.SERVER" for p in DOWNSTREAM for s in spans[p]) and spans["fhir"]:
            time.sleep(0.5)  # the rest of the trace's spans, exported in the same or the next batch
            return _spans(network, trace_id)
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete trace {trace_id} in the logs: {[(p, len(s)) for p, s in spans.items()]}")
        time.sleep(0.2)


def _one(spans: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [span] = [s for s in spans if s["kind"] == f"SpanKind.{kind}" and s["name"] == name]
    return span


def _span_id(span: dict[str, Any]) -> str:
    return span["context"]["span_id"]


def _assert_continued(network: LocalNetwork, trace_id: str, client_span_id: str, route: str, method: str) -> None:
    """The parent links of one REST request's trace, from the client's span to the services records calls."""
    spans = _trace(network, trace_id, method)
    full_method = f"carechain.records.v1.RecordsService/{method}"
    gateway = _one(spans["fhir"], "SERVER", route)
    assert gateway["parent_id"] == f"0x{client_span_id}", "the gateway's span continues the client's"
    assert gateway["attributes"]["http.route"] == route.split(" ", 1)[1]
    to_records = _one(spans["fhir"], "CLIENT", full_method)
    assert to_records["parent_id"] == _span_id(gateway)
    served = _one(spans["records"], "SERVER", full_method)
    assert served["parent_id"] == _span_id(to_records), "records' span is the child of the gateway's call"
    # One tree: every span of the trace, in every process, descends from the gateway's SERVER span.
    by_id = {_span_id(s): s for process_spans in spans.values() for s in process_spans}

    def root_of(span: dict[str, Any]) -> dict[str, Any]:
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
        return span

    strays = [s["name"] for s in by_id.values() if root_of(s) is not gateway]
    assert not strays, f"spans of the trace that do not descend from the gateway's request: {strays}"
    # records' CLIENT spans are the parents of the SERVER spans of the services it calls.
    calls = {_span_id(s) for s in spans["records"] if s["kind"] == "SpanKind.CLIENT"}
    called = {process for process in DOWNSTREAM for s in spans[process]
              if s["kind"] == "SpanKind.SERVER" and s["parent_id"] in calls}
    assert called, "records' calls continue the trace into the services it calls"


def _condition(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}],
                     "text": CANARY},
            "subject": {"reference": f"Patient/{patient_id}"}, "recordedDate": "2026-11-30"}


def test_a_rest_create_and_read_are_one_trace_each_into_the_grpc_services(traced: Traced) -> None:
    base = traced.network.endpoints.fhir_base_url
    logs = sorted(pathlib.Path(traced.network.log_dir).glob("*.log"))
    before = {log: log.stat().st_size for log in logs}  # what serving these two requests writes comes after
    header, create_trace, create_parent = _traceparent()
    created = requests.post(f"{base}/Condition", json=_condition(traced.patient.principal_id), timeout=30,
                            headers={"Authorization": traced.hospital, "Content-Type": FHIR_JSON,
                                     "traceparent": header})
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    _assert_continued(traced.network, create_trace, create_parent, "POST /{type}", "PutRecord")

    header, read_trace, read_parent = _traceparent()
    read = requests.get(f"{base}/Condition/{record_id}", timeout=30,
                        headers={"Authorization": traced.reader, "X-Purpose-Of-Use": "TREAT", "traceparent": header})
    assert read.status_code == 200, read.text
    assert read.json()["code"]["text"] == CANARY
    _assert_continued(traced.network, read_trace, read_parent, "GET /{type}/{id}", "GetRecord")

    # What serving the two requests wrote, in every process: no span (name, attributes, events) holds the
    # patient's pseudonym, the record id or the content; no log line holds the content; the gateway's log lines
    # hold none of the three (the services' own operational lines name opaque record ids and pseudonyms, e.g.
    # records' "record stored", identity's "data key released": not PHI, and not the gateway's to change).
    secrets_ = {"patient id": traced.patient.principal_id, "record id": record_id, "content": CANARY}
    for log in logs:
        with log.open("rb") as written:
            written.seek(before[log])
            lines = written.read().decode().splitlines()
        spans = [line for line in lines if '"context": {"trace_id"' in line]
        assert spans, f"{log.name}: serving the requests wrote spans"
        for what, value in secrets_.items():
            assert not [s for s in spans if value in s], f"a span in {log.name} holds the {what}"
        assert not [line for line in lines if CANARY in line], f"{log.name} holds the resource's content"
        if log.stem == "fhir":
            assert not [line for line in lines if any(v in line for v in secrets_.values())], \
                "the gateway's log lines hold an id or the content"
