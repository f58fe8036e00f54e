"""Erasure: a patient's records crypto-shredded, with a tombstone on the ledger and a receipt (docs/security.md).

EraseRecords on the records gateway, for the patient, an active delegate, or the network operator where
policy allows (``CARECHAIN_OPERATOR_ERASURE``):

1. the records are found on the ledger (named ones, each the patient's, or all of them) and checked
   against the retention hold (:class:`RetentionPolicy`): a held record refuses the whole request with
   FAILED_PRECONDITION naming the rule and the day the hold ends, and nothing is erased;
2. the erasure is audited as attempted (fail closed: no erasure goes unrecorded);
3. the EraseRecords tombstone is committed, signed by svc-records naming who asked (the ledger checks
   that it is the patient, an active delegate or the operator). This is the commit point: from here
   consent denies every read, which answers "record erased on YYYY-MM-DD";
4. what the records were made of (:func:`erasure_parts`: each version's data key and blob) is
   destroyed (:func:`destroy`): the wrapped data key first (crypto-shredding: the ciphertext is
   unreadable from then on), then the blob. A crash or a peer failure here leaves tombstoned records
   whose parts the reconciler (:mod:`carechain.records.reconcile`) destroys on its next pass;
5. the erasure is audited as done (counts only), and the requester gets an :class:`ErasureReceipt`:
   the tombstone's RFC 9162 inclusion proof against a co-signed checkpoint
   (:func:`carechain.client.proofs.verify_erasure_receipt`).

The ledger keeps the registrations (hashes and sealed metadata, never content) and the tombstone, so
``carechain ledger verify`` and audit verification still pass after an erasure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.core.decision_claims import data_key_id
from carechain.core.errors import CareChainError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from carechain.core.layout import OPERATOR_ID
from carechain.identity.v1 import identity_pb2
from carechain.ledger.state import searched_identities
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.transactions import decode_body, logged_transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway, organization_of, utc_date
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller, Kind
from carechain.runtime.delegates import IsDelegate, acts_for_patient
from carechain.runtime.patient_links import PatientLinkTable
from carechain.storage.v1 import storage_pb2

log = logging.getLogger("carechain.records.erasure")

Action = audit_pb2.AuditAction
Outcome = audit_pb2.AuditOutcome
MAX_ERASE_RECORD_IDS = 1000
MAX_REASON_CHARS = 500
DAY_MS = 86_400_000
# How long to wait for a checkpoint covering the (final) tombstone before answering without one.
CHECKPOINT_WAIT_SECONDS = 10.0
NOT_PERMITTED = ("only the patient or an active delegate (or the network operator, where policy allows) "
                 "erases a patient's records")


# --- what the ledger holds -------------------------------------------------------------------

@dataclass
class LedgerRecords:
    """Records on the ledger (valid transactions only): each record's registrations and which are erased."""

    registrations: dict[str, list[ledger_pb2.RegisterRecord]] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)

    def live(self) -> list[str]:
        """Record ids not erased, in registration order."""
        return [record_id for record_id in self.registrations if record_id not in self.erased]


def read_ledger_records(ledger: Any, patient_id: str = "") -> LedgerRecords:
    """Every record on the ledger (only patient_id's, when given), read to the end of the log.

    A patient's records include those of the local identities linked to it (docs/network-identity.md),
    as the contract reads them. An EraseRecords without record ids tombstones all the patient's records
    registered before it, as the contract applies it.
    """
    found = LedgerRecords()
    owners: dict[str, str] = {}  # record id -> the patient id it was registered for
    by_patient: dict[str, list[str]] = {}
    links = PatientLinkTable()  # network patient <-> linked local identities, as of each transaction
    for logged in logged_transactions(ledger):
        if not logged.result.valid:
            continue
        body = decode_body(logged.transaction)
        kind = body.WhichOneof("payload")
        if kind == "register_record":
            registration = body.register_record
            found.registrations.setdefault(registration.record_id, []).append(registration)
            if registration.record_id not in owners:
                owners[registration.record_id] = registration.patient_id
                by_patient.setdefault(registration.patient_id, []).append(registration.record_id)
        elif kind in ("link_patient_identity", "unlink_patient_identity"):
            links.fold(body)
        elif kind == "erase_records":
            erase = body.erase_records
            identities = searched_identities(links, erase.patient_id)
            found.erased.update(erase.record_ids or
                                [r for identity in identities for r in by_patient.get(identity, [])])
    if patient_id:
        identities = set(searched_identities(links, patient_id))
        found.registrations = {record_id: registrations for record_id, registrations in found.registrations.items()
                               if owners[record_id] in identities}
        found.erased &= set(found.registrations)
    return found


