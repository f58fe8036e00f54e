"""Building blocks for end-to-end tests: principals registered through the real services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from carechain.crypto import Ed25519Signer
from carechain.localnet import LocalNetwork
from carechain.sdk import CareChainClient, Kind


@dataclass
class Actor:
    """A registered principal and a client acting as it."""

    principal_id: str
    signer: Ed25519Signer
    client: CareChainClient


def register(network: LocalNetwork, registrar: CareChainClient, kind: int, name: str, **fields: str) -> Actor:
    key = Ed25519Signer.generate("pending")
    principal = registrar.register(kind, name, key.public_key_bytes(), **fields)
    signer = key.with_key_id(principal.principal_id)
    return Actor(principal.principal_id, signer, CareChainClient(network.endpoints, signer))


def new_hospital(network: LocalNetwork) -> Actor:
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        return register(network, operator, Kind.PRINCIPAL_KIND_ORGANIZATION, f"Hospital {uuid.uuid4().hex[:6]}")


def new_practitioner(network: LocalNetwork, hospital: Actor, specialty: str) -> Actor:
    return register(network, hospital.client, Kind.PRINCIPAL_KIND_PRACTITIONER, f"Dr. {specialty}", specialty=specialty)


def new_patient(network: LocalNetwork, hospital: Actor, fhir_patient_id: str | None = None) -> tuple[Actor, str]:
    fhir_id = fhir_patient_id or str(uuid.uuid4())
    return register(network, hospital.client, Kind.PRINCIPAL_KIND_PATIENT, "Patient", fhir_patient_id=fhir_id), fhir_id
