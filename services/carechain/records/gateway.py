"""The write and read flows of the records gateway (README.md, "Architecture": **Write** and **Read**).

Write: validate FHIR -> label -> audit the attempt (WRITE/ATTEMPTED) -> fresh
data key -> AES-256-GCM (associated data binds record id, patient pseudonym,
version) -> ciphertext to storage -> signed RegisterRecord on the ledger (the
commit point: a record exists once it is on the ledger, and by then its key,
blob and attempt event are durable) -> audit the commit (WRITE/SUCCESS). A
crash anywhere before the commit leaves only parts the reconciler
(:mod:`carechain.records.reconcile`) finds from the attempt event and the
ledger and removes after the grace period; a crash after it leaves a committed
record whose SUCCESS event the reconciler adds from the ledger. A write that
has not reached the ledger within half the grace period is abandoned, so the
reconciler never removes the parts of a write that may still commit.
The RegisterRecord carries resource type, categories, clinical date, author and
the primary clinical codes only sealed under the ledger metadata key (:mod:`carechain.ledger.sealing`).

Read: ledger entry (its sealed metadata opened: that also proves the entry was
written by a holder of the metadata key, not made up by a validator; kept once
verified, since a committed registration never changes) -> consent
decision for the requested action (ACCESS, or DISCLOSE to a third party; an
explicit break-glass request with its reason; concurrent reads' requests go to
consent as one DecideMany) -> (deny: audit, PERMISSION_DENIED) -> data key
released against the decision token (identity re-checks it with consent) ->
ciphertext, hash checked against the ledger -> decrypt -> audit (fail closed;
a break-glass read is audited with ``alert``; a disclosure as DISCLOSE) ->
resource, with the 42 CFR 2.32 notice and labels for a Part 2 record. A read
that fails after the record is known (consent unreachable, key release
refused, storage or integrity failure) is audited as failed before the error
goes back, so no failed read goes unrecorded.

A patient's registration (kind, organisation, FHIR id: none of them ever changes) is
fetched from identity once and kept; a deactivated patient (the principal_status
follower) gets no new records.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from opentelemetry import trace

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.policy import DENIAL_MESSAGE, PART2_REDISCLOSURE_NOTICE, PART2_SECURITY_LABELS, is_part2
from carechain.consent.rules import validate_break_glass_request
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Signer, open_sealed, same, seal, sha256_hex
from carechain.core.decision_claims import data_key_id
from carechain.core.errors import (
    CareChainError,
    DataLoss,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from carechain.core.fhir import clinical_date_ms, validate_resource
from carechain.core.smart_scopes import CREATE, READ, require_purpose, require_scope
from carechain.identity.data_key_client import DataKeyClient
from carechain.identity.v1 import identity_pb2
from carechain.labels.resource_categories import resource_categories
from carechain.labels.security_labels import security_labels
from carechain.labels.sensitivity import categorize, clinical_codes
from carechain.ledger.sealing import LedgerSealer
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.records import provenance
from carechain.records.deciding import BoundedCache, ConsentDecider
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller, Kind, organization_of
from carechain.runtime.principal_status import PrincipalStatus
from carechain.storage.blob_client import BlobClient

log = logging.getLogger("carechain.records")
# Step spans inside PutRecord / GetRecord ("records.validate", ...): where a slow call spends its time.
_tracer = trace.get_tracer("carechain.records")

Action = audit_pb2.AuditAction
Outcome = audit_pb2.AuditOutcome
RECORD_VERSION = 1
# Patients' registrations and verified ledger entries kept in memory (least recently used dropped first).
PATIENT_CACHE_ENTRIES = 10_000
ENTRY_CACHE_ENTRIES = 20_000  # ~1 KiB each (registration + opened metadata): ~20 MiB at most


@dataclass(frozen=True)
class VerifiedEntry:
    """A record's ledger registration whose sealed metadata opened (so it was written by this service)."""

    record: ledger_pb2.RegisterRecord
    metadata: ledger_pb2.RecordMetadata
    log_index: int = 0
    block_time_ms: int = 0  # when this version was written (its block's timestamp)
    erased: bool = False  # as of when it was fetched (only a fresh entry says whether it is erased now)

    @property
    def version(self) -> int:
        """This registration's version (1 for records written before versions)."""
        return max(self.record.version, 1)

    def record_version(self) -> records_pb2.RecordVersion:
        """Who wrote this version and when (records.provenance)."""
        return provenance.record_version(self.record, self.metadata, self.log_index, self.block_time_ms)