# --- what an erasure destroys ----------------------------------------------------------------

@dataclass(frozen=True)
class ErasurePart:
    """One version of a record as stored off the ledger: its wrapped data key and its ciphertext blob."""

    record_id: str
    patient_id: str
    version: int
    content_sha256: str


def erasure_parts(registrations: Iterable[ledger_pb2.RegisterRecord]) -> list[ErasurePart]:
    """Everything erasing a record destroys: one data key and one blob per registered version.

    The one enumeration of what an erasure removes (the erasure itself and the reconciler use it).
    """
    return [ErasurePart(r.record_id, r.patient_id, r.version, r.content_sha256) for r in registrations]


@dataclass
class Destroyed:
    """How many data keys and blobs a :func:`destroy` removed (already gone ones are not counted)."""

    data_keys: int = 0
    blobs: int = 0


def destroy(peers: Any, parts: Iterable[ErasurePart], now_ms: int) -> Destroyed:
    """Delete each part's data key, then its blob; idempotent (what is already gone is skipped).

    The key goes first: once it is gone the ciphertext can never be opened, wherever copies of it are
    (storage versions, backups). Other failures propagate (the reconciler retries).
    """
    done = Destroyed()
    for part in parts:
        if deleted(lambda p=part: peers.identity.DeleteDataKey(
                identity_pb2.DeleteDataKeyRequest(record_id=data_key_id(p.record_id, p.version),
                                                patient_id=p.patient_id))):
            done.data_keys += 1
        # written_before_ms after now: the blob is removed whenever it was written (it is this record's).
        # FAILED_PRECONDITION: an S3 version under Object Lock stays until its retention ends; without
        # its key it is noise (docs/security.md, "Erasure").
        if deleted(lambda p=part: peers.storage.DeleteBlob(
                storage_pb2.DeleteBlobRequest(sha256=p.content_sha256, written_before_ms=now_ms + 1)),
                grpc.StatusCode.FAILED_PRECONDITION):
            done.blobs += 1
    return done


def deleted(call: Callable[[], object], *kept: grpc.StatusCode) -> bool:
    """Run a delete RPC: True if it removed something, False if there was nothing (NOT_FOUND) or it answered
    one of the kept statuses (the thing stays, and that is expected); any other failure propagates."""
    try:
        call()
    except (grpc.RpcError, CareChainError) as exc:
        code = exc.code() if isinstance(exc, grpc.RpcError) else exc.code  # type: ignore[operator]
        if code == grpc.StatusCode.NOT_FOUND or code in kept:
            return False
        raise
    return True


# --- retention hold --------------------------------------------------------------------------

@dataclass(frozen=True)
class RetentionHold:
    """Why a record may not be erased yet: the rule and when it ends."""

    rule: str
    until_ms: int


@dataclass(frozen=True)
class RetentionPolicy:
    """Records are held for some days after their registration (ledger block time), by resource type.

    ``by_type`` (CARECHAIN_RETENTION_HOLD_RULES) names days per FHIR resource type; other types are held
    ``default_days`` (CARECHAIN_RETENTION_HOLD_DAYS); 0 days is no hold.
    """

    default_days: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def hold(self, resource_type: str, registered_at_ms: int, now_ms: int) -> RetentionHold | None:
        """The hold on a record of resource_type registered at registered_at_ms, or None if it may go now."""
        if resource_type in self.by_type:
            days = self.by_type[resource_type]
            rule = f"CARECHAIN_RETENTION_HOLD_RULES: {resource_type} records are kept {days} days after registration"
        else:
            days = self.default_days
            rule = f"CARECHAIN_RETENTION_HOLD_DAYS: records are kept {days} days after registration"
        until_ms = registered_at_ms + days * DAY_MS
        return RetentionHold(rule, until_ms) if days and now_ms < until_ms else None


