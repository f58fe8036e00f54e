"""What a patient (or an active delegate) does through the FHIR REST gateway besides records (docs/fhir.md).

The gateway talks only to records, so records relays, for the caller it authenticated:

- ``SubmitConsent``: a FHIR Consent the caller signed as a JWS, to ConsentService.SubmitFhirConsent, which
  verifies the JWS and commits the grant (the validators verify it again: records vouches for nothing);
- ``ListPatientConsents``: the patient's consents (ConsentService.ListConsents, as FHIR Consent resources);
- ``ExportAccessHistory``: the patient's accounting of disclosures as FHIR AuditEvent resources
  (AuditService.ExportFhirBundle).

The reads call consent and audit as svc-records, so records itself holds them to the patient's own data,
as consent and audit would hold the caller: the consents to the patient or an active delegate, the
accounting to the patient or an active guardian (the personal representative of 45 CFR 164.502(g), as
AuditService.GetAccessHistory). Anyone else gets the same PERMISSION_DENIED whatever the patient, so nothing
about them is revealed.
"""

from __future__ import annotations

from typing import Any

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.fhir_consent import consent_json
from carechain.consent.v1 import consent_pb2
from carechain.core.errors import PermissionDenied
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller
from carechain.runtime.delegates import IsDelegate, acts_for_patient

Kind = common_pb2.PrincipalKind
NOT_YOURS = ("a patient reads only their own consents (also an active delegate) and accounting of disclosures "
             "(also an active guardian)")


class PatientRelay:
    """The consent and accounting relays of the FHIR gateway (see the module docstring)."""

    def __init__(self, peers: Any, is_delegate: IsDelegate, is_guardian: IsDelegate) -> None:
        """peers: this service's stubs (consent, audit); is_delegate / is_guardian: whether someone is a
        patient's active delegate / guardian."""
        self._peers = peers
        self._is_delegate = is_delegate
        self._is_guardian = is_guardian

    def authorize(self, caller: Caller, patient_id: str, accounting: bool = False) -> str:
        """The patient whose consents (accounting: accounting of disclosures) the caller may read (empty: the
        calling patient); PermissionDenied else."""
        if not patient_id and caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            return caller.principal_id
        if acts_for_patient(caller, patient_id, self._is_guardian if accounting else self._is_delegate):
            return patient_id
        raise PermissionDenied(NOT_YOURS)

    def submit_consent(self, caller: Caller, request: records_pb2.SubmitConsentRequest
                       ) -> records_pb2.PatientConsent:
        """Relay a signed FHIR Consent to consent for the caller; the consent as granted, as FHIR."""
        record = self._peers.consent.SubmitFhirConsent(consent_pb2.SubmitFhirConsentRequest(
            consent_json=request.consent_json, consent_jws=request.consent_jws, caller_id=caller.principal_id))
        return records_pb2.PatientConsent(consent_id=record.consent_id, consent_json=consent_json(record))

    def list_consents(self, caller: Caller, request: records_pb2.ListPatientConsentsRequest
                      ) -> records_pb2.ListPatientConsentsResponse:
        """The patient's consents, oldest first, as FHIR Consent resources."""
        patient_id = self.authorize(caller, request.patient_id)
        consents = self._peers.consent.ListConsents(consent_pb2.ListConsentsRequest(patient_id=patient_id)).consents
        return records_pb2.ListPatientConsentsResponse(consents=[
            records_pb2.PatientConsent(consent_id=c.consent_id, consent_json=consent_json(c)) for c in consents])

    def export_access_history(self, caller: Caller, request: records_pb2.ExportAccessHistoryRequest
                              ) -> records_pb2.ExportAccessHistoryResponse:
        """One page of the patient's accounting of disclosures as a FHIR Bundle of AuditEvent."""
        patient_id = self.authorize(caller, request.patient_id, accounting=True)
        page = self._peers.audit.ExportFhirBundle(audit_pb2.ExportFhirBundleRequest(
            patient_id=patient_id, since_ms=request.since_ms, until_ms=request.until_ms,
            page_size=request.page_size, page_token=request.page_token))
        return records_pb2.ExportAccessHistoryResponse(bundle_json=page.bundle_json.decode("utf-8"),
                                                       next_page_token=page.next_page_token)
