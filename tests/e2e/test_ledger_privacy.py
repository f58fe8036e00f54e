"""Ledger privacy: a validator's whole copy of the chain reveals no clinical information.

A realistic story (psychiatric and oncology records written, a consent naming
a sensitive category and a data period granted, read, revoked) runs through
the public APIs; then everything a validator operator holds is searched: the
SQLite chain file (with its WAL) byte for byte, and every transaction
ListTransactions returns, raw and decoded.
"""

from __future__ import annotations

import json
import pathlib

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, operator_client

from carechain.client.sdk import Category, Purpose, permit
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import policy_pb2
from carechain.core.fhir import clinical_date_ms
from carechain.dev.demo import cancer_diagnosis, psychiatric_diagnosis
from carechain.ledger.sqlite_store import DB_FILE
from carechain.ledger.v1 import ledger_pb2

# Distinctive values of the consent's data period, so their encodings can be searched for.
PERIOD_START_MS = 1_577_836_800_123
PERIOD_END_MS = 1_893_456_000_456


def _varint(value: int) -> bytes:
    """The protobuf varint encoding of value (how it would appear in an encoded message)."""
    return common_pb2.Period(start_ms=value).SerializeToString()[1:]


@pytest.fixture(scope="module")
def story(network):
    hospital = new_hospital(network)
    psychiatrist = new_practitioner(network, hospital, "psychiatry")
    oncologist = new_practitioner(network, hospital, "oncology")
    patient, fhir_id = new_patient(network, hospital)
    psychiatric = {**psychiatric_diagnosis(fhir_id), "onsetDateTime": "2024-05-06"}  # inside the data period
    cancer = cancer_diagnosis(fhir_id)
    psychiatric_id = hospital.client.put_record(patient.principal_id, psychiatric).record_id
    cancer_id = hospital.client.put_record(patient.principal_id, cancer).record_id
    provision = permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=psychiatrist.principal_id,
                       categories=[Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH])
    provision.data_period.CopyFrom(common_pb2.Period(start_ms=PERIOD_START_MS, end_ms=PERIOD_END_MS))
    consent = patient.client.grant_consent(provision)
    read = psychiatrist.client.get_record(psychiatric_id)
    with pytest.raises(grpc.RpcError) as denied:
        oncologist.client.get_record(cancer_id)
    patient.client.revoke_consent(consent.consent_id)
    return {
        "network": network, "hospital": hospital, "consent": consent, "read": read, "denied": denied.value,
        "records": (psychiatric, cancer), "record_ids": (psychiatric_id, cancer_id),
    }


def test_the_story_works_with_sealed_metadata(story) -> None:
    """Records and consent open what they sealed: the permitted read returns the exact bytes."""
    psychiatric, _ = story["records"]
    assert json.loads(story["read"].resource_json) == psychiatric
    assert story["read"].resource_type == "Condition"
    assert Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH in story["read"].categories
    assert story["denied"].code() == grpc.StatusCode.PERMISSION_DENIED
    assert story["consent"].policy.provisions[0].data_period.start_ms == PERIOD_START_MS


def _clinical_markers(story) -> dict[str, bytes]:
    psychiatric, cancer = story["records"]
    markers = {
        "resource type": b"Condition",
        "category name MENTAL_HEALTH": b"MENTAL_HEALTH",
        "category name ONCOLOGY": b"ONCOLOGY",
        "SNOMED code of depression": b"370143000",
        "ICD-10 code of depression": b"F32.9",
        "SNOMED code of breast cancer": b"254837009",
        "diagnosis text": b"depressive",
        "onset date text": cancer["onsetDateTime"].encode(),
        "onset date text (psychiatric)": psychiatric["onsetDateTime"].encode(),
        "consent period start": _varint(PERIOD_START_MS),
        "consent period end": _varint(PERIOD_END_MS),
    }
    for i, resource in enumerate((psychiatric, cancer)):
        day = clinical_date_ms(resource)
        if day:
            markers[f"clinical date (day ms) of record {i}"] = _varint(day)
    return markers


def test_a_validators_chain_file_holds_no_clinical_information(story) -> None:
    network = story["network"]
    ledger_dir = pathlib.Path(network.layout.service_dir("ledger"))
    files = [p for p in ledger_dir.rglob("*") if p.is_file() and p.name.startswith(DB_FILE)]
    assert files, f"no chain file under {ledger_dir}"
    raw = b"".join(p.read_bytes() for p in files)
    record_id = story["record_ids"][0].encode()
    assert record_id in raw, "the scan must see the chain's contents (record ids are in clear)"
    for what, marker in _clinical_markers(story).items():
        assert marker not in raw, f"{what} found in clear in the validator's chain file"


def test_list_transactions_reveals_no_clinical_information(story) -> None:
    # Ledger-wide reads are for validators, services, the operator and auditors: what such a reader sees.
    with operator_client(story["network"]) as operator:
        response = operator.ledger.ListTransactions(ledger_pb2.ListTransactionsRequest(limit=1000), timeout=30)
    assert response.transactions, "the ledger must hold the story"
    markers = _clinical_markers(story)
    kinds = set()
    for logged in response.transactions:
        raw = logged.SerializeToString()
        for what, marker in markers.items():
            assert marker not in raw, f"{what} found in transaction {logged.log_index}"
        body = ledger_pb2.TransactionBody.FromString(logged.transaction.body)
        kind = body.WhichOneof("payload")
        kinds.add(kind)
        if kind == "register_record":
            r = body.register_record
            assert not r.resource_type and not r.categories and not r.data_date_ms and not r.author_id
            assert r.sealed_metadata.ciphertext and r.sealed_metadata.wrapped_key.startswith("vault:v")
        elif kind == "grant_consent":
            g = body.grant_consent
            assert not g.HasField("policy") and g.sealed_policy.ciphertext
            assert g.sealed_policy.ciphertext != policy_pb2.ConsentPolicy().SerializeToString()
    assert {"register_record", "grant_consent", "revoke_consent"} <= kinds


def test_validators_are_not_given_the_ledger_metadata_key(story) -> None:
    """Only records and consent are pointed at the key (on Vault, the policies enforce it too:
    tests/integration/test_vault_bootstrap.py)."""
    network = story["network"]
    for name in network.validator_names:
        env = network.service_env(name)
        assert "CARECHAIN_LEDGER_METADATA_KEYRING_DIR" not in env
        assert "CARECHAIN_LEDGER_METADATA_KEY_BACKEND" not in env
