"""Issue 9 part C end to end: checks that cannot be side-stepped, played by the attacker on six real processes.

Each test goes through the public gRPC API, or straight to LedgerService.SubmitTransaction where skipping
the consent or identity service is the attack.
"""

from __future__ import annotations

import os
import time
import uuid
from unittest import mock

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import CareChainClient, Purpose, permit
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.config import RecordsSettings
from carechain.runtime.vault import service_signer

GLASS = "unresponsive on arrival, no consent on file"


def condition(fhir_id: str) -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91302008", "display": "Sepsis"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "onsetDateTime": "2024-05-05"}


def submit(client: CareChainClient, network, created_at_ms: int | None = None,
           **payload: object) -> ledger_pb2.SubmitTransactionResponse:
    """Sign payload as client's principal and submit it straight to the ledger (no consent/identity service).

    The access table refuses a member's own SubmitTransaction (only services submit); the transaction is then
    relayed as a service would (a compromised or careless relay), so the validator's contract rules, not
    only the access table, are what stands in the way.
    """
    body = new_body(network.endpoints.chain_id, client.principal_id, **payload)
    if created_at_ms is not None:
        body.created_at_ms = created_at_ms
    request = ledger_pb2.SubmitTransactionRequest(transaction=sign_transaction(body, client.signer))
    with pytest.raises(grpc.RpcError) as refused:
        client.ledger.SubmitTransaction(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    with relay(network) as service:
        return service.ledger.SubmitTransaction(request, timeout=30)


def relay(network) -> CareChainClient:
    """A client authenticated as svc-records: its key file (embedded), or its Vault Transit key (backends)."""
    key_file = network.layout.key_file("svc-records")
    if key_file.exists():
        return CareChainClient(network.endpoints, Ed25519Signer.from_file("svc-records", key_file))
    with mock.patch.dict(os.environ, network.backends.service_env("records")):
        return CareChainClient(network.endpoints, service_signer(RecordsSettings(), "records"))


def _invalid(response: ledger_pb2.SubmitTransactionResponse, why: str) -> str:
    """The ledger committed the transaction as invalid (it changes no state), for the reason named."""
    assert not response.valid and why in response.reason, response
    return response.reason


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def _eventually(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_hospitals(network):
    north, south = new_hospital(network), new_hospital(network)
    actors = {
        "north": north, "south": south,
        "north_gp": new_practitioner(network, north, "general-practice"),
        "north_er": new_practitioner(network, north, "emergency-medicine"),
        "north_psy": new_practitioner(network, north, "psychiatry"),
        "south_psy": new_practitioner(network, south, "psychiatry"),
    }
    patient, fhir_id = new_patient(network, north)
    actors["patient"] = patient
    yield actors, fhir_id
    for actor in actors.values():
        actor.client.close()


def test_an_organization_writes_records_only_for_its_own_patients(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    patient = actors["patient"].principal_id
    for writer in ("south", "south_psy"):
        code, details = _code(lambda w=writer: actors[w].client.put_record(patient, condition(fhir_id)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert "own patients" in details
    assert actors["north_gp"].client.put_record(patient, condition(fhir_id)).record_id


def sealed(client: CareChainClient, policy: policy_pb2.ConsentPolicy, patient_id: str = "",
           consent_id: str = "") -> ledger_pb2.GrantConsent:
    """A GrantConsent as SealPolicy answers it (sealed and attested by svc-consent), not yet signed."""
    consent_id, patient_id = consent_id or str(uuid.uuid4()), patient_id or client.principal_id
    answer = client.seal_policy(policy, consent_id, patient_id)
    return ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient_id, sealed_policy=answer.sealed_policy,
                                   policy_attestation=answer.policy_attestation)


def test_a_direct_grant_must_meet_the_consent_rules_and_a_valid_one_is_audited(network, two_hospitals) -> None:
    actors, _ = two_hospitals
    patient = actors["patient"]
    gp = actors["north_gp"].principal_id
    # Policies breaking the consent rules get no attestation: SealPolicy refuses them, naming the field.
    no_actor = policy_pb2.ConsentPolicy(provisions=[permit([Purpose.PURPOSE_OF_USE_TREAT])])
    code, details = _code(lambda: patient.client.seal_policy(no_actor, str(uuid.uuid4())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "actors" in details
    no_purpose = policy_pb2.ConsentPolicy(provisions=[permit([], practitioner_id=gp)])
    code, details = _code(lambda: patient.client.seal_policy(no_purpose, str(uuid.uuid4())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "purposes" in details
    # Straight to the ledger instead, sealed without svc-consent's attestation (here: a valid policy's
    # sealed bytes with the attestation stripped, or moved to another consent id): invalid. (A policy in
    # clear is invalid too: tests/unit/ledger/test_contract.py. It is not sent here because even an
    # invalid transaction stays in the chain, and test_ledger_privacy checks this network's chain.)
    treat_gp = policy_pb2.ConsentPolicy(provisions=[permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=gp)])
    stripped = sealed(patient.client, treat_gp)
    stripped.ClearField("policy_attestation")
    _invalid(submit(patient.client, network, grant_consent=stripped), "policy_attestation")
    moved = sealed(patient.client, treat_gp)
    moved.consent_id = str(uuid.uuid4())
    _invalid(submit(patient.client, network, grant_consent=moved), "not attested by svc-consent")
    assert not [c for c in patient.client.list_consents() if c.consent_id in (stripped.consent_id, moved.consent_id)]
    # A valid grant straight to the ledger (skipping the consent service's GrantConsent) is still audited, once.
    good = sealed(patient.client, treat_gp)
    committed = submit(patient.client, network, grant_consent=good)
    assert committed.valid

    def audited() -> list:
        return [e for e in patient.client.access_history()
                if e.event.action == audit_pb2.AUDIT_ACTION_GRANT_CONSENT and good.consent_id in e.event.reason]

    events = _eventually(audited)
    assert len(events) == 1 and f"log index {committed.log_index}" in events[0].event.reason
    time.sleep(1.5)  # another follower round must not add a second event
    assert len(audited()) == 1
    patient.client.revoke_consent(good.consent_id)


def test_an_expired_delegate_cannot_backdate_a_grant(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    patient = actors["patient"]
    delegate, _ = new_patient(network, actors["north"])
    try:
        end_ms = int(time.time() * 1000) + 2_000
        patient.client.register_delegate(delegate.principal_id, policy_pb2.DELEGATE_RELATIONSHIP_PROXY, end_ms=end_ms)
        time.sleep(3)
        stored = actors["north"].client.put_record(patient.principal_id, condition(fhir_id))
        # Sealed and attested (the patient asks SealPolicy; the expired delegate could not), so only
        # the delegate's expired period can make it invalid.
        policy = policy_pb2.ConsentPolicy(provisions=[
            permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=actors["north_gp"].principal_id)])
        grant = sealed(patient.client, policy)
        # Signed "while still a delegate": created_at_ms inside the period, but ordered after it ended.
        _invalid(submit(delegate.client, network, created_at_ms=end_ms - 500, grant_consent=grant), "delegate")
        code, _ = _code(lambda: actors["north_gp"].client.get_record(stored.record_id))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # A creation time far from the ordering time is invalid whoever signs.
        far = sealed(patient.client, policy)
        _invalid(submit(patient.client, network, created_at_ms=1_000, grant_consent=far), "created_at_ms")
    finally:
        delegate.client.close()


def test_a_specialty_consent_covers_the_patients_organization_unless_it_says_any(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    patient = actors["patient"]
    stored = actors["north"].client.put_record(patient.principal_id, condition(fhir_id))
    consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], specialty="psychiatry"))
    assert actors["north_psy"].client.get_record(stored.record_id).resource_json
    code, _ = _code(lambda: actors["south_psy"].client.get_record(stored.record_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    patient.client.revoke_consent(consent.consent_id)
    wide = policy_pb2.Provision(type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[Purpose.PURPOSE_OF_USE_TREAT],
                                actors=[policy_pb2.ConsentActor(specialty="psychiatry", any_organization=True)])
    consent = patient.client.grant_consent(wide)
    assert actors["south_psy"].client.get_record(stored.record_id).resource_json
    patient.client.revoke_consent(consent.consent_id)


def test_break_glass_is_explicit_and_each_use_is_alerted(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    patient, er = actors["patient"], actors["north_er"]
    stored = actors["north"].client.put_record(patient.principal_id, condition(fhir_id))
    # ETREAT alone no longer breaks the glass.
    code, _ = _code(lambda: er.client.get_record(stored.record_id, Purpose.PURPOSE_OF_USE_ETREAT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # Only the attested emergency role may break it, even when asking explicitly.
    code, _ = _code(lambda: actors["north_gp"].client.get_record(stored.record_id, Purpose.PURPOSE_OF_USE_ETREAT,
                                                                  break_glass_reason=GLASS))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    read = er.client.get_record(stored.record_id, Purpose.PURPOSE_OF_USE_ETREAT, break_glass_reason=GLASS)
    assert read.resource_json and read.break_glass and read.break_glass_expires_at_ms > time.time() * 1000
    again = er.client.get_record(stored.record_id, Purpose.PURPOSE_OF_USE_ETREAT, break_glass_reason=GLASS)
    assert again.break_glass_expires_at_ms == read.break_glass_expires_at_ms  # the same window, not renewed
    alerts = [e.event for e in patient.client.access_history()
              if e.event.alert and e.event.record_id == stored.record_id]
    assert len(alerts) == 2 and all(GLASS in a.reason for a in alerts)
    notified = [n for n in patient.client.notifications() if n.event.event.record_id == stored.record_id]
    assert len(notified) == 2
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        items = [i for i in operator.review_items() if i.event.event.record_id == stored.record_id]
    assert len(items) == 2


def test_a_deactivated_practitioner_gets_no_token_and_its_live_token_stops(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    north, patient = actors["north"], actors["patient"]
    doctor = new_practitioner(network, north, "general-practice")
    try:
        stored = north.client.put_record(patient.principal_id, condition(fhir_id))
        consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                      practitioner_id=doctor.principal_id))
        assert doctor.client.get_record(stored.record_id).resource_json  # holds a live records token now
        # Only the registering organisation may deactivate.
        _invalid(submit(actors["south"].client, network, deactivate_principal=ledger_pb2.DeactivatePrincipal(
            principal_id=doctor.principal_id)), "registering authority")
        assert submit(north.client, network, deactivate_principal=ledger_pb2.DeactivatePrincipal(
            principal_id=doctor.principal_id)).valid
        deactivated_at = time.monotonic()

        def refused() -> bool:
            try:
                doctor.client.get_record(stored.record_id)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        assert _eventually(refused, 5.0)
        assert time.monotonic() - deactivated_at < 3.0
        with CareChainClient(network.endpoints, doctor.signer) as fresh:
            code, _ = _code(lambda: fresh.get_record(stored.record_id))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        patient.client.revoke_consent(consent.consent_id)
    finally:
        doctor.client.close()


def test_a_rotated_key_replaces_the_old_one(network, two_hospitals) -> None:
    actors, fhir_id = two_hospitals
    north, patient = actors["north"], actors["patient"]
    doctor = new_practitioner(network, north, "general-practice")
    new_key = Ed25519Signer.generate(doctor.principal_id)
    try:
        stored = north.client.put_record(patient.principal_id, condition(fhir_id))
        consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                      practitioner_id=doctor.principal_id))
        assert submit(north.client, network, rotate_principal_key=ledger_pb2.RotatePrincipalKey(
            principal_id=doctor.principal_id, public_key=new_key.public_key_bytes())).valid
        with CareChainClient(network.endpoints, doctor.signer) as old, \
                CareChainClient(network.endpoints, new_key) as new:
            code, _ = _code(lambda: old.get_record(stored.record_id))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert new.get_record(stored.record_id).resource_json
        patient.client.revoke_consent(consent.consent_id)
    finally:
        doctor.client.close()


def test_the_registering_organization_deactivates_and_rotates_through_identity(network, two_hospitals) -> None:
    actors, _ = two_hospitals
    north, south = actors["north"], actors["south"]
    doctor = new_practitioner(network, north, "general-practice")
    new_key = Ed25519Signer.generate(doctor.principal_id)
    try:
        code, _ = _code(lambda: south.client.rotate_principal_key(doctor.principal_id, new_key.public_key_bytes()))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        rotated = north.client.rotate_principal_key(doctor.principal_id, new_key.public_key_bytes())
        assert rotated.public_key == new_key.public_key_bytes()
        unknown = str(uuid.uuid4())
        with CareChainClient(network.endpoints, new_key) as renewed:
            code, _ = _code(lambda: renewed.get_record(unknown))
            assert code == grpc.StatusCode.NOT_FOUND  # authenticated with the new key
            code, _ = _code(lambda: south.client.deactivate_principal(doctor.principal_id))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            north.client.deactivate_principal(doctor.principal_id)

            def refused() -> bool:
                try:
                    renewed.get_record(unknown)
                except grpc.RpcError as exc:
                    return exc.code() == grpc.StatusCode.UNAUTHENTICATED
                return False

            assert _eventually(refused, 3.0)
    finally:
        doctor.client.close()