# --- the flow --------------------------------------------------------------------------------

class Eraser:
    """EraseRecords: who may, the retention hold, tombstone, crypto-shredding, receipt (module docstring)."""

    def __init__(self, gateway: RecordsGateway, peers: Any, submitter: ServiceSubmitter, is_delegate: IsDelegate,
                 retention: RetentionPolicy, operator_erasure: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        """operator_erasure: the network operator may erase too (CARECHAIN_OPERATOR_ERASURE)."""
        self._gateway = gateway
        self._peers = peers
        self._submitter = submitter
        self._is_delegate = is_delegate
        self._retention = retention
        self._operator_erasure = operator_erasure
        self._clock = clock
        self._audit = AuditReporter(peers.audit, "records")

    def authorize(self, caller: Caller, patient_id: str) -> None:
        """The caller may erase patient_id's records; PermissionDenied (the same for any patient) otherwise."""
        if not patient_id:
            raise InvalidArgument("patient_id", "is required")
        if caller.kind == Kind.PRINCIPAL_KIND_OPERATOR and self._operator_erasure:
            return
        if acts_for_patient(caller, patient_id, self._is_delegate):
            return
        raise PermissionDenied(NOT_PERMITTED)

    def erase(self, caller: Caller, request: records_pb2.EraseRecordsRequest) -> records_pb2.ErasureReceipt:
        """Erase the requested records (the caller was authorized for the patient); the receipt."""
        patient_id = request.patient_id
        record_ids = _validated(request)
        self.authorize(caller, patient_id)  # again: the access table's scope ran it, but the flow must not rely on it
        targets = self._targets(patient_id, record_ids, request.all)
        now_ms = int(self._clock() * 1000)
        self._check_retention(targets, now_ms)

        asked = f"erasure requested ({request.reason.strip()}): " if request.reason.strip() else ""
        audit_fields = {"actor_id": caller.principal_id, "organization_id": organization_of(caller),
                        "patient_id": patient_id}
        # Audited before anything is destroyed (fail closed): the trail has every erasure.
        self._audit.report(Action.AUDIT_ACTION_ERASE, Outcome.AUDIT_OUTCOME_ATTEMPTED,
                           reason=f"{asked}{len(targets)} record(s)", **audit_fields)
        ids = list(targets)
        committed = self._submitter.sign_and_submit(erase_records=ledger_pb2.EraseRecords(
            patient_id=patient_id, record_ids=ids,
            requested_by=OPERATOR_ID if caller.kind == Kind.PRINCIPAL_KIND_OPERATOR else caller.principal_id))
        parts = erasure_parts(r for registrations in targets.values() for r in registrations)
        try:
            destroyed = destroy(self._peers, parts, now_ms)
        except Exception as exc:  # noqa: BLE001 - tombstoned already: the reconciler finishes the shredding
            log.warning("erasure committed; destroying its data keys and blobs failed, the reconciler will finish",
                        extra={"error": type(exc).__name__, "log_index": committed.log_index})
            destroyed = None
        done = (f"{len(ids)} record(s) erased" + (
            f", {destroyed.data_keys} data key(s) and {destroyed.blobs} blob(s) destroyed" if destroyed
            else "; data keys and blobs left to the reconciler"))
        try:
            self._audit.report(Action.AUDIT_ACTION_ERASE, Outcome.AUDIT_OUTCOME_SUCCESS, reason=asked + done,
                               **audit_fields)
        except Exception:  # noqa: BLE001 - the tombstone is on the ledger; failing now would only confuse
            log.warning("could not audit a committed erasure", extra={"log_index": committed.log_index})
        log.info("records erased", extra={"count": len(ids), "log_index": committed.log_index})
        return self._receipt(patient_id, ids, committed.log_index)

    def _targets(self, patient_id: str, record_ids: list[str],
                 all_records: bool) -> dict[str, list[ledger_pb2.RegisterRecord]]:
        """The records to tombstone now (not erased before), each with its registrations."""
        on_ledger = read_ledger_records(self._peers.ledger, patient_id)
        if all_records:
            ids = on_ledger.live()
            if not ids:
                raise FailedPrecondition("all: the patient has no records left to erase")
        else:
            for index, record_id in enumerate(record_ids):
                if record_id not in on_ledger.registrations:  # unknown, or another patient's: the same answer
                    raise NotFound(f"record_ids[{index}]: no record of this patient has this id")
            ids = [record_id for record_id in record_ids if record_id not in on_ledger.erased]
            if not ids:
                raise FailedPrecondition("record_ids: the records are already erased")
        return {record_id: on_ledger.registrations[record_id] for record_id in ids}

    def _check_retention(self, targets: dict[str, list[ledger_pb2.RegisterRecord]], now_ms: int) -> None:
        """FAILED_PRECONDITION naming the rule and the end of the first hold, when any record is held."""
        held: list[RetentionHold] = []
        for record_id in targets:
            _, metadata = self._gateway.registration(record_id)
            entry = self._gateway.ledger_entry(record_id)
            hold = self._retention.hold(metadata.resource_type, entry.registered_at_ms, now_ms)
            if hold is not None:
                held.append(hold)
        if held:
            first = min(held, key=lambda h: h.until_ms)
            raise FailedPrecondition(
                f"retention hold: {len(held)} of the {len(targets)} record(s) may not be erased yet "
                f"({first.rule}); the first hold ends on {utc_date(first.until_ms)}; nothing was erased")

    def _receipt(self, patient_id: str, record_ids: list[str], log_index: int) -> records_pb2.ErasureReceipt:
        """The tombstone's inclusion proof against the first checkpoint that covers it."""
        receipt = records_pb2.ErasureReceipt(
            patient_id=patient_id, record_ids=record_ids, erased_count=len(record_ids), log_index=log_index)
        receipt.erased_at_ms = self._gateway.ledger_entry(record_ids[0]).erased_at_ms
        receipt.erased_on = utc_date(receipt.erased_at_ms)
        deadline = time.monotonic() + CHECKPOINT_WAIT_SECONDS
        while True:
            checkpoint = self._peers.ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest())
            if checkpoint.tree_size > log_index:
                break
            if time.monotonic() > deadline:  # committed final, but no co-signed checkpoint yet: say so
                raise FailedPrecondition("the erasure is committed, but no checkpoint covers it yet; "
                                         "retry to get its receipt")
            time.sleep(0.05)
        receipt.checkpoint.CopyFrom(checkpoint)
        receipt.inclusion_proof.CopyFrom(self._peers.ledger.GetInclusionProof(
            ledger_pb2.GetInclusionProofRequest(log_index=log_index, tree_size=checkpoint.tree_size)))
        return receipt


def _validated(request: records_pb2.EraseRecordsRequest) -> list[str]:
    """The request's record ids (de-duplicated, order kept); InvalidArgument naming the field."""
    if request.all and request.record_ids:
        raise InvalidArgument("record_ids", "must be empty when all is set")
    if not request.all and not request.record_ids:
        raise InvalidArgument("record_ids", "name at least one record, or set all")
    if len(request.record_ids) > MAX_ERASE_RECORD_IDS:
        raise InvalidArgument("record_ids", f"at most {MAX_ERASE_RECORD_IDS} per request")
    for index, record_id in enumerate(request.record_ids):
        if not record_id:
            raise InvalidArgument(f"record_ids[{index}]", "is empty")
    if len(request.reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters")
    return list(dict.fromkeys(request.record_ids))
