"""Python SDK for partner hospitals and patients.

A :class:`CareChainClient` acts as one principal: it proves possession of the
principal's Ed25519 key to the identity service, caches short-lived tokens per
service, and signs the principal's own ledger transactions (consent grants and
revocations are signed by the patient's key, or by a delegate's key for the
patient, never by a service).

Every call that returns ledger data checked on the client (``checkpoint``,
``verify_record_inclusion``, ``verify_chain``, ``audit_event_proof`` of an
anchored event) also checks that the ledger's log extends the newest
checkpoint this client saw before (:class:`carechain.client.proofs.CheckpointMemory`,
in memory, or in ``checkpoint_file`` to survive restarts); a rewritten or
rolled-back history raises :class:`carechain.client.proofs.HistoryRewritten`.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import grpc

from carechain.audit.hashchain import verify_event_proof
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.endpoints import Endpoints
from carechain.client.proofs import (
    CheckpointMemory,
    ErasureInclusion,
    LedgerTrust,
    RecordInclusion,
    VerifiedCheckpoint,
    consistency_fetcher,
    verify_anchor_inclusion,
    verify_checkpoint,
    verify_checkpoint_consistency,
    verify_erasure_receipt,
    verify_record_inclusion,
)
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.crypto import Ed25519Signer, Signer, write_private_file
from carechain.core.layout import write_public_key
from carechain.core.telemetry import configure_tracing
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger.linking import attest_link
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.records.v1 import records_pb2, records_pb2_grpc

Kind = common_pb2.PrincipalKind
Purpose = common_pb2.PurposeOfUse
Category = common_pb2.SensitivityCategory

#: Bytes per message of a streamed large-record upload.
LARGE_CHUNK_BYTES = 1024 * 1024
#: The line of a key file that names its principal (RFC 7468 explanatory text before the PEM block).
KEY_FILE_PRINCIPAL_HEADER = "CareChain-Principal:"


def new_key_file(path: pathlib.Path, principal_id: str = "") -> Ed25519Signer:
    """Generate an Ed25519 key into path (0600) and its public key into path + ".pub"; the new signer.

    The key file is PKCS#8 PEM preceded by a ``CareChain-Principal: <id>`` line (RFC 7468 explanatory
    text; left out while the id is not known: registration assigns it, :func:`name_key_file` adds it).
    The ``.pub`` file (SubjectPublicKeyInfo PEM) is what a registrar needs, never the private key.
    """
    signer = Ed25519Signer.generate(principal_id)
    write_private_file(path, _principal_line(principal_id) + signer.private_pem())
    write_public_key(public_key_file(path), signer.public_key_bytes())
    return signer


def public_key_file(key_file: pathlib.Path) -> pathlib.Path:
    """Where :func:`new_key_file` writes a key file's public key: the same name plus ``.pub``."""
    return key_file.with_name(key_file.name + ".pub")


def name_key_file(path: pathlib.Path, principal_id: str) -> None:
    """Record the principal id registration assigned in a key file (the key itself is kept as it is)."""
    text = path.read_bytes()
    start = text.find(b"-----BEGIN")
    if start < 0:
        raise ValueError(f"{path}: not a PEM key file")
    # Written aside and renamed over the original: a crash mid-write never loses the key.
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write_private_file(staged, _principal_line(principal_id) + text[start:])
    os.replace(staged, path)


def _principal_line(principal_id: str) -> bytes:
    if any(c.isspace() for c in principal_id):
        raise ValueError("a principal id has no white space")
    return f"{KEY_FILE_PRINCIPAL_HEADER} {principal_id}\n".encode() if principal_id else b""


def load_key_file(path: pathlib.Path, principal_id: str = "") -> Ed25519Signer:
    """The signer in a key file written by :func:`new_key_file` (or any PKCS#8 PEM Ed25519 key).

    principal_id, when given, overrides the id the file names. ValueError when the file holds no
    Ed25519 private key or no principal id is known.
    """
    text = path.read_bytes()
    named = ""
    for line in text.splitlines():
        if line.startswith(b"-----BEGIN"):
            break
        if line.startswith(KEY_FILE_PRINCIPAL_HEADER.encode()):
            named = line[len(KEY_FILE_PRINCIPAL_HEADER):].decode("ascii", "replace").strip()
    signer = Ed25519Signer.from_pem("", text[max(text.find(b"-----BEGIN"), 0):], str(path))
    if not (principal_id or named):
        raise ValueError(f"{path} names no principal: pass the principal id (it is assigned at registration)")
    return signer.with_key_id(principal_id or named)


