"""Issue 9: rejected FHIR values never reach a span (status, events, exception stack traces) or a log.

The records service runs in-process behind the real call interceptor (its server span, then the
auth and access checks); spans go to an in-memory exporter. Only identity's
GetPrincipal is answered by a stand-in: validation fails before any other peer is called.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import pytest
from consent_ledger_fake import CHAIN, SEALER
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, NetworkLayout, TrustBundle, audience
from carechain.core.telemetry import configure_tracing
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.identity.v1 import identity_pb2
from carechain.records.gateway import RecordsGateway
from carechain.records.reconcile import Reconciler
from carechain.records.server import ACCESS, SERVICE_NAME, RecordsServicer
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.runtime.access import guard
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import RecordsSettings
from carechain.runtime.server import start_service

Kind = common_pb2.PrincipalKind
FHIR_ID = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
SECRET = "SECRET-HIV-DIAGNOSIS"


class _Identity:
    """Answers GetPrincipal for the one patient; nothing else is reached on a rejected write."""

    def GetPrincipal(self, request: identity_pb2.GetPrincipalRequest) -> identity_pb2.Principal:  # noqa: N802
        return identity_pb2.Principal(principal_id=request.principal_id, kind=Kind.PRINCIPAL_KIND_PATIENT,
                                      fhir_patient_id=FHIR_ID, organization_id="org-1")  # the writer's patient


@pytest.fixture
def records(tmp_path: pathlib.Path) -> Iterator[tuple[records_pb2_grpc.RecordsServiceStub, list, InMemorySpanExporter]]:
    layout = NetworkLayout(tmp_path / "net")
    layout.ensure()
    issuer = Ed25519Signer.from_file(TOKEN_ISSUER_ID, layout.key_file(TOKEN_ISSUER_ID))
    exporter = InMemorySpanExporter()
    configure_tracing("records").add_span_processor(SimpleSpanProcessor(exporter))
    settings = RecordsSettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("records"),
                               trust_dir=layout.trust_dir, shutdown_grace_seconds=0)
    peers = SimpleNamespace(identity=_Identity(), audit=None)
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, settings.max_record_bytes, SEALER)
    servicer = RecordsServicer(gateway, Authenticator(TrustBundle.load(layout.trust_dir), audience("records")),
                               Reconciler(peers, settings.reconcile_grace_seconds))

    def register(server: grpc.Server) -> list[str]:
        records_pb2_grpc.add_RecordsServiceServicer_to_server(guard(servicer, ACCESS, servicer._auth), server)
        return [SERVICE_NAME]

    running = start_service("records", settings, register)
    channel = grpc.insecure_channel(running.address)
    caller = Caller("prac-1", Kind.PRINCIPAL_KIND_PRACTITIONER, organization_id="org-1")
    token = issue_token(issuer, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("records")), 60)[0]
    try:
        yield records_pb2_grpc.RecordsServiceStub(channel), [("authorization", f"Bearer {token}")], exporter
    finally:
        channel.close()
        running.stop()


def _span_text(exporter: InMemorySpanExporter) -> str:
    parts = []
    for span in exporter.get_finished_spans():
        parts.append(str(span.status.description))
        parts.extend(str(value) for value in span.attributes.values())
        for event in span.events:
            parts.append(event.name)
            parts.extend(str(value) for value in event.attributes.values())
    return "\n".join(parts)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Observation", "status": SECRET, "code": {"text": "x"},
         "subject": {"reference": f"Patient/{FHIR_ID}"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": SECRET,
         "subject": {"reference": f"Patient/{FHIR_ID}"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "valueQuantity": {"value": SECRET}, "subject": {"reference": f"Patient/{FHIR_ID}"}},
    ],
)
def test_rejected_values_reach_no_span_or_log(records, resource: dict, caplog: pytest.LogCaptureFixture) -> None:
    stub, metadata, exporter = records
    exporter.clear()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.RpcError) as caught:
        stub.PutRecord(records_pb2.PutRecordRequest(patient_id="psn-1", resource_json=json.dumps(resource).encode()),
                       metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("resource_json")
    assert SECRET not in caught.value.details()
    spans = exporter.get_finished_spans()
    assert spans, "the server span was exported"
    exported = _span_text(exporter)
    assert "exception" in exported  # the abort was recorded, so the check below looked at a stack trace
    assert SECRET not in exported
    assert "input_value" not in exported
    assert SECRET not in caplog.text


def test_a_write_has_step_spans_under_the_method_span(records) -> None:
    stub, metadata, exporter = records
    exporter.clear()
    resource = {"resourceType": "Observation", "status": SECRET, "code": {"text": "x"},
                "subject": {"reference": f"Patient/{FHIR_ID}"}}
    with pytest.raises(grpc.RpcError):
        stub.PutRecord(records_pb2.PutRecordRequest(patient_id="psn-1", resource_json=json.dumps(resource).encode()),
                       metadata=metadata)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    method = spans["carechain.records.v1.RecordsService/PutRecord"]  # named without the leading "/"
    step = spans["records.validate"]
    assert step.parent is not None and step.parent.span_id == method.context.span_id
    assert not step.status.is_ok, "the step that refused the input is marked failed"
    assert "records.label" not in spans, "nothing after a refused validation runs"
