"""Sealed ledger metadata: what only the holders of the ledger metadata key can read or make."""

from __future__ import annotations

import pathlib

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import policy_pb2
from carechain.core.errors import IntegrityError
from carechain.ledger.sealing import LEDGER_METADATA_KEY, PAD_BYTES, LedgerSealer
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.keyring import LocalKeyring

CHAIN = "sealing-chain"


@pytest.fixture()
def keyring(tmp_path: pathlib.Path) -> LocalKeyring:
    keyring = LocalKeyring(tmp_path / "metadata-key")
    keyring.create_key(LEDGER_METADATA_KEY)
    return keyring


@pytest.fixture()
def sealer(keyring: LocalKeyring) -> LedgerSealer:
    return LedgerSealer(keyring, CHAIN)


def registration(record_id: str = "rec-1", patient_id: str = "psn-a") -> ledger_pb2.RegisterRecord:
    return ledger_pb2.RegisterRecord(record_id=record_id, patient_id=patient_id, organization_id="org-1",
                                     content_sha256="ab" * 32, version=1)


def sealed_record(sealer: LedgerSealer, metadata: ledger_pb2.RecordMetadata, **fields: str
                  ) -> ledger_pb2.RegisterRecord:
    record = registration(**fields)
    record.sealed_metadata.CopyFrom(sealer.seal_record(record, metadata))
    return record


HIV = ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_HIV_STI],
                                data_date_ms=1_700_000_000_000)


def test_record_metadata_round_trips_and_is_not_in_clear(sealer: LedgerSealer) -> None:
    record = sealed_record(sealer, HIV)

    assert sealer.open_record(record) == HIV
    raw = record.SerializeToString()
    assert b"Condition" not in raw and b"HIV_STI" not in raw
    assert not record.resource_type and not record.categories and not record.data_date_ms


def test_a_second_process_with_the_same_key_opens_it(sealer: LedgerSealer, keyring: LocalKeyring) -> None:
    record = sealed_record(sealer, HIV)
    consent_side = LedgerSealer(LocalKeyring(keyring.directory), CHAIN)  # the consent service's own instance
    assert consent_side.open_record(record) == HIV


@pytest.mark.parametrize("field", ["record_id", "patient_id", "organization_id", "content_sha256", "version"])
def test_sealed_metadata_moved_to_another_registration_does_not_open(sealer: LedgerSealer, field: str) -> None:
    record = sealed_record(sealer, HIV)
    moved = ledger_pb2.RegisterRecord()
    moved.CopyFrom(record)
    setattr(moved, field, 2 if field == "version" else "cd" * 32 if field == "content_sha256" else "other")
    with pytest.raises(IntegrityError):
        sealer.open_record(moved)


def test_another_chain_or_key_cannot_open_it(sealer: LedgerSealer, keyring: LocalKeyring,
                                             tmp_path: pathlib.Path) -> None:
    record = sealed_record(sealer, HIV)
    with pytest.raises(IntegrityError):
        LedgerSealer(keyring, "another-chain").open_record(record)
    other = LocalKeyring(tmp_path / "other-key")
    other.create_key(LEDGER_METADATA_KEY)
    with pytest.raises(IntegrityError):
        LedgerSealer(other, CHAIN).open_record(record)


def test_changed_or_missing_ciphertext_is_refused(sealer: LedgerSealer) -> None:
    record = sealed_record(sealer, HIV)
    flipped = bytearray(record.sealed_metadata.ciphertext)
    flipped[-1] ^= 1
    record.sealed_metadata.ciphertext = bytes(flipped)
    with pytest.raises(IntegrityError):
        sealer.open_record(record)
    with pytest.raises(IntegrityError, match="missing"):
        sealer.open_record(registration())
    forged = registration()
    forged.sealed_metadata.CopyFrom(ledger_pb2.SealedData(key_name=LEDGER_METADATA_KEY, wrapped_key="not-a-key",
                                                          ciphertext=b"x" * 64))
    with pytest.raises(IntegrityError, match="wrapped key"):
        sealer.open_record(forged)


def test_ciphertext_length_does_not_hint_at_the_content(sealer: LedgerSealer) -> None:
    short = ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL])
    long = ledger_pb2.RecordMetadata(
        resource_type="MedicationRequest", data_date_ms=1_700_000_000_000,
        categories=[c.SENSITIVITY_CATEGORY_HIV_STI, c.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
                    c.SENSITIVITY_CATEGORY_SUBSTANCE_USE, c.SENSITIVITY_CATEGORY_GENETIC],
    )
    lengths = {len(sealed_record(sealer, m).sealed_metadata.ciphertext) for m in (short, long)}
    assert len(lengths) == 1
    assert lengths.pop() == 12 + PAD_BYTES + 16  # nonce + one padded block + tag


def test_policies_are_bound_to_consent_id_and_patient(sealer: LedgerSealer) -> None:
    policy = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, categories=[c.SENSITIVITY_CATEGORY_MENTAL_HEALTH])])
    sealed = sealer.seal_policy("c-1", "psn-a", policy)
    grant = ledger_pb2.GrantConsent(consent_id="c-1", patient_id="psn-a", sealed_policy=sealed)

    assert sealer.open_policy(grant) == policy
    assert b"MENTAL" not in grant.SerializeToString()
    for consent_id, patient_id in (("c-2", "psn-a"), ("c-1", "psn-b")):
        with pytest.raises(IntegrityError):
            sealer.open_policy(ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient_id,
                                                       sealed_policy=sealed))


def test_one_data_key_seals_many_payloads_and_is_unwrapped_once(sealer: LedgerSealer, keyring: LocalKeyring
                                                                 ) -> None:
    records = [sealed_record(sealer, HIV, record_id=f"rec-{i}") for i in range(5)]
    assert len({r.sealed_metadata.wrapped_key for r in records}) == 1
    assert len({r.sealed_metadata.ciphertext[:12] for r in records}) == 5, "a fresh nonce per payload"
    reader = LedgerSealer(keyring, CHAIN)
    assert all(reader.open_record(r) == HIV for r in records)


CODED = ledger_pb2.RecordMetadata(
    resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_HIV_STI], data_date_ms=1_700_000_000_000,
    codes=["http://snomed.info/sct|86406008", "http://hl7.org/fhir/sid/icd-10-cm|B20"])


def test_record_codes_are_sealed_not_in_clear(sealer: LedgerSealer) -> None:
    record = sealed_record(sealer, CODED)
    assert sealer.open_record(record) == CODED
    raw = record.SerializeToString()
    for needle in (b"86406008", b"B20", b"snomed", b"icd-10"):
        assert needle not in raw


def test_a_long_code_list_is_sealed_and_opens(sealer: LedgerSealer) -> None:
    many = ledger_pb2.RecordMetadata(resource_type="Observation", categories=[c.SENSITIVITY_CATEGORY_NORMAL],
                                     codes=[f"http://loinc.org|{i}-{i % 10}" for i in range(2000)])
    assert many.ByteSize() > 20 * PAD_BYTES
    record = sealed_record(sealer, many)
    assert sealer.open_record(record) == many
    assert (len(record.sealed_metadata.ciphertext) - 12 - 16) % PAD_BYTES == 0
    # One code more or less does not change the length within a block: codes are padded like the rest.
    short = ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL],
                                      codes=["http://snomed.info/sct|44054006"])
    assert len(sealed_record(sealer, short).sealed_metadata.ciphertext) == 12 + PAD_BYTES + 16
