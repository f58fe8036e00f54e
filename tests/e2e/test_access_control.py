"""Least privilege, cell by cell: every RPC of every service called by every kind of principal.

Six real service processes (embedded backends). Each cell calls one RPC through the public
gRPC API as one principal and checks the access table's verdict: admitted (the handler ran:
any answer but UNAUTHENTICATED / PERMISSION_DENIED), hidden (NOT_FOUND, the same answer as
for something that does not exist) or refused (PERMISSION_DENIED; UNAUTHENTICATED without a
token). Requests are built so that admitted callers change nothing they should not (they
fail validation after admission) unless the call is harmless to repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from helpers import start_network

from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.sdk import CareChainClient, Category, Kind, Purpose, permit
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import SERVICES, service_principal_id
from carechain.dev.demo import cancer_diagnosis
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

STUBS = {
    "identity": identity_pb2_grpc.IdentityServiceStub,
    "storage": storage_pb2_grpc.StorageServiceStub,
    "ledger": ledger_pb2_grpc.LedgerServiceStub,
    "consent": consent_pb2_grpc.ConsentServiceStub,
    "audit": audit_pb2_grpc.AuditServiceStub,
    "records": records_pb2_grpc.RecordsServiceStub,
}
# The principals of the issue's matrix (every service is a principal of its own).
PATIENT, OTHER_PATIENT, DELEGATE = "patient", "other-patient", "delegate"
PRACTITIONER, OTHER_PRACTITIONER = "practitioner-same-org", "practitioner-other-org"
ORGANIZATION, OPERATOR, AUDITOR, NOBODY = "organization", "operator", "auditor", "no-token"
SERVICE_ACTORS = tuple(service_principal_id(s) for s in SERVICES)
ACTORS = (NOBODY, PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION, *SERVICE_ACTORS,
          OPERATOR, AUDITOR)
MEMBERS = (PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)
EVERYONE = tuple(a for a in ACTORS if a != NOBODY)
LEDGER_WIDE = (*SERVICE_ACTORS, OPERATOR, AUDITOR)


class Caller:
    """Stubs of all six services, authenticated as one principal (or not at all)."""

    def __init__(self, network: Any, signer: Ed25519Signer | None) -> None:
        endpoints = network.endpoints
        self._channels = []
        tokens = None
        if signer is not None:
            tokens = TokenSource.for_signer(self._open(endpoints, "identity", None), signer)
        self.stubs = {name: stub(self._open(endpoints, name, tokens)) for name, stub in STUBS.items()}

    def _open(self, endpoints: Any, service: str, tokens: TokenSource | None) -> grpc.Channel:
        channel = open_channel(endpoints.address(service), service, tokens, endpoints.client_tls())
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@dataclass
class World:
    """A network with two hospitals, their people, records, a consent and a delegation."""

    network: Any
    callers: dict[str, Caller]
    clients: dict[str, CareChainClient]
    ids: dict[str, str]
    record_id: str
    other_record_id: str
    record_log_index: int
    consent_id: str
    event_sequence: int
    patient_fhir_id: str

    def call(self, actor: str, service: str, rpc: str, request: Any) -> grpc.StatusCode:
        """The status of one call (OK when it returned)."""
        method = getattr(self.callers[actor].stubs[service], rpc)
        try:
            result = method(request, timeout=60)
            if hasattr(result, "__next__"):
                # A stream: refused before its first message, or admitted (a follow stream never ends).
                for _ in result:
                    result.cancel()
                    break
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def _signer(network: Any, principal_id: str) -> Ed25519Signer:
    return Ed25519Signer.from_file(principal_id, network.layout.key_file(principal_id))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    network = start_network(tmp_path_factory.mktemp("access"), "embedded")
    clients: dict[str, CareChainClient] = {}
    signers: dict[str, Ed25519Signer] = {OPERATOR: network.layout.operator_signer()}
    try:
        with CareChainClient(network.endpoints, signers[OPERATOR]) as operator:
            def register(registrar: CareChainClient, actor: str, kind: int, name: str, **fields: str) -> None:
                key = Ed25519Signer.generate("pending")
                principal = registrar.register(kind, name, key.public_key_bytes(), **fields)
                signers[actor] = key.with_key_id(principal.principal_id)
                clients[actor] = CareChainClient(network.endpoints, signers[actor])

            register(operator, ORGANIZATION, Kind.PRINCIPAL_KIND_ORGANIZATION, "Hospital A")
            register(operator, "other-organization", Kind.PRINCIPAL_KIND_ORGANIZATION, "Hospital B")
            register(operator, AUDITOR, Kind.PRINCIPAL_KIND_AUDITOR, "External auditor")
        hospital, other_hospital = clients[ORGANIZATION], clients["other-organization"]
        fhir_id = str(uuid.uuid4())
        register(hospital, PATIENT, Kind.PRINCIPAL_KIND_PATIENT, "Pat Secret-Name", fhir_patient_id=fhir_id)
        other_fhir_id = str(uuid.uuid4())
        register(hospital, OTHER_PATIENT, Kind.PRINCIPAL_KIND_PATIENT, "Quinn Other", fhir_patient_id=other_fhir_id)
        register(hospital, DELEGATE, Kind.PRINCIPAL_KIND_PATIENT, "Gina Guardian", fhir_patient_id=str(uuid.uuid4()))
        register(hospital, PRACTITIONER, Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Same", specialty="oncology")
        register(other_hospital, OTHER_PRACTITIONER, Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Other",
                 specialty="oncology")
        for service in SERVICES:
            signers[service_principal_id(service)] = _signer(network, service_principal_id(service))
        ids = {actor: signer.key_id for actor, signer in signers.items()}

        stored = hospital.put_record(ids[PATIENT], cancer_diagnosis(fhir_id))
        other = hospital.put_record(ids[OTHER_PATIENT], cancer_diagnosis(other_fhir_id))
        patient = clients[PATIENT]
        consent = patient.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=ids[PRACTITIONER],
                                               categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
        patient.register_delegate(ids[DELEGATE], policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)
        clients[OTHER_PATIENT].grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=ids[PRACTITIONER]))
        assert clients[PRACTITIONER].get_record(stored.record_id).resource_json
        sequence = max(e.sequence for e in patient.access_history())

        callers = {actor: Caller(network, signers.get(actor)) for actor in ACTORS}
        yield World(network, callers, clients, ids, stored.record_id, other.record_id, stored.ledger_log_index,
                    consent.consent_id, sequence, fhir_id)
        for caller in callers.values():
            caller.close()
    finally:
        for client in clients.values():
            client.close()
        network.stop()


@dataclass(frozen=True)
class Cell:
    """One RPC with one request, and who the access table admits (or hides it from)."""

    service: str
    rpc: str
    request: Callable[[World], Any]
    admitted: tuple[str, ...]
    hidden: tuple[str, ...] = ()  # answered NOT_FOUND, like something that does not exist

    @property
    def name(self) -> str:
        return f"{self.service}.{self.rpc}"


def _blob_upload(world: World) -> Iterator[storage_pb2.PutBlobRequest]:
    return iter([storage_pb2.PutBlobRequest(chunk=b"no metadata first")])


def _patient_id(world: World) -> str:
    return world.ids[PATIENT]


def _signed_grant_by(actor: str) -> Callable[[World], ledger_pb2.SubmitTransactionRequest]:
    def build(world: World) -> ledger_pb2.SubmitTransactionRequest:
        signer = world.clients[actor].signer
        policy = policy_pb2.ConsentPolicy(
            provisions=[permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=world.ids[OTHER_PRACTITIONER])])
        grant = ledger_pb2.GrantConsent(consent_id=str(uuid.uuid4()), patient_id=signer.key_id, policy=policy)
        body = new_body(world.network.endpoints.chain_id, signer.key_id, grant_consent=grant)
        return ledger_pb2.SubmitTransactionRequest(transaction=sign_transaction(body, signer))

    return build


OWN_OR_DELEGATED_READ = (PATIENT, DELEGATE, *SERVICE_ACTORS)
CELLS = [
    # --- identity
    Cell("identity", "RegisterPrincipal", lambda w: identity_pb2.RegisterPrincipalRequest(
        kind=Kind.PRINCIPAL_KIND_ORGANIZATION), (OPERATOR,)),
    Cell("identity", "RegisterPrincipal", lambda w: identity_pb2.RegisterPrincipalRequest(
        kind=Kind.PRINCIPAL_KIND_PATIENT), (ORGANIZATION,)),
    Cell("identity", "GetPrincipal", lambda w: identity_pb2.GetPrincipalRequest(principal_id=_patient_id(w)),
         EVERYONE),
    Cell("identity", "CreateChallenge", lambda w: identity_pb2.CreateChallengeRequest(principal_id="someone"),
         ACTORS),
    Cell("identity", "IssueToken", lambda w: identity_pb2.IssueTokenRequest(principal_id="someone", audience="x"),
         ACTORS),
    Cell("identity", "GetTokenIssuerKeys", lambda w: identity_pb2.GetTokenIssuerKeysRequest(), ACTORS),
    Cell("identity", "GenerateDataKey", lambda w: identity_pb2.GenerateDataKeyRequest(), ("svc-records",)),
    Cell("identity", "ReleaseDataKey", lambda w: identity_pb2.ReleaseDataKeyRequest(), ("svc-records",)),
    Cell("identity", "DeleteDataKey", lambda w: identity_pb2.DeleteDataKeyRequest(), ("svc-records",)),
    # Empty batches: admitted callers reach the handler's validation (INVALID_ARGUMENT) and change nothing.
    Cell("identity", "GenerateDataKeys", lambda w: identity_pb2.GenerateDataKeysRequest(), ("svc-records",)),
    Cell("identity", "ReleaseDataKeys", lambda w: identity_pb2.ReleaseDataKeysRequest(), ("svc-records",)),
    # An empty principal id: admitted callers reach the handler's validation and change nothing.
    Cell("identity", "DeactivatePrincipal", lambda w: identity_pb2.DeactivatePrincipalRequest(),
         (ORGANIZATION, OPERATOR)),
    Cell("identity", "RotatePrincipalKey", lambda w: identity_pb2.RotatePrincipalKeyRequest(),
         (ORGANIZATION, OPERATOR)),
    # An empty JWKS / assertion: admitted callers reach the handler's validation and change nothing.
    Cell("identity", "RegisterClientKeys", lambda w: identity_pb2.RegisterClientKeysRequest(),
         (PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)),
    Cell("identity", "ExchangeClientAssertion", lambda w: identity_pb2.ExchangeClientAssertionRequest(
        scope="system/Condition.rs", purpose_of_use=Purpose.PURPOSE_OF_USE_TREAT), ACTORS),
    Cell("identity", "RotatePatientKey", lambda w: identity_pb2.RotatePatientKeyRequest(patient_id=_patient_id(w)),
         (PATIENT, OPERATOR)),
    # Network patient identity: no transaction, so admitted callers reach validation and change nothing; another
    # organisation's practitioner cannot resolve this hospital's FHIR id (NOT_FOUND, as an unknown id).
    Cell("identity", "LinkPatient", lambda w: identity_pb2.LinkPatientRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("identity", "UnlinkPatient", lambda w: identity_pb2.UnlinkPatientRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)),
    Cell("identity", "ResolvePatient", lambda w: identity_pb2.ResolvePatientRequest(fhir_patient_id=w.patient_fhir_id),
         (PRACTITIONER, ORGANIZATION), hidden=(OTHER_PRACTITIONER,)),
    # --- storage
    Cell("storage", "PutBlob", _blob_upload, ("svc-records",)),
    Cell("storage", "GetBlob", lambda w: storage_pb2.GetBlobRequest(sha256="00"), ("svc-records",)),
    Cell("storage", "PutBlobs", lambda w: storage_pb2.PutBlobsRequest(), ("svc-records",)),
    Cell("storage", "GetBlobs", lambda w: storage_pb2.GetBlobsRequest(), ("svc-records",)),
    Cell("storage", "StatBlob", lambda w: storage_pb2.StatBlobRequest(sha256="00"), ("svc-records",)),
    Cell("storage", "ListBlobs", lambda w: storage_pb2.ListBlobsRequest(), ("svc-records",)),
    Cell("storage", "DeleteBlob", lambda w: storage_pb2.DeleteBlobRequest(sha256="00"), ("svc-records",)),
    Cell("storage", "PruneIncoming", lambda w: storage_pb2.PruneIncomingRequest(), ("svc-records",)),
    # --- ledger
    Cell("ledger", "SubmitTransaction", lambda w: ledger_pb2.SubmitTransactionRequest(), SERVICE_ACTORS),
    Cell("ledger", "SubmitTransactions", lambda w: ledger_pb2.SubmitTransactionsRequest(), SERVICE_ACTORS),
    Cell("ledger", "WatchBlocks", lambda w: ledger_pb2.WatchBlocksRequest(from_height=1), LEDGER_WIDE),
    Cell("ledger", "GetChainHead", lambda w: ledger_pb2.GetChainHeadRequest(), LEDGER_WIDE),
    Cell("ledger", "GetBlock", lambda w: ledger_pb2.GetBlockRequest(height=1), LEDGER_WIDE),
    Cell("ledger", "ListTransactions", lambda w: ledger_pb2.ListTransactionsRequest(limit=1), LEDGER_WIDE),
    Cell("ledger", "GetRecordEntry", lambda w: ledger_pb2.GetRecordEntryRequest(record_id=w.record_id),
         (PATIENT, *LEDGER_WIDE), hidden=(OTHER_PATIENT, DELEGATE)),
    Cell("ledger", "GetInclusionProof", lambda w: ledger_pb2.GetInclusionProofRequest(log_index=w.record_log_index),
         (PATIENT, *LEDGER_WIDE), hidden=(OTHER_PATIENT, DELEGATE)),
    Cell("ledger", "GetConsistencyProof", lambda w: ledger_pb2.GetConsistencyProofRequest(first_size=1,
                                                                                          second_size=2),
         EVERYONE),
    Cell("ledger", "VerifyChain", lambda w: ledger_pb2.VerifyChainRequest(), LEDGER_WIDE),
    Cell("ledger", "GetCheckpoint", lambda w: ledger_pb2.GetCheckpointRequest(), EVERYONE),
    Cell("ledger", "GetEvidence", lambda w: ledger_pb2.GetEvidenceRequest(), LEDGER_WIDE),
    # Search (issue 14): which records a patient has is for svc-records alone (consent decides each).
    Cell("ledger", "ListPatientRecords", lambda w: ledger_pb2.ListPatientRecordsRequest(patient_id=_patient_id(w)),
         ("svc-records",)),
    # --- consent
    Cell("consent", "GrantConsent", lambda w: consent_pb2.GrantConsentRequest(), (PATIENT, OTHER_PATIENT, DELEGATE,
                                                                                   PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("consent", "RevokeConsent", lambda w: consent_pb2.RevokeConsentRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("consent", "ListConsents", lambda w: consent_pb2.ListConsentsRequest(patient_id=_patient_id(w)),
         OWN_OR_DELEGATED_READ),
    Cell("consent", "Decide", lambda w: consent_pb2.DecideRequest(), ("svc-records",)),
    Cell("consent", "DecideMany", lambda w: consent_pb2.DecideManyRequest(requests=[consent_pb2.DecideRequest()]),
         ("svc-records",)),
    Cell("consent", "CheckDecision", lambda w: consent_pb2.CheckDecisionRequest(), ("svc-identity",)),
    Cell("consent", "CheckDecisions", lambda w: consent_pb2.CheckDecisionsRequest(), ("svc-identity",)),
    Cell("consent", "ExportConsent", lambda w: consent_pb2.ExportConsentRequest(consent_id=w.consent_id),
         OWN_OR_DELEGATED_READ, hidden=(OTHER_PATIENT, PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("consent", "RegisterDelegate", lambda w: consent_pb2.RegisterDelegateRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE)),
    Cell("consent", "RevokeDelegate", lambda w: consent_pb2.RevokeDelegateRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE)),
    Cell("consent", "ListDelegates", lambda w: consent_pb2.ListDelegatesRequest(patient_id=_patient_id(w)),
         OWN_OR_DELEGATED_READ),
    Cell("consent", "SealPolicy", lambda w: consent_pb2.SealPolicyRequest(patient_id=_patient_id(w)),
         (PATIENT, DELEGATE)),
    # The FHIR gateway's signed Consent, relayed by records alone; no Consent: admitted callers stop at
    # validation, nothing granted.
    Cell("consent", "SubmitFhirConsent", lambda w: consent_pb2.SubmitFhirConsentRequest(
        caller_id=_patient_id(w)), ("svc-records",)),
    # --- audit
    Cell("audit", "RecordEvent", lambda w: audit_pb2.RecordEventRequest(), SERVICE_ACTORS),
    Cell("audit", "RecordEvents", lambda w: audit_pb2.RecordEventsRequest(), SERVICE_ACTORS),
    # The delegate is the patient's guardian: a personal representative reads the accounting (164.502(g)).
    Cell("audit", "GetAccessHistory", lambda w: audit_pb2.GetAccessHistoryRequest(patient_id=_patient_id(w)),
         (PATIENT, DELEGATE, *SERVICE_ACTORS)),
    Cell("audit", "VerifyAuditChain", lambda w: audit_pb2.VerifyAuditChainRequest(), LEDGER_WIDE),
    Cell("audit", "StreamEvents", lambda w: audit_pb2.StreamEventsRequest(replay_only=True, after_sequence=10**9),
         (*SERVICE_ACTORS, OPERATOR)),
    Cell("audit", "StreamEventBatches",
         lambda w: audit_pb2.StreamEventsRequest(replay_only=True, after_sequence=10**9), (*SERVICE_ACTORS, OPERATOR)),
    Cell("audit", "ExportFhirBundle", lambda w: audit_pb2.ExportFhirBundleRequest(patient_id=_patient_id(w)),
         (PATIENT, *SERVICE_ACTORS, OPERATOR)),
    Cell("audit", "GetEventProof", lambda w: audit_pb2.GetEventProofRequest(sequence=w.event_sequence),
         (PATIENT, *LEDGER_WIDE), hidden=(OTHER_PATIENT, DELEGATE)),
    Cell("audit", "ListNotifications", lambda w: audit_pb2.ListNotificationsRequest(patient_id=_patient_id(w)),
         (PATIENT, *SERVICE_ACTORS)),
    Cell("audit", "ListReviewItems", lambda w: audit_pb2.ListReviewItemsRequest(), (*SERVICE_ACTORS, OPERATOR)),
    Cell("audit", "ResolveReviewItem", lambda w: audit_pb2.ResolveReviewItemRequest(),
         (*SERVICE_ACTORS, OPERATOR)),
    # --- records
    # Admitted by the table; a practitioner of another organisation is then refused by the write rule
    # (an organisation writes records only for its own patients).
    Cell("records", "PutRecord", lambda w: records_pb2.PutRecordRequest(patient_id=_patient_id(w)),
         (PRACTITIONER, ORGANIZATION)),
    Cell("records", "GetRecord", lambda w: records_pb2.GetRecordRequest(record_id=w.record_id),
         (PRACTITIONER, OTHER_PRACTITIONER)),
    # The bulk and streaming writes are admitted by the table for any practitioner; a bad input is then
    # INVALID_ARGUMENT for everyone, and valid input for another organisation's patient is refused by the
    # write rule (PERMISSION_DENIED for the bundle or stream, per resource for ImportRecords).
    Cell("records", "ImportBundle", lambda w: records_pb2.ImportBundleRequest(
        patient_ids=[_patient_id(w)], bundle_json=b'{"resourceType": "Bundle", "type": "batch"}'),
         (PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)),
    Cell("records", "ImportRecords", lambda w: iter([records_pb2.ImportRecordsRequest(
        patient_id=_patient_id(w), resource_json=b"{}")]), (PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)),
    Cell("records", "PutRecordStream", lambda w: iter([records_pb2.PutRecordStreamRequest(
        header=records_pb2.LargeRecordHeader(patient_id=_patient_id(w), resource_json=b"{}"))]),
         (PRACTITIONER, OTHER_PRACTITIONER, ORGANIZATION)),
    Cell("records", "GetRecordStream", lambda w: records_pb2.GetRecordRequest(record_id=w.record_id),
         (PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("records", "Reconcile", lambda w: records_pb2.ReconcileRequest(dry_run=True), (OPERATOR,)),
    # Versions: the table admits practitioners and organisations; only the author's (hospital A's) are then
    # past the authorship rule (and fail validation: nothing is written); another organisation's
    # practitioner is refused as for a record that does not exist.
    Cell("records", "UpdateRecord", lambda w: records_pb2.UpdateRecordRequest(record_id=w.record_id,
                                                                              resource_json=b"{}"),
         (PRACTITIONER, ORGANIZATION)),
    # No purpose: INVALID_ARGUMENT once admitted, before consent is asked (as the GetRecord cell).
    Cell("records", "ListRecordVersions", lambda w: records_pb2.ListRecordVersionsRequest(record_id=w.record_id),
         (PRACTITIONER, OTHER_PRACTITIONER)),
    # Search and summary (issue 14): admitted for any practitioner; without a purpose they stop at validation;
    # with one, the consented practitioner gets the permitted records and another hospital's practitioner
    # (no consent) the same PERMISSION_DENIED as GetRecord.
    Cell("records", "SearchRecords", lambda w: records_pb2.SearchRecordsRequest(patient_id=_patient_id(w)),
         (PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("records", "SearchRecords", lambda w: records_pb2.SearchRecordsRequest(
        patient_id=_patient_id(w), purpose=Purpose.PURPOSE_OF_USE_TREAT), (PRACTITIONER,)),
    Cell("records", "GetPatientSummary", lambda w: records_pb2.PatientSummaryRequest(patient_id=_patient_id(w)),
         (PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("records", "GetPatientSummary", lambda w: records_pb2.PatientSummaryRequest(
        patient_id=_patient_id(w), purpose=Purpose.PURPOSE_OF_USE_TREAT), (PRACTITIONER,)),
    Cell("records", "GetPatientSummaryBundle", lambda w: records_pb2.PatientSummaryRequest(
        patient_id=_patient_id(w)), (PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("records", "GetPatientSummaryBundle", lambda w: records_pb2.PatientSummaryRequest(
        patient_id=_patient_id(w), purpose=Purpose.PURPOSE_OF_USE_TREAT), (PRACTITIONER,)),
    # Erasure: the patient and the active delegate (an unknown record id: admitted, NOT_FOUND, nothing erased);
    # the operator only where CARECHAIN_OPERATOR_ERASURE allows (off here).
    Cell("records", "EraseRecords", lambda w: records_pb2.EraseRecordsRequest(
        patient_id=_patient_id(w), record_ids=[str(uuid.uuid4())]), (PATIENT, DELEGATE)),
    # The FHIR gateway's token relay: no token needed, as identity's; identity answers the empty assertion.
    Cell("records", "ExchangeClientAssertion", lambda w: identity_pb2.ExchangeClientAssertionRequest(
        scope="system/Condition.rs", purpose_of_use=Purpose.PURPOSE_OF_USE_TREAT), ACTORS),
    # The FHIR gateway's Consent and AuditEvent (records.patient_relay). SubmitConsent is admitted for people;
    # with an empty body consent refuses it at validation (the JWS decides who may grant). The reads: the patient
    # and the active delegate (the delegate is the patient's guardian, so also the accounting).
    Cell("records", "SubmitConsent", lambda w: records_pb2.SubmitConsentRequest(),
         (PATIENT, OTHER_PATIENT, DELEGATE, PRACTITIONER, OTHER_PRACTITIONER)),
    Cell("records", "ListPatientConsents", lambda w: records_pb2.ListPatientConsentsRequest(
        patient_id=_patient_id(w)), (PATIENT, DELEGATE)),
    Cell("records", "ExportAccessHistory", lambda w: records_pb2.ExportAccessHistoryRequest(
        patient_id=_patient_id(w)), (PATIENT, DELEGATE)),
]
REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
# An admitted call must reach its handler's own validation, not crash.
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: cell.name)
def test_access_cell(world: World, cell: Cell, actor: str) -> None:
    code = world.call(actor, cell.service, cell.rpc, cell.request(world))
    if actor in cell.admitted:
        assert code not in REFUSED, f"{actor} was refused {cell.name} ({code.name})"
        assert code not in BROKEN, f"{cell.name} by {actor} failed with {code.name}"
    elif actor in cell.hidden:
        assert code == grpc.StatusCode.NOT_FOUND, f"{cell.name} by {actor}: {code.name}, not NOT_FOUND"
    elif actor == NOBODY:
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{cell.name} without a token: {code.name}"
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED, f"{actor} was admitted to {cell.name} ({code.name})"


def test_every_rpc_has_cells() -> None:
    from carechain.dev.access_table import service_tables

    covered = {cell.name for cell in CELLS}
    for table in service_tables():
        service = table.full_name.split(".")[1]
        for method in table.service.methods:
            assert f"{service}.{method.name}" in covered, f"no attacker cell for {service}.{method.name}"


# --- what admitted callers get back: their own data only --------------------------------------------------

def test_patient_scoped_reads_return_only_the_patients_own_data(world: World) -> None:
    patient_id = world.ids[PATIENT]
    for actor in (PATIENT, DELEGATE):
        consents = world.callers[actor].stubs["consent"].ListConsents(
            consent_pb2.ListConsentsRequest(patient_id=patient_id), timeout=30).consents
        assert consents and {c.patient_id for c in consents} == {patient_id}
    own = world.callers[PATIENT].stubs["consent"].ListConsents(consent_pb2.ListConsentsRequest(), timeout=30)
    assert {c.patient_id for c in own.consents} == {patient_id}
    history = world.callers[PATIENT].stubs["audit"].GetAccessHistory(audit_pb2.GetAccessHistoryRequest(), timeout=30)
    assert history.events and {e.event.patient_id for e in history.events} == {patient_id}
    delegations = world.callers[DELEGATE].stubs["consent"].ListDelegates(
        consent_pb2.ListDelegatesRequest(patient_id=patient_id), timeout=30).delegations
    assert [d.delegate_id for d in delegations] == [world.ids[DELEGATE]]


def test_a_patient_verifies_their_own_record_inclusion_but_not_another_patients(world: World) -> None:
    patient = world.clients[PATIENT]
    proof = patient.verify_record_inclusion(world.record_id)
    assert proof.log_index == world.record_log_index
    with pytest.raises(grpc.RpcError) as caught:
        patient.verify_record_inclusion(world.other_record_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such record on the ledger", "the same answer as an unknown record"


def test_a_patient_cannot_submit_straight_to_the_ledger(world: World) -> None:
    # A validly signed grant sent past the consent service (no validation, no audit) is refused at the door.
    code = world.call(PATIENT, "ledger", "SubmitTransaction", _signed_grant_by(PATIENT)(world))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_display_names_and_fhir_ids_only_to_the_patient_delegates_and_organisation(world: World) -> None:
    request = identity_pb2.GetPrincipalRequest(principal_id=world.ids[PATIENT])
    seen = {actor: world.callers[actor].stubs["identity"].GetPrincipal(request, timeout=30) for actor in EVERYONE}
    private = {PATIENT, DELEGATE, ORGANIZATION}
    for actor, principal in seen.items():
        assert principal.principal_id == world.ids[PATIENT] and principal.public_key
        if actor in private:
            assert principal.display_name == "Pat Secret-Name", actor
            assert principal.fhir_patient_id == world.patient_fhir_id, actor
        else:
            assert principal.display_name == "", f"{actor} saw the patient's name"
            # The records service validates each resource's subject against the FHIR id; no one else sees it.
            expect_fhir = world.patient_fhir_id if actor in SERVICE_ACTORS else ""
            assert principal.fhir_patient_id == expect_fhir, actor
    other_org = world.clients["other-organization"].identity.GetPrincipal(request, timeout=30)
    assert other_org.display_name == "" and other_org.fhir_patient_id == ""


def test_an_auditor_verifies_but_reads_no_phi(world: World) -> None:
    auditor = world.callers[AUDITOR].stubs
    assert auditor["ledger"].VerifyChain(ledger_pb2.VerifyChainRequest(), timeout=120).ok
    assert auditor["audit"].VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), timeout=60).ok
    for service, rpc, request in [
        ("audit", "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id=world.ids[PATIENT])),
        ("audit", "StreamEvents", audit_pb2.StreamEventsRequest(replay_only=True)),
        ("audit", "StreamEventBatches", audit_pb2.StreamEventsRequest(replay_only=True)),
        ("consent", "ListConsents", consent_pb2.ListConsentsRequest(patient_id=world.ids[PATIENT])),
        ("records", "GetRecord", records_pb2.GetRecordRequest(record_id=world.record_id,
                                                              purpose=Purpose.PURPOSE_OF_USE_TREAT)),
    ]:
        assert world.call(AUDITOR, service, rpc, request) == grpc.StatusCode.PERMISSION_DENIED, rpc


def test_denials_never_name_the_records_category(world: World) -> None:
    # The other practitioner has no consent: the cancer record's category must not leak in the error,
    # while the patient's own history keeps it.
    with pytest.raises(grpc.RpcError) as caught:
        world.clients[OTHER_PRACTITIONER].get_record(world.record_id)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "not permitted by the patient's consent"
    denied = [e.event for e in world.clients[PATIENT].access_history()
              if e.event.outcome == audit_pb2.AUDIT_OUTCOME_DENIED and e.event.record_id == world.record_id]
    assert denied and all(list(e.categories) for e in denied)


def test_versions_tell_nothing_to_a_reader_consent_does_not_permit(world: World) -> None:
    # The other practitioner has no consent: the history, and a version that does not exist, are refused
    # exactly like the read (no version count, no metadata).
    treat = Purpose.PURPOSE_OF_USE_TREAT
    for rpc, request in [
        ("ListRecordVersions", records_pb2.ListRecordVersionsRequest(record_id=world.record_id, purpose=treat)),
        ("GetRecord", records_pb2.GetRecordRequest(record_id=world.record_id, purpose=treat, version=99)),
        ("GetRecord", records_pb2.GetRecordRequest(record_id=world.record_id, purpose=treat, version=1)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(world.callers[OTHER_PRACTITIONER].stubs["records"], rpc)(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
        assert caught.value.details() == "not permitted by the patient's consent", rpc
    # The permitted practitioner sees the one version, written by hospital A.
    history = world.clients[PRACTITIONER].record_history(world.record_id)
    assert [(v.version, v.author_organization_id) for v in history] == [(1, world.ids[ORGANIZATION])]
