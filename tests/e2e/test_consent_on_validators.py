"""Consent on three validators: it applies only quorum-certified blocks, and the story still works.

The consent service reads the ledger through VerifiedLedgerReader with the
validator set from its settings (CARECHAIN_LEDGER_VALIDATORS); every block it
applies carries a certificate of two of the three validators, checked against
their keys in the trust directory.
"""

from __future__ import annotations

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, operator_client, start_network

from carechain.client.sdk import Category, Purpose, permit
from carechain.core.layout import TrustBundle
from carechain.dev.demo import psychiatric_diagnosis
from carechain.ledger.quorum import ValidatorSet, check_certificate
from carechain.ledger.v1 import ledger_pb2


@pytest.fixture(scope="module")
def three_validators(tmp_path_factory):
    network = start_network(tmp_path_factory.mktemp("consent-validators"), "backends", validators=3)
    try:
        yield network
    finally:
        network.stop()


def test_grant_read_revoke_with_quorum_certified_blocks(three_validators) -> None:
    network = three_validators
    assert network.service_env("consent")["CARECHAIN_LEDGER_VALIDATORS"] == ",".join(network.validator_ids)
    hospital = new_hospital(network)
    psychiatrist = new_practitioner(network, hospital, "psychiatry")
    patient, fhir_id = new_patient(network, hospital)
    record_id = hospital.client.put_record(patient.principal_id, psychiatric_diagnosis(fhir_id)).record_id

    consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                  practitioner_id=psychiatrist.principal_id,
                                                  categories=[Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]))
    assert psychiatrist.client.get_record(record_id).record_id == record_id
    patient.client.revoke_consent(consent.consent_id)
    with pytest.raises(grpc.RpcError) as denied:
        psychiatrist.client.get_record(record_id)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # What consent checked: the grant's block is certified by a quorum of the configured set.
    trust = TrustBundle.load(network.layout.trust_dir)
    validators = ValidatorSet.of(network.validator_ids)
    with operator_client(network) as operator:  # ledger-wide reads are the operator's, not a member's
        head = operator.ledger.GetChainHead(ledger_pb2.GetChainHeadRequest(), timeout=10)
        block = operator.ledger.GetBlock(ledger_pb2.GetBlockRequest(height=head.final_height), timeout=10)
    check_certificate(block.header, block.certificate, trust, validators)
    assert len(block.certificate.signatures) >= 2
