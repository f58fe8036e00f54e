"""Consent state derived from ledger transactions."""

from __future__ import annotations

import threading

import pytest
from consent_ledger_fake import SEALER, FakeLedger, register_principal, register_record, sealed_grant

from carechain.common.v1 import common_pb2 as c
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import FailedPrecondition
from carechain.ledger.v1 import ledger_pb2

OPERATOR = Ed25519Signer.generate("operator")
RECORDS = Ed25519Signer.generate("svc-records")
PATIENT = Ed25519Signer.generate("pat-1")
OTHER = Ed25519Signer.generate("pat-2")
POLICY = policy_pb2.ConsentPolicy(  # meets the consent rules: a purpose and an actor on the permit
    provisions=[policy_pb2.Provision(type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[c.PURPOSE_OF_USE_TREAT],
                                     actors=[policy_pb2.ConsentActor(organization_id="org-a")])]
)


def grant(ledger: FakeLedger, signer: Ed25519Signer, consent_id: str, patient_id: str | None = None, valid=True):
    return ledger.append(signer, valid=valid, grant_consent=sealed_grant(
        consent_id, patient_id or signer.key_id, POLICY))


def revoke(ledger: FakeLedger, signer: Ed25519Signer, consent_id: str, patient_id: str | None = None, valid=True):
    return ledger.append(signer, valid=valid, revoke_consent=ledger_pb2.RevokeConsent(
        consent_id=consent_id, patient_id=patient_id or signer.key_id))


def test_state_follows_valid_transactions_only() -> None:
    ledger = FakeLedger()
    register_principal(ledger, OPERATOR, "prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
    register_principal(ledger, OPERATOR, "prac-evil", c.PRINCIPAL_KIND_PRACTITIONER, valid=False)
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_ONCOLOGY])
    register_record(ledger, RECORDS, "rec-bad", "pat-1", valid=False)
    grant(ledger, PATIENT, "c-1")
    grant(ledger, PATIENT, "c-invalid", valid=False)
    revoke(ledger, PATIENT, "c-1", valid=False)  # a rejected revocation changes nothing

    state = ConsentState(SEALER)
    assert state.sync(ledger.ListTransactions) == 7

    practitioner = state.principal("prac-1")
    assert practitioner is not None and practitioner.is_practitioner
    assert (practitioner.organization_id, practitioner.specialty) == ("org-a", "oncology")
    assert state.principal("prac-evil") is None
    record = state.record("rec-1")
    assert record is not None and record.patient_id == "pat-1"
    assert record.categories == (c.SENSITIVITY_CATEGORY_ONCOLOGY,) and not record.erased
    assert state.record("rec-bad") is None
    consents = state.consents_of("pat-1")
    assert [x.consent_id for x in consents] == ["c-1"]
    assert consents[0].status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert consents[0].granted_log_index == 4
    assert consents[0].policy == POLICY


def test_revocation_and_erasure_are_seen_by_the_next_sync() -> None:
    ledger = FakeLedger()
    register_record(ledger, RECORDS, "rec-1", "pat-1")
    register_record(ledger, RECORDS, "rec-2", "pat-1")
    register_record(ledger, RECORDS, "rec-3", "pat-2")
    grant(ledger, PATIENT, "c-1")
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)

    revoke(ledger, PATIENT, "c-1")
    ledger.append(PATIENT, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1"))
    state.sync(ledger.ListTransactions)

    consent = state.consent("c-1")
    assert consent is not None
    assert consent.status == consent_pb2.CONSENT_STATUS_REVOKED and consent.revoked_log_index == 4
    assert state.record("rec-1").erased and state.record("rec-2").erased
    assert not state.record("rec-3").erased  # another patient's record is untouched


def test_erasure_by_record_id_and_of_another_patients_record() -> None:
    ledger = FakeLedger()
    register_record(ledger, RECORDS, "rec-1", "pat-1")
    register_record(ledger, RECORDS, "rec-2", "pat-1")
    register_record(ledger, RECORDS, "rec-3", "pat-2")
    ledger.append(PATIENT, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["rec-2", "rec-3"]))
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)
    assert not state.record("rec-1").erased
    assert state.record("rec-2").erased
    assert not state.record("rec-3").erased


def test_revocation_by_someone_else_changes_nothing() -> None:
    ledger = FakeLedger()
    grant(ledger, PATIENT, "c-1")
    revoke(ledger, OTHER, "c-1", patient_id="pat-2")
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)
    assert state.consent("c-1").status == consent_pb2.CONSENT_STATUS_ACTIVE


