"""The organisation's side of a patient identity link: its attestation (docs/network-identity.md).

An organisation O that registered patient principal L attests that L is the person whose network
identity is N by signing (Ed25519, :mod:`carechain.core.crypto`) the message below; the patient (or
a delegate) then signs the ``LinkPatientIdentity`` transaction that carries it. The message binds the
chain, both pseudonyms, the organisation and a nonce O chose, which the ledger spends once the link
is committed, so an attestation links once: after an unlink it cannot be replayed.
"""

from __future__ import annotations

import os

from carechain.core.crypto import Signer, verify_signature
from carechain.ledger.v1 import ledger_pb2

LINK_ATTESTATION_CONTEXT = b"carechain-patient-link/v1\n"
ATTESTATION_NONCE_BYTES = 16


def link_attestation_message(chain_id: str, network_patient_id: str, linked_patient_id: str,
                             organization_id: str, nonce: bytes) -> bytes:
    """The exact bytes O signs: length-prefixed fields, so no two field tuples encode alike."""
    parts = [chain_id.encode(), network_patient_id.encode(), linked_patient_id.encode(), organization_id.encode(),
             nonce]
    return LINK_ATTESTATION_CONTEXT + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def attest_link(signer: Signer, chain_id: str, network_patient_id: str,
                linked_patient_id: str) -> ledger_pb2.LinkPatientIdentity:
    """The organisation signer's attestation that its patient linked_patient_id is network_patient_id.

    Returned as the ``LinkPatientIdentity`` payload the patient (or a delegate) signs and submits.
    """
    nonce = os.urandom(ATTESTATION_NONCE_BYTES)
    message = link_attestation_message(chain_id, network_patient_id, linked_patient_id, signer.key_id, nonce)
    return ledger_pb2.LinkPatientIdentity(
        network_patient_id=network_patient_id, linked_patient_id=linked_patient_id,
        organization_id=signer.key_id, attestation_nonce=nonce, attestation=signer.sign(message))


def attestation_valid(chain_id: str, link: ledger_pb2.LinkPatientIdentity, organization_key: bytes) -> bool:
    """True when link.attestation is organization_key's signature over this link on chain_id."""
    if len(link.attestation_nonce) < ATTESTATION_NONCE_BYTES:
        return False
    message = link_attestation_message(chain_id, link.network_patient_id, link.linked_patient_id,
                                       link.organization_id, link.attestation_nonce)
    return verify_signature(organization_key, link.attestation, message)
