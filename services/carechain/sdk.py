"""Python SDK for partner hospitals and patients.

A :class:`CareChainClient` acts as one principal: it proves possession of the
principal's Ed25519 key to the identity service, caches short-lived tokens per
service, and signs the principal's own ledger transactions (consent grants and
revocations are signed by the patient's key, never by a service).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.auth import TokenSource
from carechain.clients import open_channel
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.crypto import Signer
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.localnet import Endpoints
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.telemetry import configure_tracing

Kind = common_pb2.PrincipalKind
Purpose = common_pb2.PurposeOfUse
Category = common_pb2.SensitivityCategory


def permit(
    purposes: Iterable[int],
    practitioner_id: str = "",
    organization_id: str = "",
    specialty: str = "",
    categories: Iterable[int] = (),
    start_ms: int = 0,
    end_ms: int = 0,
) -> policy_pb2.Provision:
    """A permit provision for one actor (practitioner, organisation or specialty)."""
    actors = []
    if practitioner_id:
        actors.append(policy_pb2.ConsentActor(practitioner_id=practitioner_id))
    if organization_id:
        actors.append(policy_pb2.ConsentActor(organization_id=organization_id))
    if specialty:
        actors.append(policy_pb2.ConsentActor(specialty=specialty))
    return policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT,
        actors=actors,
        purposes=list(purposes),
        categories=list(categories),
        period=common_pb2.Period(start_ms=start_ms, end_ms=end_ms),
    )


class CareChainClient:
    """Calls a CareChain network as one principal."""

    def __init__(self, endpoints: Endpoints, signer: Signer) -> None:
        configure_tracing("client")
        self.endpoints = endpoints
        self.signer = signer
        self._channels: list[Any] = []
        self._tokens = TokenSource.for_signer(self._open("identity", authenticated=False), signer)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._open("identity"))
        self.records = records_pb2_grpc.RecordsServiceStub(self._open("records"))
        self.consent = consent_pb2_grpc.ConsentServiceStub(self._open("consent"))
        self.audit = audit_pb2_grpc.AuditServiceStub(self._open("audit"))
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self._open("ledger"))

    def _open(self, service: str, authenticated: bool = True) -> Any:
        channel = open_channel(
            self.endpoints.address(service), service, self._tokens if authenticated else None,
            self.endpoints.client_tls(),
        )
        self._channels.append(channel)
        return channel

    @property
    def principal_id(self) -> str:
        return self.signer.key_id

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> CareChainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- identity ----------------------------------------------------------

    def register(
        self,
        kind: int,
        display_name: str,
        public_key: bytes,
        specialty: str = "",
        fhir_patient_id: str = "",
        organization_id: str = "",
    ) -> identity_pb2.Principal:
        """Register a principal (operator: organisations; organisations: practitioners, patients)."""
        return self.identity.RegisterPrincipal(
            identity_pb2.RegisterPrincipalRequest(
                kind=kind,
                display_name=display_name,
                public_key=public_key,
                specialty=specialty,
                fhir_patient_id=fhir_patient_id,
                organization_id=organization_id,
            ),
            timeout=30,
        )

    # --- records -------------------------------------------------------------

    def put_record(self, patient_id: str, resource: dict[str, Any] | bytes) -> records_pb2.PutRecordResponse:
        """Store a FHIR resource for a patient."""
        raw = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
        request = records_pb2.PutRecordRequest(patient_id=patient_id, resource_json=raw)
        return self.records.PutRecord(request, timeout=30)

    def get_record(self, record_id: str, purpose: int = Purpose.PURPOSE_OF_USE_TREAT) -> records_pb2.GetRecordResponse:
        """Read a record for a purpose of use."""
        return self.records.GetRecord(records_pb2.GetRecordRequest(record_id=record_id, purpose=purpose), timeout=30)

    # --- consent (the client must be the patient) ----------------------------

    def grant_consent(self, *provisions: policy_pb2.Provision) -> consent_pb2.ConsentRecord:
        """Sign and submit a GrantConsent transaction as this patient."""
        grant = ledger_pb2.GrantConsent(
            consent_id=str(uuid.uuid4()),
            patient_id=self.principal_id,
            policy=policy_pb2.ConsentPolicy(provisions=list(provisions)),
        )
        tx = sign_transaction(new_body(self.endpoints.chain_id, self.principal_id, grant_consent=grant), self.signer)
        return self.consent.GrantConsent(consent_pb2.GrantConsentRequest(transaction=tx), timeout=30)

    def revoke_consent(self, consent_id: str) -> consent_pb2.ConsentRecord:
        """Sign and submit a RevokeConsent transaction as this patient."""
        revoke = ledger_pb2.RevokeConsent(consent_id=consent_id, patient_id=self.principal_id)
        tx = sign_transaction(new_body(self.endpoints.chain_id, self.principal_id, revoke_consent=revoke), self.signer)
        return self.consent.RevokeConsent(consent_pb2.RevokeConsentRequest(transaction=tx), timeout=30)

    def access_history(self, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """This patient's access history, newest first."""
        response = self.audit.GetAccessHistory(
            audit_pb2.GetAccessHistoryRequest(patient_id=self.principal_id, since_ms=since_ms, until_ms=until_ms),
            timeout=30,
        )
        return list(response.events)

    # --- ledger --------------------------------------------------------------

    def verify_chain(self) -> ledger_pb2.VerifyChainResponse:
        """Ask the ledger to re-verify its whole chain."""
        return self.ledger.VerifyChain(ledger_pb2.VerifyChainRequest(), timeout=120)
