"""records.patient_relay: who may read a patient's consents and accounting through records, and what is relayed."""

from __future__ import annotations

import json

import grpc
import pytest

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2
from carechain.core.errors import PermissionDenied
from carechain.records.patient_relay import PatientRelay
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller

PATIENT = Caller("psn-1", common_pb2.PRINCIPAL_KIND_PATIENT, "org-1")
OTHER = Caller("psn-2", common_pb2.PRINCIPAL_KIND_PATIENT, "org-1")
PROXY = Caller("dr-proxy", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "org-1")
GUARDIAN = Caller("psn-guardian", common_pb2.PRINCIPAL_KIND_PATIENT, "org-1")
ORGANIZATION = Caller("org-1", common_pb2.PRINCIPAL_KIND_ORGANIZATION)


class UnknownPatient(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND


class FakePeers:
    """consent and audit as records' stubs, keeping the requests."""

    def __init__(self) -> None:
        self.requests: list[object] = []
        self.consent = self
        self.audit = self

    def SubmitFhirConsent(self, request):
        self.requests.append(request)
        return consent_pb2.ConsentRecord(consent_id="c-1", patient_id="psn-1",
                                         status=consent_pb2.CONSENT_STATUS_ACTIVE)

    def ListConsents(self, request):
        self.requests.append(request)
        return consent_pb2.ListConsentsResponse(consents=[consent_pb2.ConsentRecord(
            consent_id="c-1", patient_id=request.patient_id, status=consent_pb2.CONSENT_STATUS_ACTIVE)])

    def ExportFhirBundle(self, request):
        self.requests.append(request)
        return audit_pb2.ExportFhirBundleResponse(bundle_json=b'{"resourceType":"Bundle"}', next_page_token="t2")


def _delegates(patient_id: str, principal_id: str) -> bool:
    if patient_id == "psn-unknown":
        raise UnknownPatient()
    return patient_id == "psn-1" and principal_id in ("dr-proxy", "psn-guardian")


def _guardians(patient_id: str, principal_id: str) -> bool:
    return _delegates(patient_id, principal_id) and principal_id == "psn-guardian"


@pytest.fixture
def relay() -> tuple[PatientRelay, FakePeers]:
    peers = FakePeers()
    return PatientRelay(peers, _delegates, _guardians), peers


def test_the_patient_and_active_delegates_read_the_consents_no_one_else(relay) -> None:
    r, _ = relay
    assert r.authorize(PATIENT, "") == r.authorize(PATIENT, "psn-1") == "psn-1"
    assert r.authorize(PROXY, "psn-1") == r.authorize(GUARDIAN, "psn-1") == "psn-1"
    for caller, patient in [(OTHER, "psn-1"), (PROXY, "psn-2"), (ORGANIZATION, "psn-1"), (PROXY, ""),
                            (OTHER, "psn-unknown")]:
        with pytest.raises(PermissionDenied) as refused:
            r.authorize(caller, patient)
        assert patient not in refused.value.message or not patient  # the same answer, naming no one


def test_the_accounting_is_the_patients_and_their_guardians_only(relay) -> None:
    r, peers = relay
    assert r.authorize(GUARDIAN, "psn-1", accounting=True) == "psn-1"
    with pytest.raises(PermissionDenied):
        r.authorize(PROXY, "psn-1", accounting=True)  # a proxy is not a personal representative
    page = r.export_access_history(PATIENT, records_pb2.ExportAccessHistoryRequest(
        since_ms=1, until_ms=2, page_size=3, page_token="t1"))
    [request] = peers.requests
    assert (request.patient_id, request.since_ms, request.until_ms, request.page_size, request.page_token) == (
        "psn-1", 1, 2, 3, "t1")
    assert json.loads(page.bundle_json) == {"resourceType": "Bundle"} and page.next_page_token == "t2"


def test_a_signed_consent_is_relayed_for_the_authenticated_caller(relay) -> None:
    r, peers = relay
    granted = r.submit_consent(PROXY, records_pb2.SubmitConsentRequest(consent_json=b"{...}", consent_jws="a.b.c"))
    [request] = peers.requests
    assert (request.consent_json, request.consent_jws, request.caller_id) == (b"{...}", "a.b.c", "dr-proxy")
    assert granted.consent_id == "c-1" and json.loads(granted.consent_json)["resourceType"] == "Consent"
    listed = r.list_consents(PATIENT, records_pb2.ListPatientConsentsRequest())
    assert [c.consent_id for c in listed.consents] == ["c-1"] and peers.requests[-1].patient_id == "psn-1"