def record_associated_data(record_id: str, patient_id: str, version: int) -> bytes:
    """AEAD associated data: a ciphertext only decrypts as this record of this patient at this version."""
    return f"carechain-record/v1|{record_id}|{patient_id}|{version}".encode()


def utc_date(ms: int) -> str:
    """A Unix time in milliseconds as its UTC date, YYYY-MM-DD."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).date().isoformat()


def erasure_notice(erased_at_ms: int) -> str:
    """What a read of an erased record answers (FAILED_PRECONDITION), to a reader consent would have let in."""
    return f"record erased on {utc_date(erased_at_ms)}"


@dataclass(frozen=True)
class StoredRecord:
    """Result of a write."""

    record_id: str
    version: int
    categories: list[int]
    content_sha256: str
    log_index: int
    patient_id: str = ""  # the record's patient (pseudonym): an update's caller names only the record


@dataclass(frozen=True)
class ReadRecord:
    """Result of a permitted read."""

    record_id: str
    resource_json: bytes
    categories: list[int]
    patient_id: str
    resource_type: str
    decision_id: str
    break_glass: bool = False  # permitted by break-glass, not by consent
    break_glass_expires_at_ms: int = 0
    redisclosure_notice: str = ""  # 42 CFR 2.32 notice, for a Part 2 record
    handling_labels: tuple[str, ...] = ()  # "<system>|<code>" the recipient must keep on the record (Part 2)
    labelled_resource_json: bytes = b""  # the resource with handling_labels in meta.security (Part 2 only)
    attachment: Any = None  # a large record's data, still to be streamed (GetRecordStream; records.large_records)
    record_version: records_pb2.RecordVersion | None = None  # the version read: who wrote it and when
    versioned_resource_json: bytes = b""  # the resource with meta.versionId / meta.lastUpdated (records.provenance)
    provenance_json: bytes = b""  # a FHIR Provenance of the version, when asked for


# A large record's content step (records.large_records): (data key, record id, patient id, version) ->
# (content_sha256, content_size, segment_bytes) once its segmented ciphertext is in storage.
ContentWriter = Callable[[bytes, str, str, int], tuple[str, int, int]]
# Its read step: (ledger entry, data key) -> (the resource without its data, the data still to stream).
ContentReader = Callable[[ledger_pb2.RegisterRecord, bytes], tuple[bytes, Any]]


# The actions a read may ask consent for, and how each is audited.
READ_ACTIONS = {
    common_pb2.CONSENT_ACTION_ACCESS: Action.AUDIT_ACTION_READ,
    common_pb2.CONSENT_ACTION_DISCLOSE: Action.AUDIT_ACTION_DISCLOSE,
}


def validate_purpose(purpose: int) -> None:
    """A read (or search) states a known purpose of use."""
    if purpose == common_pb2.PURPOSE_OF_USE_UNSPECIFIED or purpose not in common_pb2.PurposeOfUse.values():
        raise InvalidArgument("purpose", "a purpose of use is required (e.g. PURPOSE_OF_USE_TREAT)")


def handling_label_codings(labels: tuple[str, ...]) -> list[dict[str, str]]:
    """Handling labels given as "<system>|<code>" (e.g. the Part 2 ones) as FHIR Codings."""
    return [dict(zip(("system", "code"), label.rsplit("|", 1), strict=True)) for label in labels]


def with_security_labels(resource_json: bytes, labels: list[dict[str, str]]) -> bytes:
    """The FHIR resource with labels (FHIR Codings) added to meta.security, as compact JSON."""
    resource = json.loads(resource_json)
    security = resource.setdefault("meta", {}).setdefault("security", [])
    present = {(s.get("system"), s.get("code")) for s in security}
    for label in labels:
        if (label["system"], label["code"]) not in present:
            security.append(label)
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()


def _status_name(exc: Exception) -> str:
    """The gRPC status of a peer's failure, for an audit reason (never the peer's message)."""
    if isinstance(exc, grpc.RpcError):
        return exc.code().name  # type: ignore[attr-defined]
    if isinstance(exc, CareChainError):
        return exc.code.name
    return type(exc).__name__


class RecordsGateway:
    """Orchestrates identity, storage, ledger, consent and audit for record writes and reads."""

    def __init__(self, peers: Any, signer: Signer, chain_id: str, max_record_bytes: int,
                 sealer: LedgerSealer, commit_deadline_seconds: float = 1800.0,
                 principal_status: PrincipalStatus | None = None) -> None:
        """principal_status: deactivated patients get no new records (None: not checked, e.g. in tests)."""
        self._peers = peers
        self._principal_status = principal_status
        self._patients: BoundedCache[str, identity_pb2.Principal] = BoundedCache(PATIENT_CACHE_ENTRIES)
        self._entries: BoundedCache[str, VerifiedEntry] = BoundedCache(ENTRY_CACHE_ENTRIES)
        self._decider = ConsentDecider(lambda: peers.consent)
        self._sealer = sealer
        self._max_record_bytes = max_record_bytes
        self._audit = AuditReporter(peers.audit, "records")
        # Half the reconciler's grace period: a write still uncommitted by then gives up, and its
        # ledger submission may take at most what is left, so nothing the reconciler removes can commit.
        self._commit_deadline = commit_deadline_seconds
        self._ledger = ServiceSubmitter(chain_id, signer, lambda: peers.ledger, timeout=commit_deadline_seconds / 2)
        # Data keys and small blobs of concurrent requests go to identity and storage in batch calls.
        self._data_keys = DataKeyClient(lambda: peers.identity)
        self._blobs = BlobClient(lambda: peers.storage)

    @property
    def audit(self) -> AuditReporter:
        """Where the gateway's audit events go (versions, searches and summaries report through it too)."""
        return self._audit

    # --- write -----------------------------------------------------------

    def put_record(self, caller: Caller, patient_id: str, resource_json: bytes,
                   content: ContentWriter | None = None, *, amends: VerifiedEntry | None = None) -> StoredRecord:
        """Validate, encrypt, store, register and audit one FHIR resource.

        content: a large record's (records.large_records) own encryption and upload of its data, in
        place of sealing resource_json (then the envelope, validated and labelled as any resource).
        amends: the latest version of the record this write is the next version of (records.versions,
        which checked who may amend it); its resource type must stay, its categories are kept (union).
        """
        if not patient_id:
            raise InvalidArgument("patient_id", "is required")
        patient = self._patient(patient_id)
        organization_id = organization_of(caller)
        if not organization_id or patient.organization_id != organization_id:
            # The ledger's RegisterRecord rule refuses it too; saying so here spends no key or blob.
            raise PermissionDenied("an organization (or its practitioner) writes records only for its own patients")
        with _tracer.start_as_current_span("records.validate"):
            resource = validate_resource(resource_json, patient.fhir_patient_id, self._max_record_bytes,
                                         pseudonym=patient_id, record_id=amends.record.record_id if amends else "")
        require_scope(caller.scope, resource.resource_type, CREATE)  # a SMART token's scopes (none: unlimited)
        with _tracer.start_as_current_span("records.label"):
            version_categories = categorize(resource.content)
        categories, record_id, version = version_categories, str(uuid.uuid4()), RECORD_VERSION
        if amends is not None:
            if resource.resource_type != amends.metadata.resource_type:
                raise InvalidArgument("resource_json", f"a new version keeps the resource type "
                                                       f"{amends.metadata.resource_type}")
            # Labels across versions: what any version had protects every version.
            categories = sorted({*amends.metadata.categories, *version_categories})
            record_id, version = amends.record.record_id, amends.version + 1

        audit_fields = {
            "actor_id": caller.principal_id,
            "organization_id": organization_id,
            "patient_id": patient_id,
            "record_id": record_id,
            "resource_type": resource.resource_type,
            "categories": categories,
        }
        if version > RECORD_VERSION:  # an update: the reconciler tells its parts from the first version's
            audit_fields["record_version"] = version
        # Audited before anything is created: every data key and blob a crash may leave behind
        # belongs to an attempt on the audit trail, which is how the reconciler finds it.
        self._audit.report(Action.AUDIT_ACTION_WRITE, Outcome.AUDIT_OUTCOME_ATTEMPTED, **audit_fields)
        started = time.monotonic()
        try:
            stored = self._store_and_commit(caller, patient_id, organization_id, record_id, resource, categories,
                                            resource_json, started, content, version=version, amends=amends,
                                            version_categories=version_categories)
        except Exception as exc:
            self._report_failed_write(audit_fields, exc)
            raise
        # Committed: the record exists. If this event is lost (audit down, crash), the reconciler adds it
        # from the ledger; failing the acknowledged write now would only make the hospital write it twice.
        try:
            self._audit.report(Action.AUDIT_ACTION_WRITE, Outcome.AUDIT_OUTCOME_SUCCESS, **audit_fields)
        except Exception:  # noqa: BLE001 - see above
            log.warning("could not audit a committed write", extra={"record_id": record_id})
        log.info("record stored", extra={"record_id": record_id, "log_index": stored.log_index})
        return stored

    def _store_and_commit(self, caller: Caller, patient_id: str, organization_id: str, record_id: str,
                          resource: Any, categories: list[int], resource_json: bytes,
                          started: float, content: ContentWriter | None = None, *, version: int = RECORD_VERSION,
                          amends: VerifiedEntry | None = None,
                          version_categories: list[int] | None = None) -> StoredRecord:
        """Data key, ciphertext to storage, RegisterRecord on the ledger (the commit point).

        Each version has its own data key (identity keeps it under data_key_id(record_id, version)).
        """
        data_key = self._data_keys.generate(patient_id, data_key_id(record_id, version))
        segment_bytes = 0
        if content is not None:  # a large record: segments sealed and streamed to storage as they arrive
            content_sha256, content_size, segment_bytes = content(data_key.plaintext_key, record_id, patient_id,
                                                                  version)
        else:
            with _tracer.start_as_current_span("records.encrypt"):
                ciphertext = seal(
                    data_key.plaintext_key, resource_json, record_associated_data(record_id, patient_id, version)
                )
            content_sha256, content_size = sha256_hex(ciphertext), len(ciphertext)
            blob = self._blobs.put(ciphertext, content_sha256)
            if not same(blob.sha256, content_sha256):
                raise DataLoss("storage stored different bytes than were sent")

        registration = ledger_pb2.RegisterRecord(
            record_id=record_id,
            patient_id=patient_id,
            organization_id=organization_id,
            content_sha256=content_sha256,
            content_size=content_size,
            key_name=data_key.key_ref.key_name,
            key_version=data_key.key_ref.key_version,
            version=version,
            segment_bytes=segment_bytes,
        )
        if amends is not None:  # linked to the version it amends (the contract checks it is the latest)
            registration.previous_log_index = amends.log_index
            registration.previous_content_sha256 = amends.record.content_sha256
        # Ledger privacy: what consent needs about the content goes on the ledger only sealed.
        metadata = ledger_pb2.RecordMetadata(
            resource_type=resource.resource_type,
            categories=categories,
            # Day precision only: what consent data periods need, and less identifying than a timestamp.
            data_date_ms=clinical_date_ms(resource.content),
            author_id=caller.principal_id,
            # The codes of the primary code element, for consent provisions by code (sealed like the rest).
            codes=clinical_codes(resource.content),
            version_categories=version_categories if version_categories is not None else categories,
            resource_categories=resource_categories(resource.content),  # FHIR search's category (this version's)
        )
        with _tracer.start_as_current_span("records.seal_metadata"):
            registration.sealed_metadata.CopyFrom(self._sealer.seal_record(registration, metadata))
        tx = self._ledger.transaction(register_record=registration)
        if time.monotonic() - started > self._commit_deadline:
            # Too late to commit: the reconciler may already treat this write's key and blob as orphans.
            raise Unavailable("records", "the write took too long and was abandoned; retry it")
        with _tracer.start_as_current_span("records.commit_wait"):
            committed = self._ledger.submit(tx)
        return StoredRecord(record_id, version, categories, content_sha256, committed.log_index, patient_id)

    def _report_failed_write(self, audit_fields: dict[str, Any], exc: Exception) -> None:
        """Best effort: record that an attempted write did not reach the ledger (the reconciler removes its parts)."""
        try:
            self._audit.report(Action.AUDIT_ACTION_WRITE, Outcome.AUDIT_OUTCOME_FAILED,
                               reason=f"write failed before the ledger commit ({_status_name(exc)})", **audit_fields)
        except Exception:  # noqa: BLE001 - the original error is what the caller must see
            log.warning("could not audit a failed write", extra={"record_id": audit_fields["record_id"]})

    def _patient(self, patient_id: str) -> identity_pb2.Principal:
        """The registered patient (from the cache once known); InvalidArgument if not one, refused if deactivated."""
        if self._principal_status is not None and self._principal_status.deactivated(patient_id):
            self._patients.discard(patient_id)
            raise FailedPrecondition("patient_id: the patient was deactivated; no new records are accepted")
        principal = self._patients.get(patient_id)
        if principal is not None:
            return principal
        try:
            principal = self._peers.identity.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=patient_id))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise InvalidArgument("patient_id", "is not a registered patient") from exc
            raise
        if principal.kind != Kind.PRINCIPAL_KIND_PATIENT:
            raise InvalidArgument("patient_id", "is not a registered patient")
        # Kind, organisation and FHIR id are fixed at registration: safe to keep.
        self._patients.put(patient_id, principal)
        return principal

    # --- read ------------------------------------------------------------

    def get_record(
        self,
        caller: Caller,
        record_id: str,
        purpose: int,
        action: int = common_pb2.CONSENT_ACTION_ACCESS,
        break_glass: bool = False,
        break_glass_reason: str = "",
        content: ContentReader | None = None,
        *,
        version: int = 0,
        provenance_json: bool = False,
    ) -> ReadRecord:
        """Return a record's exact bytes if consent (or an explicit break-glass) permits action; audit either way.

        content: how a large record (RegisterRecord.segment_bytes > 0) is opened (records.large_records,
        GetRecordStream); without it such a record is FAILED_PRECONDITION.
        version: which version (0 = the latest). Consent decides on the record (the union of every version's
        categories, which are also the labels returned for any version); the version's number is looked up
        only once the read is permitted (no metadata for a caller consent does not permit).
        provenance_json: also return the version's FHIR Provenance.
        """
        self.require_read_ids(caller, record_id, purpose)
        action = action or common_pb2.CONSENT_ACTION_ACCESS
        if action not in READ_ACTIONS:
            raise InvalidArgument("action", "a read is CONSENT_ACTION_ACCESS (the default) or CONSENT_ACTION_DISCLOSE")
        audit_action = READ_ACTIONS[action]
        validate_break_glass_request(break_glass, break_glass_reason)
        latest = self.verified_entry(record_id)
        if not version and latest.record.segment_bytes and content is None:
            raise FailedPrecondition("record_id: a large record is read with GetRecordStream")
        decision, latest, audit_fields = self.decide_read(caller, latest, purpose, action, break_glass,
                                                          break_glass_reason)
        metadata = latest.metadata
        asked = f"break-glass requested ({break_glass_reason.strip()}): " if break_glass else ""
        # SMART scopes only narrow what consent permits; checked after consent, so a refusal tells
        # nothing (such as the record's resource type) that consent would withhold.
        try:
            require_scope(caller.scope, metadata.resource_type, READ)
        except PermissionDenied as exc:
            self._report_failed_read(audit_action, audit_fields, "outside the access token's SMART scopes", exc)
            raise

        # Consent decided on the versions it has folded (their labels' union): never serve a newer one.
        covered = min(latest.version, decision.record_version or latest.version)
        try:
            if version > covered and version <= latest.version:
                raise Unavailable("consent", "has not caught up with this version yet; retry")
            wanted = version or covered
            target = latest if wanted == latest.version else self.verified_entry(record_id, wanted)
        except Exception as exc:
            self._report_failed_read(audit_action, audit_fields, "version not readable", exc)
            raise
        record = target.record
        if record.segment_bytes and content is None:
            exc = FailedPrecondition("record_id: a large record is read with GetRecordStream")
            self._report_failed_read(audit_action, audit_fields, "large record version", exc)
            raise exc
        try:
            key = self._data_keys.release(data_key_id(record_id, target.version), decision.decision_token)
        except Exception as exc:
            self._report_failed_read(audit_action, audit_fields, "data key release refused", exc)
            if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # type: ignore[attr-defined]
                # E.g. consent revoked between decision and key release: told as a consent denial.
                raise PermissionDenied(DENIAL_MESSAGE) from exc
            raise
        try:
            with _tracer.start_as_current_span("records.fetch_decrypt"):
                if record.segment_bytes and content is not None:
                    plaintext, attachment = content(record, key.plaintext_key)  # its envelope, authenticated
                else:
                    plaintext, attachment = self._decrypt(record, key.plaintext_key), None
        except Exception as exc:
            self._report_failed_read(audit_action, audit_fields, "stored record could not be read", exc)
            raise
        # A break-glass read raises an alert: the audit service notifies the patient and queues a review.
        self._audit.report(audit_action, Outcome.AUDIT_OUTCOME_SUCCESS, reason=asked + decision.reason,
                           alert=decision.break_glass, **audit_fields)
        written = target.record_version()
        read = ReadRecord(record_id, plaintext, list(metadata.categories), record.patient_id, metadata.resource_type,
                          decision.decision_id, decision.break_glass, decision.break_glass_expires_at_ms,
                          attachment=attachment, record_version=written,
                          versioned_resource_json=provenance.with_version_meta(plaintext, written),
                          provenance_json=(provenance.provenance_resource(written, metadata.resource_type)
                                           if provenance_json else b""))
        if not is_part2(metadata.categories):
            return read
        return replace(read, redisclosure_notice=PART2_REDISCLOSURE_NOTICE, handling_labels=PART2_SECURITY_LABELS,
                       labelled_resource_json=with_security_labels(read.versioned_resource_json, [
                           *security_labels(metadata.categories, with_confidentiality=True),
                           *handling_label_codings(PART2_SECURITY_LABELS)]))

    @staticmethod
    def require_read_ids(caller: Caller, record_id: str, purpose: int) -> None:
        """A read names a record and a purpose of use (INVALID_ARGUMENT naming the field), the purpose a SMART
        token was issued for, if any (PERMISSION_DENIED otherwise)."""
        if not record_id:
            raise InvalidArgument("record_id", "is required")
        validate_purpose(purpose)
        require_purpose(caller.purpose_of_use, purpose)  # a SMART token binds the purpose it was issued for

    def decide_read(self, caller: Caller, latest: VerifiedEntry, purpose: int,
                    action: int = common_pb2.CONSENT_ACTION_ACCESS, break_glass: bool = False,
                    break_glass_reason: str = "") -> tuple[consent_pb2.Decision, VerifiedEntry, dict[str, Any]]:
        """Consent's permit to read a record: (decision, the latest version it covers, the read's audit fields).

        A denial is audited and raised as PERMISSION_DENIED without its reason (FAILED_PRECONDITION "record
        erased on ..." when consent says the record was erased); a failure to decide is audited as a failed
        read and propagates. When consent knows a newer version than latest, that version is fetched (labels
        and audit are the record's as consent decided on them).
        """
        record_id = latest.record.record_id
        audit_action = READ_ACTIONS[action]
        audit_fields = self._read_audit_fields(caller, latest, purpose)
        try:
            decision = self._decider.decide(
                consent_pb2.DecideRequest(actor_id=caller.principal_id, record_id=record_id, purpose=purpose,
                                          action=action,  # type: ignore[arg-type]
                                          break_glass=break_glass, break_glass_reason=break_glass_reason)
            )
        except Exception as exc:
            self._report_failed_read(audit_action, audit_fields, "consent decision failed", exc)
            raise
        if decision.record_version > latest.version:
            # Amended since it was kept: the version consent decided on is the latest (labels, audit).
            latest = self.verified_entry(record_id, decision.record_version)
            audit_fields = self._read_audit_fields(caller, latest, purpose)
        # A linked patient's record is read from their network identity's record (docs/network-identity.md).
        audit_fields["patient_id"] = decision.network_patient_id or latest.record.patient_id
        # The clinician's stated reason goes to the audit trail (the privacy officer's review), never the ledger.
        asked = f"break-glass requested ({break_glass_reason.strip()}): " if break_glass else ""
        if decision.effect != consent_pb2.DECISION_EFFECT_PERMIT:
            # Fail closed: if the denial cannot be audited, the caller sees UNAVAILABLE, not the reason.
            self._audit.report(audit_action, Outcome.AUDIT_OUTCOME_DENIED, reason=asked + decision.reason,
                               **audit_fields)
            if decision.record_erased:  # consent says so only to a reader it would otherwise have permitted
                raise FailedPrecondition(erasure_notice(self.ledger_entry(record_id).erased_at_ms))
            # The reason (and the record's categories) go to the audit trail only: never to the caller.
            raise PermissionDenied(DENIAL_MESSAGE)
        return decision, latest, audit_fields

    def _read_audit_fields(self, caller: Caller, latest: VerifiedEntry, purpose: int) -> dict[str, Any]:
        """What a read's audit events say: who, whose record, why, and the record's (all versions') labels."""
        return {
            "actor_id": caller.principal_id,
            "organization_id": organization_of(caller),
            "patient_id": latest.record.patient_id,
            "record_id": latest.record.record_id,
            "purpose": purpose,
            "resource_type": latest.metadata.resource_type,
            "categories": list(latest.metadata.categories),
        }

    def registration(self, record_id: str) -> tuple[ledger_pb2.RegisterRecord, ledger_pb2.RecordMetadata]:
        """A record's latest ledger registration and its opened (verified) metadata."""
        verified = self.verified_entry(record_id)
        return verified.record, verified.metadata

    def ledger_entry(self, record_id: str, version: int = 0) -> ledger_pb2.RecordEntry:
        """The record's current ledger entry (or version's), tombstone included (never cached: an erasure
        changes it)."""
        return self._peers.ledger.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id=record_id,
                                                                                   version=version))

    def verified_entry(self, record_id: str, version: int = 0, fresh: bool = False) -> VerifiedEntry:
        """A record version's ledger registration with its opened metadata (0: the latest known).

        A version never changes, so each is checked once and kept; the latest known is kept too and
        replaced when consent reports a newer version (get_record) or a fresh read is asked for (updates).
        """
        cached = None if fresh else self._entries.get(record_id if not version else f"{record_id}:{version}")
        if cached is None and version and not fresh:
            latest = self._entries.get(record_id)
            cached = latest if latest is not None and latest.version == version else None
        if cached is not None:
            return cached
        entry = self.ledger_entry(record_id, version)
        record = entry.record
        if record.record_id != record_id or (version and max(record.version, 1) != version):
            raise DataLoss(f"record {record_id}: the ledger answered with another record's entry")
        return self.verified(entry)

    def verified(self, entry: ledger_pb2.RecordEntry) -> VerifiedEntry:
        """A ledger entry (e.g. of a search) with its sealed metadata opened: the latest version is kept under
        the record id, earlier ones under ``<record id>:<version>``."""
        record_id = entry.record.record_id
        version = max(entry.record.version, 1)
        cached = self._entries.get(record_id)
        if cached is None or cached.version != version:
            cached = self._entries.get(f"{record_id}:{version}")
        if (cached is not None and cached.version == version and cached.erased == entry.erased
                and (not entry.log_index or cached.log_index in (0, entry.log_index))):
            return cached
        record = entry.record
        try:
            with _tracer.start_as_current_span("records.open_metadata"):
                metadata = self._sealer.open_record(record)
        except IntegrityError as exc:
            # Only the records service seals metadata: an entry that does not open was not written by it.
            raise DataLoss(f"record {record_id}: its ledger entry failed verification") from exc
        verified = VerifiedEntry(record, metadata, entry.log_index, entry.registered_at_ms, entry.erased)
        latest_known = self._entries.get(record_id)
        if entry.latest_version <= verified.version and (latest_known is None
                                                         or latest_known.version <= verified.version):
            self._entries.put(record_id, verified)  # the latest: kept once, under the record id
        else:
            self._entries.put(f"{record_id}:{verified.version}", verified)
        return verified

    @property
    def decider(self) -> ConsentDecider:
        """How this gateway asks consent (searches decide through it too)."""
        return self._decider

    def close(self) -> None:
        """Stop batching consent decisions (reads after this fail)."""
        self._decider.close()

    def _decrypt(self, record: ledger_pb2.RegisterRecord, data_key: bytes) -> bytes:
        """The record's plaintext: ciphertext from storage, hash checked against the ledger, then opened."""
        ciphertext = self._blobs.get(record.content_sha256, record.content_size)
        if not same(sha256_hex(ciphertext), record.content_sha256):
            raise DataLoss(f"record {record.record_id}: stored ciphertext does not match the ledger hash")
        try:
            return open_sealed(
                data_key, ciphertext, record_associated_data(record.record_id, record.patient_id, record.version)
            )
        except IntegrityError as exc:
            raise DataLoss(f"record {record.record_id}: ciphertext failed authentication") from exc

    def _report_failed_read(self, action: int, audit_fields: dict[str, Any], what: str, exc: Exception) -> None:
        """Best effort: audit a read that failed after the record was known (the original error still wins)."""
        status = _status_name(exc)
        outcome = Outcome.AUDIT_OUTCOME_DENIED if status == "PERMISSION_DENIED" else Outcome.AUDIT_OUTCOME_FAILED
        try:
            self._audit.report(action, outcome, reason=f"{what} ({status})", **audit_fields)
        except Exception:  # noqa: BLE001 - the caller must see the original error
            log.warning("could not audit a failed read", extra={"record_id": audit_fields["record_id"]})