def test_sync_pages_through_a_long_log_and_is_incremental() -> None:
    ledger = FakeLedger(default_limit=3)
    for i in range(10):
        register_record(ledger, RECORDS, f"rec-{i}", "pat-1")
    state = ConsentState(SEALER)
    assert state.sync(ledger.ListTransactions) == 10
    assert all(state.record(f"rec-{i}") for i in range(10))
    calls = ledger.list_calls
    assert state.sync(ledger.ListTransactions) == 10
    assert ledger.list_calls == calls + 1  # nothing new: one cheap call
    grant(ledger, PATIENT, "c-1")
    assert state.sync(ledger.ListTransactions) == 11


def test_copies_returned_cannot_change_the_state() -> None:
    ledger = FakeLedger()
    grant(ledger, PATIENT, "c-1")
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)
    state.consents_of("pat-1")[0].status = consent_pb2.CONSENT_STATUS_REVOKED
    assert state.consent("c-1").status == consent_pb2.CONSENT_STATUS_ACTIVE


def test_a_gap_in_the_log_is_refused() -> None:
    state = ConsentState(SEALER)
    with pytest.raises(FailedPrecondition, match="skipped"):
        state.apply(ledger_pb2.LoggedTransaction(log_index=3, result=ledger_pb2.TransactionResult(valid=True)))


def test_concurrent_syncs_apply_each_transaction_once() -> None:
    ledger = FakeLedger(default_limit=2)
    for i in range(40):
        grant(ledger, PATIENT, f"c-{i}")
    state = ConsentState(SEALER)
    threads = [threading.Thread(target=state.sync, args=(ledger.ListTransactions,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.cursor == 40
    assert [x.consent_id for x in state.consents_of("pat-1")] == [f"c-{i}" for i in range(40)]


def test_sealed_payloads_that_do_not_open_are_not_applied(tmp_path) -> None:
    """Deny by default: metadata or a policy not sealed under the ledger metadata key is ignored."""
    from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
    from carechain.runtime.keyring import LocalKeyring

    ledger = FakeLedger()
    other = LocalKeyring(tmp_path / "another-key")
    other.create_key(LEDGER_METADATA_KEY)
    stranger = LedgerSealer(other, "test-chain")  # the right chain, but not the network's key
    record = ledger_pb2.RegisterRecord(record_id="rec-x", patient_id="pat-1", organization_id="org-a",
                                       content_sha256="00" * 32, version=1)
    record.sealed_metadata.CopyFrom(stranger.seal_record(
        record, ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL])))
    ledger.append(RECORDS, register_record=record)
    ledger.append(PATIENT, grant_consent=ledger_pb2.GrantConsent(
        consent_id="c-x", patient_id="pat-1", sealed_policy=stranger.seal_policy("c-x", "pat-1", POLICY)))
    register_record(ledger, RECORDS, "rec-ok", "pat-1")

    state = ConsentState(SEALER)
    assert state.sync(ledger.ListTransactions) == 3
    assert state.record("rec-x") is None and state.consent("c-x") is None
    assert state.record("rec-ok") is not None


def test_an_unreachable_metadata_key_stops_folding_before_the_transaction(tmp_path) -> None:
    from carechain.core.errors import NotFound
    from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
    from carechain.runtime.keyring import LocalKeyring

    keyring = LocalKeyring(tmp_path / "key")
    keyring.create_key(LEDGER_METADATA_KEY)
    sealer = LedgerSealer(keyring, "test-chain")
    ledger = FakeLedger()
    register_principal(ledger, OPERATOR, "prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a")
    record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="pat-1", organization_id="org-a",
                                       content_sha256="00" * 32, version=1)
    record.sealed_metadata.CopyFrom(sealer.seal_record(
        record, ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL])))
    ledger.append(RECORDS, register_record=record)
    keyring.delete_key(LEDGER_METADATA_KEY)  # the key manager can no longer unwrap

    state = ConsentState(LedgerSealer(keyring, "test-chain"))
    with pytest.raises(NotFound):
        state.sync(ledger.ListTransactions)
    assert state.cursor == 1, "the record is not skipped: folding resumes there once the key is back"


def test_a_committed_policy_breaking_the_consent_rules_is_not_applied() -> None:
    """Consent re-checks what it opens (validate_grant_policy), whatever the ledger's verdict said."""
    ledger = FakeLedger()
    open_permit = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[c.PURPOSE_OF_USE_TREAT])])  # no actor: anyone
    ledger.append(PATIENT, grant_consent=sealed_grant("c-open", "pat-1", open_permit))
    grant(ledger, PATIENT, "c-ok")
    state = ConsentState(SEALER)
    assert state.sync(ledger.ListTransactions) == 2
    assert [x.consent_id for x in state.consents_of("pat-1")] == ["c-ok"]
