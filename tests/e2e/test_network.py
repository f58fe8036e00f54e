"""The whole network end to end: six real processes, real cryptography, embedded backends."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, records_of, tamper_blob, token_issuer
from opentelemetry import trace

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Category, Kind, Purpose, permit
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.demo import cancer_diagnosis, run_demo
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims

# Every category, NORMAL included: a permit naming categories covers only records carrying one of them.
ALL_SENSITIVE = [
    Category.SENSITIVITY_CATEGORY_NORMAL,
    Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
    Category.SENSITIVITY_CATEGORY_HIV_STI,
    Category.SENSITIVITY_CATEGORY_REPRODUCTIVE,
    Category.SENSITIVITY_CATEGORY_GENETIC,
    Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE,
    Category.SENSITIVITY_CATEGORY_ONCOLOGY,
]


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_demo_story(network) -> None:
    lines: list[str] = []
    outcome = run_demo(network.endpoints, network.layout.operator_signer(), say=lines.append)

    assert outcome.cancer_read_identical, "the oncologist must read back the exact stored bytes"
    # The practitioner is told only that consent does not permit; the category goes to the patient's history.
    assert outcome.psychiatric_denial == "not permitted by the patient's consent"
    assert outcome.after_revoke_denial == "not permitted by the patient's consent"
    psychiatric_denials = [e.event for e in outcome.history if e.event.record_id == outcome.psychiatric_record_id
                           and e.event.outcome == audit_pb2.AUDIT_OUTCOME_DENIED]
    assert psychiatric_denials and all(
        Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH in e.categories for e in psychiatric_denials)
    assert outcome.chain_ok and outcome.blocks_checked > 1

    seen = {
        (e.event.action, e.event.outcome, e.event.record_id, e.event.actor_id) for e in outcome.history
    }
    read, write = audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_ACTION_WRITE
    success, denied = audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_DENIED
    assert (read, success, outcome.cancer_record_id, outcome.oncologist_id) in seen
    assert (read, denied, outcome.psychiatric_record_id, outcome.oncologist_id) in seen
    assert (read, denied, outcome.cancer_record_id, outcome.oncologist_id) in seen
    assert (write, success, outcome.cancer_record_id, outcome.hospital_id) in seen
    actions = {e.event.action for e in outcome.history}
    assert {audit_pb2.AUDIT_ACTION_GRANT_CONSENT, audit_pb2.AUDIT_ACTION_REVOKE_CONSENT} <= actions
    assert all(e.event.patient_id == outcome.patient_id for e in outcome.history)
    assert len(lines) >= 10


@pytest.fixture(scope="module")
def ward(network):
    """A hospital with an oncologist and a patient who granted the oncologist everything for TREAT."""
    hospital = new_hospital(network)
    oncologist = new_practitioner(network, hospital, "oncology")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(
        permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=oncologist.principal_id, categories=ALL_SENSITIVE)
    )
    return hospital, oncologist, patient, fhir_id


def _records_stub(network, token: str | None):
    channel = grpc.insecure_channel(network.endpoints.records)
    stub = records_pb2_grpc.RecordsServiceStub(channel)
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    return channel, lambda: stub.GetRecord(
        records_pb2.GetRecordRequest(record_id=str(uuid.uuid4()), purpose=Purpose.PURPOSE_OF_USE_TREAT),
        metadata=metadata,
        timeout=10,
    )


def test_missing_forged_expired_and_wrong_audience_tokens_are_unauthenticated(network, ward) -> None:
    _, oncologist, _, _ = ward
    claims = caller_claims(Caller(oncologist.principal_id, Kind.PRINCIPAL_KIND_PRACTITIONER, "", "oncology"),
                           audience("records"))
    real_issuer = token_issuer(network)
    forged, _ = issue_token(Ed25519Signer.generate("svc-identity"), ACCESS_TOKEN_TYPE, claims, 60)
    expired, _ = issue_token(real_issuer, ACCESS_TOKEN_TYPE, claims, -120)
    wrong_audience = oncologist.client._tokens.token(audience("audit"))
    for token in (None, forged, expired, wrong_audience, "garbage"):
        channel, call = _records_stub(network, token)
        with channel:
            assert _code(call) == grpc.StatusCode.UNAUTHENTICATED, f"token {token!r:.40} was accepted"


def test_malformed_fhir_is_invalid_argument_and_stores_nothing(network, ward) -> None:
    hospital, _, patient, fhir_id = ward
    before = records_of(network, patient.principal_id)
    cases = [
        b"{not json",
        json.dumps({"resourceType": "Starship"}).encode(),
        json.dumps({"resourceType": "Condition", "code": 3, "subject": {"reference": f"Patient/{fhir_id}"}}).encode(),
        json.dumps(cancer_diagnosis("someone-else")).encode(),
        b"{" + b" " * (5 * 1024 * 1024) + b"}",
    ]
    for raw in cases:
        with pytest.raises(grpc.RpcError) as caught:
            hospital.client.put_record(patient.principal_id, raw)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("resource_json")
    assert records_of(network, patient.principal_id) == before, "a rejected write must not reach the ledger"


def test_tampered_blob_is_data_loss_never_wrong_data(network, ward) -> None:
    hospital, oncologist, patient, fhir_id = ward
    stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    assert oncologist.client.get_record(stored.record_id).resource_json
    tamper_blob(network, stored.content_sha256)
    assert _code(lambda: oncologist.client.get_record(stored.record_id)) == grpc.StatusCode.DATA_LOSS


def test_replayed_consent_transaction_is_rejected(network, ward) -> None:
    _, oncologist, patient, _ = ward
    policy = policy_pb2.ConsentPolicy(
        provisions=[permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=oncologist.principal_id)]
    )
    consent_id = str(uuid.uuid4())

    def signed(grant: ledger_pb2.GrantConsent) -> ledger_pb2.Transaction:
        return sign_transaction(new_body(network.endpoints.chain_id, patient.principal_id, grant_consent=grant),
                                patient.signer)

    # Ledger privacy: a policy in clear is refused, naming the field; the sealed one is granted.
    clear = signed(ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient.principal_id, policy=policy))
    with pytest.raises(grpc.RpcError) as refused:
        patient.client.consent.GrantConsent(consent_pb2.GrantConsentRequest(transaction=clear), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grant_consent.policy" in refused.value.details()
    sealed = patient.client.consent.SealPolicy(consent_pb2.SealPolicyRequest(
        patient_id=patient.principal_id, consent_id=consent_id, policy=policy), timeout=30)
    # Sealed but without svc-consent's attestation: refused too (the ledger would mark it invalid).
    unattested = signed(ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient.principal_id,
                                                sealed_policy=sealed.sealed_policy))
    assert _code(lambda: patient.client.consent.GrantConsent(
        consent_pb2.GrantConsentRequest(transaction=unattested), timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT
    tx = signed(ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient.principal_id,
                                        sealed_policy=sealed.sealed_policy,
                                        policy_attestation=sealed.policy_attestation))
    patient.client.consent.GrantConsent(consent_pb2.GrantConsentRequest(transaction=tx), timeout=30)
    assert _code(
        lambda: patient.client.consent.GrantConsent(consent_pb2.GrantConsentRequest(transaction=tx), timeout=30)
    ) == grpc.StatusCode.ALREADY_EXISTS


def test_a_trace_connects_every_service_of_a_write(network, ward) -> None:
    hospital, _, patient, fhir_id = ward
    with trace.get_tracer("e2e").start_as_current_span("test-write") as span:
        hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    trace_id = format(span.get_span_context().trace_id, "032x")
    for service in ("records", "identity", "storage", "ledger", "audit"):
        log_lines = (network.log_dir / f"{service}.log").read_text().splitlines()
        entries = [json.loads(line) for line in log_lines if line.startswith("{")]
        assert any(e.get("trace_id") == trace_id for e in entries), f"{service} logged nothing for trace {trace_id}"


def test_tampered_ledger_copy_fails_offline_verification_naming_the_block(network, ward, tmp_path) -> None:
    copy = tmp_path / "copy"
    (copy / "ledger").mkdir(parents=True)
    shutil.copytree(network.layout.trust_dir, copy / "trust")
    [database] = list(network.layout.service_dir("ledger").glob("*.db"))
    with sqlite3.connect(database) as source, sqlite3.connect(copy / "ledger" / database.name) as target:
        source.backup(target)

    verify = [sys.executable, "-m", "carechain", "ledger", "verify", "--data-dir", str(copy)]
    clean = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "chain OK" in clean.stdout

    with sqlite3.connect(copy / "ledger" / database.name) as db:
        heights = [row[0] for row in db.execute("SELECT height FROM blocks ORDER BY height")]
        victim = heights[len(heights) // 2]
        (block,) = db.execute("SELECT block FROM blocks WHERE height = ?", (victim,)).fetchone()
        tampered = bytearray(block)
        tampered[-5] ^= 0x01
        db.execute("UPDATE blocks SET block = ? WHERE height = ?", (bytes(tampered), victim))
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert f"block {victim}" in broken.stdout, broken.stdout


def test_reads_fail_closed_when_audit_is_down(network, ward) -> None:
    hospital, oncologist, patient, fhir_id = ward
    stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    assert network.stop_service("audit") == 0, "audit must exit cleanly on SIGTERM"
    try:
        assert _code(lambda: oncologist.client.get_record(stored.record_id)) == grpc.StatusCode.UNAVAILABLE
    finally:
        network.start_service("audit")
    # Records reconnects to the restarted audit service within its reconnect backoff (~1 s; ceiling generous).
    deadline = time.monotonic() + 120
    while True:
        try:
            assert oncologist.client.get_record(stored.record_id).resource_json
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
