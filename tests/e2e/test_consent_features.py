"""Consent features end to end on the six real processes: FHIR Consent import/export, delegates,
break-glass, and revocation reaching a decision token issued before it (key release re-checks)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, token_issuer

from carechain.audit.v1 import audit_pb2
from carechain.client.channels import open_channel
from carechain.client.sdk import Kind, Purpose, permit
from carechain.consent.fhir_consent import ACT_REASON, CONSENT_SCOPE, PARTICIPATION_TYPE, consent_from_fhir
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.layout import audience, service_principal_id
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.demo import cancer_diagnosis
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims


def condition(fhir_id: str, onset: str, code: str = "91302008", display: str = "Sepsis (disorder)") -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "onsetDateTime": onset}


def fhir_consent(practitioner_id: str, data_year: str) -> dict:
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "provision": {"type": "deny", "provision": [{
            "type": "permit",
            "actor": [{"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]},
                       "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
            "dataPeriod": {"start": data_year, "end": data_year},
        }]},
    }


def _denied(call) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    return caught.value.details()


def _audited_denial(patient, record_id: str) -> str:
    """The reason of the latest denied read of record_id in the patient's own access history."""
    denials = [e.event for e in patient.client.access_history()
               if e.event.record_id == record_id and e.event.outcome == audit_pb2.AUDIT_OUTCOME_DENIED]
    assert denials, "every denial is audited"
    return max(denials, key=lambda e: e.time_ms).reason


@pytest.fixture(scope="module")
def clinic(network):
    hospital = new_hospital(network)
    oncologist = new_practitioner(network, hospital, "oncology")
    emergency = new_practitioner(network, hospital, "emergency-medicine")
    patient, fhir_id = new_patient(network, hospital)
    guardian, _ = new_patient(network, hospital)
    actors = (hospital, oncologist, emergency, patient, guardian)
    yield actors + (fhir_id,)
    for actor in actors:
        actor.client.close()


def test_fhir_consent_import_grants_by_data_period_and_export_round_trips(network, clinic) -> None:
    hospital, oncologist, _, patient, _, fhir_id = clinic
    recent = hospital.client.put_record(patient.principal_id, condition(fhir_id, "2023-05-02T10:00:00Z"))
    old = hospital.client.put_record(patient.principal_id, condition(fhir_id, "2019-01-10"))
    granted = patient.client.grant_consent_fhir(fhir_consent(oncologist.principal_id, "2023"))
    assert granted.granted_by == patient.principal_id
    assert oncologist.client.get_record(recent.record_id).resource_json
    assert _denied(lambda: oncologist.client.get_record(old.record_id)) == DENIAL_MESSAGE
    assert "no active consent permits" in _audited_denial(patient, old.record_id)
    exported = patient.client.export_consent(granted.consent_id)
    assert exported["patient"]["identifier"]["value"] == patient.principal_id
    assert consent_from_fhir(exported).policy == granted.policy
    patient.client.revoke_consent(granted.consent_id)


def test_a_delegate_grants_and_revokes_for_the_patient(network, clinic) -> None:
    hospital, oncologist, _, patient, guardian, fhir_id = clinic
    stored = hospital.client.put_record(patient.principal_id, condition(fhir_id, "2024-02-02"))
    delegation = patient.client.register_delegate(guardian.principal_id, policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)
    assert delegation.status == consent_pb2.DELEGATION_STATUS_ACTIVE
    consent = guardian.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                   practitioner_id=oncologist.principal_id),
                                            patient_id=patient.principal_id)
    assert (consent.patient_id, consent.granted_by) == (patient.principal_id, guardian.principal_id)
    assert oncologist.client.get_record(stored.record_id).resource_json
    guardian.client.revoke_consent(consent.consent_id, patient_id=patient.principal_id)
    _denied(lambda: oncologist.client.get_record(stored.record_id))
    patient.client.revoke_delegate(guardian.principal_id)
    _denied(lambda: guardian.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT]),
                                                  patient_id=patient.principal_id))


def test_break_glass_reads_normal_records_only_and_raises_an_alert(network, clinic) -> None:
    hospital, _, emergency, patient, _, fhir_id = clinic
    normal = hospital.client.put_record(patient.principal_id, condition(fhir_id, "2024-03-03"))
    cancer = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    glass = "unresponsive on arrival"
    read = emergency.client.get_record(normal.record_id, Purpose.PURPOSE_OF_USE_ETREAT, break_glass_reason=glass)
    assert read.resource_json and read.break_glass
    reason = _denied(lambda: emergency.client.get_record(cancer.record_id, Purpose.PURPOSE_OF_USE_ETREAT,
                                                         break_glass_reason=glass))
    assert reason == DENIAL_MESSAGE, "a denial never says why (the record's category is itself a disclosure)"
    assert "break-glass never opens sensitive categories" in _audited_denial(patient, cancer.record_id)
    _denied(lambda: emergency.client.get_record(normal.record_id, Purpose.PURPOSE_OF_USE_TREAT))
    history = patient.client.access_history()
    alerts = [e.event for e in history if e.event.alert]
    assert [(a.actor_id, a.record_id) for a in alerts] == [(emergency.principal_id, normal.record_id)]


def test_a_decision_issued_before_a_revocation_cannot_release_the_key(network, clinic) -> None:
    hospital, oncologist, _, patient, _, fhir_id = clinic
    stored = hospital.client.put_record(patient.principal_id, condition(fhir_id, "2024-04-04"))
    consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                  practitioner_id=oncologist.principal_id))
    records = Caller(service_principal_id("records"), Kind.PRINCIPAL_KIND_SERVICE)
    issuer = token_issuer(network)

    def bearer(service: str) -> list[tuple[str, str]]:
        token, _ = issue_token(issuer, ACCESS_TOKEN_TYPE, caller_claims(records, audience(service)), 60)
        return [("authorization", f"Bearer {token}")]

    tls = network.endpoints.client_tls()
    with open_channel(network.endpoints.address("consent"), "consent", tls=tls) as consent_channel, \
            open_channel(network.endpoints.address("identity"), "identity", tls=tls) as identity_channel:
        decide = consent_pb2_grpc.ConsentServiceStub(consent_channel).Decide
        release = identity_pb2_grpc.IdentityServiceStub(identity_channel).ReleaseDataKey
        request = consent_pb2.DecideRequest(actor_id=oncologist.principal_id, record_id=stored.record_id,
                                            purpose=Purpose.PURPOSE_OF_USE_TREAT)
        before = decide(request, metadata=bearer("consent"), timeout=30)
        kept = decide(request, metadata=bearer("consent"), timeout=30)
        assert before.effect == kept.effect == consent_pb2.DECISION_EFFECT_PERMIT
        key = release(identity_pb2.ReleaseDataKeyRequest(record_id=stored.record_id,
                                                         decision_token=before.decision_token),
                      metadata=bearer("identity"), timeout=30)
        assert len(key.plaintext_key) == 32
        patient.client.revoke_consent(consent.consent_id)
        reason = _denied(lambda: release(identity_pb2.ReleaseDataKeyRequest(
            record_id=stored.record_id, decision_token=kept.decision_token), metadata=bearer("identity"), timeout=30))
        assert reason.startswith("consent revoked")