def load_public_key_file(path: pathlib.Path) -> bytes:
    """The raw Ed25519 public key of a ``.pub`` file or of a key file (the private key is not kept)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from carechain.core.crypto import public_key_bytes

    text = path.read_bytes()
    if b"PRIVATE KEY-----" in text:
        return load_key_file(path, principal_id="-").public_key_bytes()
    try:
        key = serialization.load_pem_public_key(text[max(text.find(b"-----BEGIN"), 0):])
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not a PEM public key file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return public_key_bytes(key)


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


class AuditEventStream:
    """An iterator of streamed audit events that can be cancelled (disconnect; resume with a cursor)."""

    def __init__(self, responses: Any, per_event: Callable[[], Any] | None = None) -> None:
        """responses: a StreamEventBatches call (its batches are handed out one event at a time).

        per_event opens the same tail with StreamEvents: used instead when the audit service predates
        StreamEventBatches (UNIMPLEMENTED before anything was received), e.g. during a rolling upgrade.
        """
        self._responses = responses
        self._per_event = per_event
        self._received = False
        self._pending: collections.deque[audit_pb2.StoredAuditEvent] = collections.deque()

    def __iter__(self) -> AuditEventStream:
        return self

    def __next__(self) -> audit_pb2.StoredAuditEvent:
        while not self._pending:
            try:
                response = next(self._responses)
            except grpc.RpcError as exc:
                if self._received or self._per_event is None or exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._responses, self._per_event = self._per_event(), None
                continue
            self._received = True
            if isinstance(response, audit_pb2.StoredAuditEventBatch):
                self._pending.extend(response.events)
            else:
                self._pending.append(response)
        return self._pending.popleft()

    def cancel(self) -> None:
        """End the stream (the server stops sending)."""
        cancel = getattr(self._responses, "cancel", None)
        if cancel is not None:
            cancel()
        else:  # a traced call is a generator: closing it drops (and so cancels) the underlying call
            self._responses.close()


@dataclass
class PatientSummary:
    """A patient summary (:meth:`CareChainClient.patient_summary`): each permitted record as GetRecord answers it."""

    records: list[records_pb2.GetRecordResponse] = field(default_factory=list)
    #: Records that matched but the patient's consent does not permit the caller (never which or why).
    withheld: int = 0
    #: Large records left out: read each with get_large_record (search_records lists them).
    large_records: int = 0


class CareChainClient:
    """Calls a CareChain network as one principal."""

    def __init__(
        self, endpoints: Endpoints, signer: Signer, checkpoint_file: pathlib.Path | None = None,
        checkpoints: CheckpointMemory | None = None,
    ) -> None:
        """checkpoint_file: remember seen ledger checkpoints there (JSON); checkpoints: share a memory."""
        configure_tracing("client")
        self.endpoints = endpoints
        self.signer = signer
        self.checkpoints = checkpoints if checkpoints is not None else CheckpointMemory(checkpoint_file)
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

    @classmethod
    def from_key_file(cls, endpoints: Endpoints, key_file: pathlib.Path, principal_id: str = "",
                      **options: Any) -> CareChainClient:
        """A client acting as the principal of a key file (:func:`load_key_file`)."""
        return cls(endpoints, load_key_file(pathlib.Path(key_file), principal_id), **options)

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

    def update_record(self, record_id: str, resource: dict[str, Any] | bytes, *,
                      if_version: int = 0) -> records_pb2.PutRecordResponse:
        """Write the next version of a record this organisation wrote (same resource type and patient).

        if_version: the version being amended; FAILED_PRECONDITION if the record has moved on since.
        """
        raw = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
        request = records_pb2.UpdateRecordRequest(record_id=record_id, resource_json=raw, if_version=if_version)
        return self.records.UpdateRecord(request, timeout=30)

    def record_history(self, record_id: str, purpose: int = Purpose.PURPOSE_OF_USE_TREAT
                       ) -> list[records_pb2.RecordVersion]:
        """Every version of a record (oldest first: number, when, who, content hash), as consent permits."""
        versions: list[records_pb2.RecordVersion] = []
        token = ""
        while True:
            page = self.records.ListRecordVersions(records_pb2.ListRecordVersionsRequest(
                record_id=record_id, purpose=purpose, page_token=token), timeout=30)  # type: ignore[arg-type]
            versions.extend(page.versions)
            token = page.next_page_token
            if not token:
                return versions

    def import_bundle(self, bundle: dict[str, Any] | bytes, patient_ids: Iterable[str],
                      timeout: float = 600) -> records_pb2.ImportBundleResponse:
        """Import a FHIR batch or transaction Bundle about the listed patients (docs/sdk.md, "Bulk import").

        Each entry becomes its own record; the response has a FHIR batch/transaction-response Bundle and one
        ImportResult per entry (code 0 = committed). A transaction refused before any write raises.
        """
        raw = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
        request = records_pb2.ImportBundleRequest(bundle_json=raw, patient_ids=list(patient_ids))
        return self.records.ImportBundle(request, timeout=timeout)

    def import_records(self, resources: Iterable[tuple[str, dict[str, Any] | bytes, str]],
                       timeout: float | None = None) -> Iterator[records_pb2.ImportResult]:
        """Import (patient_id, resource, client_ref) triples as one stream; yields a result per resource.

        Results come in completion order (ImportResult.index is the position in resources, client_ref is
        echoed); resources are read lazily, as fast as the server writes them (bounded memory both ends).
        """
        requests = (records_pb2.ImportRecordsRequest(
            patient_id=patient_id, client_ref=client_ref,
            resource_json=resource if isinstance(resource, bytes) else json.dumps(resource).encode())
            for patient_id, resource, client_ref in resources)
        return iter(self.records.ImportRecords(requests, timeout=timeout))

    def put_large_record(self, patient_id: str, envelope: dict[str, Any] | bytes, data: Iterable[bytes] | BinaryIO,
                         size: int, timeout: float | None = None) -> records_pb2.PutRecordResponse:
        """Store a resource with a big attachment: the resource without its data, then the data streamed.

        envelope is a DocumentReference (data of content[0].attachment) or Media (content) with no
        ``data``; data is an iterable of bytes or a binary file (read in 1 MiB chunks); size its length.
        """
        raw = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        chunks = iter(lambda: data.read(LARGE_CHUNK_BYTES), b"") if hasattr(data, "read") else data

        def requests() -> Iterator[records_pb2.PutRecordStreamRequest]:
            yield records_pb2.PutRecordStreamRequest(header=records_pb2.LargeRecordHeader(
                patient_id=patient_id, resource_json=raw, attachment_size=size))
            for chunk in chunks:  # type: ignore[union-attr]
                for start in range(0, len(chunk), LARGE_CHUNK_BYTES):
                    yield records_pb2.PutRecordStreamRequest(data=chunk[start:start + LARGE_CHUNK_BYTES])

        return self.records.PutRecordStream(requests(), timeout=timeout)

    def get_large_record(self, record_id: str, out: BinaryIO, purpose: int = Purpose.PURPOSE_OF_USE_TREAT,
                         action: int = 0, timeout: float | None = None) -> records_pb2.GetRecordResponse:
        """Read a record as a stream: its attachment data written to out, the rest returned.

        Returns the header (resource_json without the data; attachment_size bytes were written to out).
        Each segment was authenticated before it was sent; a DATA_LOSS part-way means out is incomplete.
        """
        responses = self.records.GetRecordStream(
            records_pb2.GetRecordRequest(record_id=record_id, purpose=purpose, action=action),  # type: ignore[arg-type]
            timeout=timeout)
        header = None
        for response in responses:
            if response.WhichOneof("part") == "header":
                header = response.header
            else:
                out.write(response.data)
        if header is None:
            raise ValueError("GetRecordStream ended without a header")
        return header

    def deactivate_principal(self, principal_id: str) -> identity_pb2.Principal:
        """Deactivate a principal this client's organisation (or, for organisations, the operator) registered."""
        return self.identity.DeactivatePrincipal(
            identity_pb2.DeactivatePrincipalRequest(principal_id=principal_id), timeout=30)

    def rotate_principal_key(self, principal_id: str, public_key: bytes) -> identity_pb2.Principal:
        """Replace the public key of a principal this client's organisation registered."""
        return self.identity.RotatePrincipalKey(
            identity_pb2.RotatePrincipalKeyRequest(principal_id=principal_id, public_key=public_key), timeout=30)

    # --- network patient identity (docs/network-identity.md) --------------------

    def attest_patient_link(self, network_patient_id: str, linked_patient_id: str) -> bytes:
        """As an organisation: attest that its patient linked_patient_id is the person network_patient_id.

        Returns the attestation (an encoded ``LinkPatientIdentity`` carrying the organisation's signature and
        a single-use nonce), to hand to the patient, who submits it with :meth:`link_patient`.
        """
        attestation = attest_link(self.signer, self.endpoints.chain_id, network_patient_id, linked_patient_id)
        return attestation.SerializeToString(deterministic=True)

    def link_patient(self, linked_patient_id: str, attestation: bytes,
                     network_patient_id: str = "") -> identity_pb2.LinkPatientResponse:
        """As the network patient (or, with network_patient_id, its delegate): sign and submit the link.

        The attestation is the organisation's (:meth:`attest_patient_link`); ValueError when it is not one
        for linked_patient_id and network_patient_id (checked here, before anything is signed).
        """
        link = ledger_pb2.LinkPatientIdentity.FromString(attestation)
        network = network_patient_id or self.principal_id
        if link.linked_patient_id != linked_patient_id or link.network_patient_id != network:
            raise ValueError("the attestation is for another pair of patients")
        tx = self._signed(link_patient_identity=link)
        return self.identity.LinkPatient(identity_pb2.LinkPatientRequest(transaction=tx), timeout=60)

    def unlink_patient(self, linked_patient_id: str, network_patient_id: str = "") -> identity_pb2.LinkPatientResponse:
        """End a link, as the network patient, its delegate or the linked patient's organisation.

        network_patient_id defaults to this client (the network patient itself).
        """
        unlink = ledger_pb2.UnlinkPatientIdentity(network_patient_id=network_patient_id or self.principal_id,
                                                  linked_patient_id=linked_patient_id)
        tx = self._signed(unlink_patient_identity=unlink)
        return self.identity.UnlinkPatient(identity_pb2.UnlinkPatientRequest(transaction=tx), timeout=60)

    def resolve_patient(self, fhir_patient_id: str) -> identity_pb2.ResolvePatientResponse:
        """As an organisation or its practitioner: the network identity of one of its own FHIR Patient ids."""
        return self.identity.ResolvePatient(identity_pb2.ResolvePatientRequest(fhir_patient_id=fhir_patient_id),
                                            timeout=30)
    def register_client_keys(self, jwks: dict[str, Any] | str) -> identity_pb2.ClientKeys:
        """Register this organisation's (or practitioner's) SMART Backend Services client keys: a JWKS of
        public RS384 / ES384 keys with kids (carechain.client.smart_keys makes one), replacing earlier keys.
        The OAuth2 client_id is this principal's id."""
        text = jwks if isinstance(jwks, str) else json.dumps(jwks)
        return self.identity.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(jwks=text), timeout=30)

    def exchange_client_assertion(self, client_assertion: str, scope: str, purpose: int,
                                  audience: str = "") -> identity_pb2.ClientAccessToken:
        """A SMART access token for a signed client assertion (what the FHIR gateway's /token does)."""
        return self.identity.ExchangeClientAssertion(identity_pb2.ExchangeClientAssertionRequest(
            client_assertion=client_assertion, scope=scope, purpose_of_use=purpose,  # type: ignore[arg-type]
            audience=audience), timeout=30)

    def get_record(
        self, record_id: str, purpose: int = Purpose.PURPOSE_OF_USE_TREAT, break_glass_reason: str = "",
        action: int = 0, *, version: int = 0, provenance: bool = False,
    ) -> records_pb2.GetRecordResponse:
        """Read a record for a purpose of use; a break_glass_reason explicitly asks for break-glass access.

        action is a ConsentAction: ACCESS (the default) or DISCLOSE (to a third party). version: which
        version (0 = the latest); record_version says who wrote it and when, and with provenance=True
        provenance_json holds a FHIR Provenance of it.
        """
        return self.records.GetRecord(
            records_pb2.GetRecordRequest(record_id=record_id, purpose=purpose, break_glass=bool(break_glass_reason),
                                         break_glass_reason=break_glass_reason, action=action,  # type: ignore[arg-type]
                                         version=version, provenance=provenance),
            timeout=30,
        )

    # --- search and patient summary (issue 14) ------------------------------

    def search_records(
        self, patient_id: str, *, purpose: int, resource_types: Iterable[str] = (), categories: Iterable[int] = (),
        date_from_ms: int = 0, date_to_ms: int = 0, author_organization_id: str = "", updated_since_ms: int = 0,
        page_size: int = 50, page_token: str = "", timeout: float = 60, resource_categories: Iterable[str] = (),
    ) -> records_pb2.SearchRecordsResponse:
        """One page of a patient's records the caller may read (metadata only), and how many were withheld.

        Every filter given must match (resource types: any of them; categories: any of them; clinical date
        range inclusive; last update at or after updated_since_ms; resource_categories, FHIR clinical
        categories as ``system|code``, ``|code`` or ``code``: any of them). Pass next_page_token as page_token
        for the next page (same filters). PERMISSION_DENIED when the patient's consent permits the caller nothing.
        """
        return self.records.SearchRecords(records_pb2.SearchRecordsRequest(
            patient_id=patient_id, purpose=purpose, resource_types=list(resource_types),  # type: ignore[arg-type]
            categories=list(categories), date_from_ms=date_from_ms, date_to_ms=date_to_ms,  # type: ignore[arg-type]
            author_organization_id=author_organization_id, updated_since_ms=updated_since_ms, page_size=page_size,
            page_token=page_token, resource_categories=list(resource_categories)), timeout=timeout)

    @staticmethod
    def _summary_request(patient_id: str, purpose: int, resource_types: Iterable[str], since_ms: int,
                         break_glass: bool, break_glass_reason: str) -> records_pb2.PatientSummaryRequest:
        return records_pb2.PatientSummaryRequest(
            patient_id=patient_id, purpose=purpose, resource_types=list(resource_types),  # type: ignore[arg-type]
            since_ms=since_ms, break_glass=break_glass or bool(break_glass_reason),
            break_glass_reason=break_glass_reason)

    def patient_summary(
        self, patient_id: str, *, purpose: int, resource_types: Iterable[str] = (), since_ms: int = 0,
        break_glass: bool = False, break_glass_reason: str = "", timeout: float | None = 600,
    ) -> PatientSummary:
        """Every record of the patient the caller may read (each decided, key-released and audited as
        get_record; break-glass as for get_record, with its reason), and how many were withheld."""
        summary = PatientSummary()
        request = self._summary_request(patient_id, purpose, resource_types, since_ms, break_glass,
                                        break_glass_reason)
        for message in self.records.GetPatientSummary(request, timeout=timeout):
            if message.WhichOneof("part") == "record":
                summary.records.append(message.record)
            else:
                summary.withheld, summary.large_records = message.end.withheld, message.end.large_records
        return summary

    def patient_summary_bundle(
        self, patient_id: str, *, purpose: int, resource_types: Iterable[str] = (), since_ms: int = 0,
        break_glass: bool = False, break_glass_reason: str = "", timeout: float | None = 600,
    ) -> dict[str, Any]:
        """patient_summary as one FHIR R4 searchset Bundle (an OperationOutcome entry says how many were withheld);
        FAILED_PRECONDITION when it exceeds the 4 MiB message cap (use patient_summary)."""
        request = self._summary_request(patient_id, purpose, resource_types, since_ms, break_glass,
                                        break_glass_reason)
        return dict(json.loads(self.records.GetPatientSummaryBundle(request, timeout=timeout).bundle_json))
    # --- erasure (the patient, a delegate, or the operator where policy allows) ---

    def erase_records(self, patient_id: str, record_ids: Iterable[str] = (), reason: str = "", *,
                      all_records: bool = False, verify: bool = True) -> records_pb2.ErasureReceipt:
        """Erase records of patient_id (named ones, or every one with all_records); the receipt.

        Crypto-shredding: the data keys and blobs are destroyed behind a ledger tombstone; reads then raise
        FAILED_PRECONDITION "record erased on YYYY-MM-DD". A retention hold raises FAILED_PRECONDITION
        naming the rule and when it ends (nothing erased). With verify (and a trust directory in the
        endpoints) the receipt's inclusion proof is checked here (:meth:`verify_erasure_receipt`).
        """
        ids = list(record_ids)
        receipt = self.records.EraseRecords(
            records_pb2.EraseRecordsRequest(patient_id=patient_id, record_ids=ids, all=all_records, reason=reason),
            timeout=120,
        )
        if verify and self.endpoints.trust_dir:
            self.verify_erasure_receipt(receipt)
        return receipt

    def verify_erasure_receipt(self, receipt: records_pb2.ErasureReceipt,
                               trust: LedgerTrust | None = None) -> ErasureInclusion:
        """Prove locally that an erasure's tombstone is in the log a quorum of validators signed."""
        trust = trust or self.ledger_trust()
        inclusion = verify_erasure_receipt(receipt, trust)
        self._remember(inclusion.checkpoint, trust)
        return inclusion

    # --- consent (the client is the patient, or a delegate passing patient_id) ---

    def _signed(self, **payload: Any) -> ledger_pb2.Transaction:
        return sign_transaction(new_body(self.endpoints.chain_id, self.principal_id, **payload), self.signer)

    def seal_policy(self, policy: policy_pb2.ConsentPolicy, consent_id: str, patient_id: str = ""
                    ) -> consent_pb2.SealPolicyResponse:
        """Have consent check policy against the consent rules, seal it for consent_id and attest it."""
        return self.consent.SealPolicy(
            consent_pb2.SealPolicyRequest(patient_id=patient_id or self.principal_id, consent_id=consent_id,
                                          policy=policy), timeout=30)

    def grant_policy(self, policy: policy_pb2.ConsentPolicy, patient_id: str = "") -> consent_pb2.ConsentRecord:
        """Sign and submit a GrantConsent of policy, for this patient or (as a delegate) for patient_id.

        The ledger holds the policy only sealed: consent checks, seals and attests it first
        (SealPolicy) and this client signs the transaction over the sealed bytes and the attestation.
        """
        consent_id, patient = str(uuid.uuid4()), patient_id or self.principal_id
        sealed = self.seal_policy(policy, consent_id, patient)
        grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient, sealed_policy=sealed.sealed_policy,
                                        policy_attestation=sealed.policy_attestation)
        tx = self._signed(grant_consent=grant)
        return self.consent.GrantConsent(consent_pb2.GrantConsentRequest(transaction=tx), timeout=30)

    def grant_consent(self, *provisions: policy_pb2.Provision, patient_id: str = "") -> consent_pb2.ConsentRecord:
        """Sign and submit a GrantConsent transaction as this patient (or as a delegate for patient_id)."""
        return self.grant_policy(policy_pb2.ConsentPolicy(provisions=list(provisions)), patient_id)

    def grant_consent_fhir(
        self, consent: dict[str, Any] | str | bytes, patient_id: str = ""
    ) -> consent_pb2.ConsentRecord:
        """Grant a FHIR R4 Consent (JSON or dict), converted here and signed with this client's key.

        The Consent must be active and, when it names a CareChain patient
        pseudonym, name the patient it is granted for. InvalidArgument (raised
        locally, naming the FHIR element) when it is not a supported Consent.
        """
        from carechain.consent.fhir_consent import consent_from_fhir
        from carechain.core.errors import InvalidArgument

        imported = consent_from_fhir(consent)
        patient = patient_id or self.principal_id
        if imported.status != "active":
            raise InvalidArgument("Consent.status", "must be active to be granted")
        if imported.patient_id and imported.patient_id != patient:
            raise InvalidArgument("Consent.patient", "names another patient than the one granting")
        return self.grant_policy(imported.policy, patient)

    def sign_fhir_consent(self, consent: bytes, patient_id: str = "") -> str:
        """The compact JWS (``X-Consent-Signature``) by this client's key over the exact FHIR Consent bytes, for
        this patient or (as a delegate) for patient_id: what a REST client sends with ``POST /Consent``
        (docs/fhir.md, "Consent"). Send the very same bytes: the JWS covers their SHA-256."""
        from carechain.core.consent_jws import sign_consent

        return sign_consent(self.signer, consent, patient_id or self.principal_id, self.endpoints.chain_id)

    def grant_signed_fhir_consent(self, consent: bytes, consent_jws: str) -> records_pb2.PatientConsent:
        """Grant a FHIR Consent signed as a JWS (:meth:`sign_fhir_consent`) through the records gateway, as the
        FHIR REST gateway does; the consent as stored (FHIR JSON in ``consent_json``)."""
        return self.records.SubmitConsent(records_pb2.SubmitConsentRequest(
            consent_json=consent, consent_jws=consent_jws), timeout=30)

    def export_consent(self, consent_id: str) -> dict[str, Any]:
        """A consent as a FHIR R4 Consent resource."""
        response = self.consent.ExportConsent(consent_pb2.ExportConsentRequest(consent_id=consent_id), timeout=30)
        return json.loads(response.consent_json)

    def revoke_consent(self, consent_id: str, patient_id: str = "") -> consent_pb2.ConsentRecord:
        """Sign and submit a RevokeConsent transaction as this patient (or as a delegate for patient_id)."""
        revoke = ledger_pb2.RevokeConsent(consent_id=consent_id, patient_id=patient_id or self.principal_id)
        tx = self._signed(revoke_consent=revoke)
        return self.consent.RevokeConsent(consent_pb2.RevokeConsentRequest(transaction=tx), timeout=30)

    def list_consents(self, patient_id: str = "") -> list[consent_pb2.ConsentRecord]:
        """This patient's consents (or, as a delegate, patient_id's)."""
        request = consent_pb2.ListConsentsRequest(patient_id=patient_id)
        return list(self.consent.ListConsents(request, timeout=30).consents)

    def register_delegate(
        self, delegate_id: str, relationship: int = policy_pb2.DELEGATE_RELATIONSHIP_PROXY,
        start_ms: int = 0, end_ms: int = 0,
    ) -> consent_pb2.Delegation:
        """Let delegate_id (a guardian or proxy) grant and revoke consent for this patient."""
        delegate = ledger_pb2.RegisterDelegate(
            patient_id=self.principal_id, delegate_id=delegate_id, relationship=relationship,  # type: ignore[arg-type]
            period=common_pb2.Period(start_ms=start_ms, end_ms=end_ms),
        )
        tx = self._signed(register_delegate=delegate)
        return self.consent.RegisterDelegate(consent_pb2.RegisterDelegateRequest(transaction=tx), timeout=30)

    def list_delegates(self, patient_id: str = "") -> list[consent_pb2.Delegation]:
        """This patient's delegations, oldest first (or, as a delegate or service, patient_id's)."""
        request = consent_pb2.ListDelegatesRequest(patient_id=patient_id)
        return list(self.consent.ListDelegates(request, timeout=30).delegations)

    def revoke_delegate(self, delegate_id: str) -> consent_pb2.Delegation:
        """Withdraw a delegate's right to act for this patient."""
        tx = self._signed(revoke_delegate=ledger_pb2.RevokeDelegate(patient_id=self.principal_id,
                                                                     delegate_id=delegate_id))
        return self.consent.RevokeDelegate(consent_pb2.RevokeDelegateRequest(transaction=tx), timeout=30)

    def access_history(self, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """This patient's access history, newest first (every page)."""
        request = audit_pb2.GetAccessHistoryRequest(patient_id=self.principal_id, since_ms=since_ms,
                                                    until_ms=until_ms)
        return [e for page in self._audit_pages(self.audit.GetAccessHistory, request) for e in page.events]

    def _audit_pages(self, rpc: Any, request: Any) -> Iterator[Any]:
        """Every page of an audit listing: request again with each next_page_token until there is none."""
        while True:
            page = rpc(request, timeout=30)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # --- audit ---------------------------------------------------------------

    def accounting_of_disclosures(
        self, since_ms: int = 0, until_ms: int = 0, patient_id: str = ""
    ) -> list[audit_pb2.Disclosure]:
        """Who accessed this patient's data, when, what and why (at most six years; default the last six).

        Pages through the whole period (the service answers a page at a time)."""
        request = audit_pb2.GetAccessHistoryRequest(patient_id=patient_id or self.principal_id, since_ms=since_ms,
                                                    until_ms=until_ms)
        return [d for page in self._audit_pages(self.audit.GetAccessHistory, request) for d in page.disclosures]

    def notifications(self, patient_id: str = "") -> list[audit_pb2.Notification]:
        """This patient's notifications (e.g. break-glass accesses), newest first (every page)."""
        request = audit_pb2.ListNotificationsRequest(patient_id=patient_id)
        return [n for page in self._audit_pages(self.audit.ListNotifications, request) for n in page.notifications]

    def export_audit_fhir(self, since_ms: int = 0, until_ms: int = 0, patient_id: str = "") -> dict[str, Any]:
        """This patient's audit events as a FHIR R4 Bundle of AuditEvent resources (the pages' entries in one)."""
        request = audit_pb2.ExportFhirBundleRequest(patient_id=patient_id, since_ms=since_ms, until_ms=until_ms)
        bundle: dict[str, Any] | None = None
        for page in self._audit_pages(self.audit.ExportFhirBundle, request):
            part = json.loads(page.bundle_json)
            if bundle is None:
                bundle = part
            else:
                bundle.setdefault("entry", []).extend(part.get("entry", []))
        assert bundle is not None
        return bundle

    def audit_event_proof(self, sequence: int, event_hash: bytes | None = None,
                          trust: LedgerTrust | None = None) -> audit_pb2.EventProof:
        """The inclusion proof of an audit event in its batch, checked locally, and its anchor on the ledger.

        Raises :class:`carechain.core.errors.IntegrityError` when the proof does not hold
        (or is not about event_hash, when given), or when ``proof.anchored`` and the
        anchor at ``proof.anchor_log_index`` is not this batch's root in a block a
        quorum of validators certified (:meth:`verify_anchor`). A proof of a batch
        not anchored yet is returned with ``anchored`` false (retry later).
        """
        proof = self.audit.GetEventProof(audit_pb2.GetEventProofRequest(sequence=sequence), timeout=30)
        verify_event_proof(proof, event_hash)
        if proof.anchored:
            self.verify_anchor(proof, trust)
        return proof

    def verify_anchor(self, proof: audit_pb2.EventProof, trust: LedgerTrust | None = None) -> VerifiedCheckpoint:
        """Check proof's batch anchor on the ledger: the AnchorAuditBatch at ``anchor_log_index`` has this batch's
        range and root, is signed by svc-audit, and is in the log of a checkpoint a quorum co-signed (that
        checkpoint is then checked against the remembered one). IntegrityError otherwise."""
        trust = trust or self.ledger_trust()
        expected = ledger_pb2.AnchorAuditBatch(
            batch_number=proof.batch_number, first_sequence=proof.first_sequence,
            last_sequence=proof.last_sequence, merkle_root=proof.batch_root,
        )
        # An inclusion proof against a co-signed checkpoint: what every caller, a patient too, may read.
        checkpoint = verify_anchor_inclusion(self.ledger, proof.anchor_log_index, trust, expected)
        self._remember(checkpoint, trust)
        return checkpoint

    def stream_audit_events(self, after_sequence: int = 0, **filters: Any) -> AuditEventStream:
        """Audit events after a cursor, then live ones (operator or service); filters: service, outcome,
        patient_id, actor_id, alerts_only, replay_only. Resume with the last sequence received."""
        request = audit_pb2.StreamEventsRequest(after_sequence=after_sequence, **filters)
        # In batches: one message per batch of events found at once, not one per event (the same events).
        return AuditEventStream(self.audit.StreamEventBatches(request),
                                per_event=lambda: self.audit.StreamEvents(request))

    def review_items(self, status: int = 0) -> list[audit_pb2.ReviewItem]:
        """The privacy officer's review queue (operator or service), every page."""
        request = audit_pb2.ListReviewItemsRequest(status=status)
        return [i for page in self._audit_pages(self.audit.ListReviewItems, request) for i in page.items]

    def resolve_review_item(self, item_id: str, note: str) -> audit_pb2.ReviewItem:
        """Close a review item with a note (operator or service); the resolution is audited."""
        return self.audit.ResolveReviewItem(audit_pb2.ResolveReviewItemRequest(item_id=item_id, note=note),
                                            timeout=30)

    def verify_audit(
        self, check_ledger: bool = False, from_checkpoint: audit_pb2.AuditChainCheckpoint | None = None
    ) -> audit_pb2.VerifyAuditChainResponse:
        """Ask the audit service to re-verify its chain and batches (and their anchors on the ledger); from a
        checkpoint an earlier answer returned (``response.checkpoint``), only what follows it."""
        return self.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(
            check_ledger=check_ledger, from_checkpoint=from_checkpoint), timeout=120)

    # --- ledger --------------------------------------------------------------

    def verify_chain(self) -> ledger_pb2.VerifyChainResponse:
        """Ask the ledger to re-verify its whole chain; then check its checkpoint against the remembered one
        (when these endpoints name a trust directory)."""
        result = self.ledger.VerifyChain(ledger_pb2.VerifyChainRequest(), timeout=120)
        if self.endpoints.trust_dir:
            self.checkpoint()
        return result

    # --- client-side verification (no server trusted; see carechain.client.proofs) --

    def ledger_trust(self) -> LedgerTrust:
        """Validator keys, set and quorum from the network's endpoints (its trust directory)."""
        if not self.endpoints.trust_dir:
            raise ValueError("these endpoints name no trust directory; pass a LedgerTrust")
        ids = [v for v in self.endpoints.validator_ids.split(",") if v] or ["svc-ledger"]
        return LedgerTrust.load(pathlib.Path(self.endpoints.trust_dir), ids, self.endpoints.chain_id,
                                self.endpoints.quorum)

    def checkpoint(self, trust: LedgerTrust | None = None) -> VerifiedCheckpoint:
        """The latest final checkpoint, its co-signatures checked locally."""
        trust = trust or self.ledger_trust()
        checkpoint = verify_checkpoint(self.ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=30),
                                       trust)
        self._remember(checkpoint, trust)
        return checkpoint

    def _remember(self, checkpoint: VerifiedCheckpoint, trust: LedgerTrust) -> None:
        """Check a verified checkpoint against the newest one seen (HistoryRewritten) and remember the newer."""
        # With several validators behind one failover address, one may answer from behind.
        self.checkpoints.observe(trust.fingerprint(), checkpoint, consistency_fetcher(self.ledger),
                                 lagging_ok=len(trust.validators.members) > 1)

    def verify_record_inclusion(self, record_id: str, trust: LedgerTrust | None = None) -> RecordInclusion:
        """Prove locally that record_id's registration is in the log a quorum of validators signed.

        Raises :class:`carechain.core.errors.IntegrityError` when a proof or a co-signature does not hold,
        :class:`carechain.client.proofs.HistoryRewritten` when the log does not extend the one seen before.
        """
        trust = trust or self.ledger_trust()
        inclusion = verify_record_inclusion(self.ledger, record_id, trust)
        self._remember(inclusion.checkpoint, trust)
        return inclusion

    def verify_consistency(self, older: VerifiedCheckpoint, newer: VerifiedCheckpoint) -> None:
        """Prove locally that the log at newer extends the log at older (nothing rewritten)."""
        verify_checkpoint_consistency(self.ledger, older, newer)
