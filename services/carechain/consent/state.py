"""Consent state derived only from the ledger.

The consent service keeps no store of its own: principals, records and
consents are folded from the committed transactions the validator marked
valid, in log order (delegations and break-glass windows too). At start the whole log is replayed; afterwards
:meth:`ConsentState.sync` reads only what was committed since the cursor, so a
decision taken after a revocation was committed always sees it.

The server reads through :class:`carechain.ledger.reader.VerifiedLedgerReader`
(signatures, contract rules and quorum certificates checked before anything is
folded). A record's metadata and a consent's policy are sealed on the ledger
(:mod:`carechain.ledger.sealing`); they are opened here, and one that does not
open or does not hold a policy meeting the consent rules
(:func:`carechain.consent.rules.validate_grant_policy`) / at least one known
category is not applied (deny by default). If the metadata key is unreachable, folding stops
before the transaction (the error propagates; nothing is skipped).
"""

from __future__ import annotations

import base64
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.consent.policy import BreakGlassWindow
from carechain.consent.rules import signed_by, validate_grant_policy
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.errors import FailedPrecondition, IntegrityError, InvalidArgument
from carechain.ledger.sealing import LedgerSealer
from carechain.ledger.state import searched_identities
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.patient_links import PatientLinkTable

log = logging.getLogger("carechain.consent.state")

# How many transactions to ask the ledger for per page.
PAGE_SIZE = 500

ListTransactions = Callable[[ledger_pb2.ListTransactionsRequest], ledger_pb2.ListTransactionsResponse]
# What _open_sealed found: the opened payload, None (nothing sealed), or _UNOPENED (do not apply).
Opened = ledger_pb2.RecordMetadata | policy_pb2.ConsentPolicy | object | None
_UNOPENED = object()


@dataclass(frozen=True)
class PrincipalInfo:
    """A registered principal's attributes (no PHI)."""

    principal_id: str
    kind: int  # common_pb2.PrincipalKind
    organization_id: str = ""
    specialty: str = ""
    active: bool = True  # False once a DeactivatePrincipal was committed

    @property
    def is_practitioner(self) -> bool:
        """An active (not deactivated) practitioner."""
        return self.kind == common_pb2.PRINCIPAL_KIND_PRACTITIONER and self.active

    @property
    def is_reader(self) -> bool:
        """An active practitioner or organisation: who consent decides reads for (an organisation reads as a
        SMART Backend Services client, matched only by recipients that name it)."""
        return self.kind in (common_pb2.PRINCIPAL_KIND_PRACTITIONER, common_pb2.PRINCIPAL_KIND_ORGANIZATION) \
            and self.active

    @property
    def is_organization(self) -> bool:
        """An organisation (its own organisation is itself)."""
        return self.kind == common_pb2.PRINCIPAL_KIND_ORGANIZATION


@dataclass(frozen=True)
class ConsentChange:
    """A committed grant or revocation, to be audited once (derived from the ledger, whoever submitted it)."""

    log_index: int
    granted: bool  # True: GrantConsent; False: RevokeConsent
    consent_id: str
    patient_id: str
    signer_id: str  # the patient, or a delegate acting for the patient


@dataclass(frozen=True, slots=True)  # one per record of the whole history: no per-instance dict
class RecordInfo:
    """What consent needs to know about a registered record."""

    record_id: str
    patient_id: str
    organization_id: str
    categories: tuple[int, ...]
    log_index: int
    erased: bool = False
    data_date_ms: int = 0  # clinical date, UTC day; 0 = none
    resource_type: str = ""
    author_id: str = ""  # who wrote it (consent actor role AUT)
    codes: tuple[str, ...] = ()  # "system|code" of its primary code element (consent provision codes)
    version: int = 1  # the latest version folded; categories and codes are the union over versions 1..version


class ConsentState:
    """Principals, records and consents as of a log position; safe for concurrent readers and syncs."""

    def __init__(self, sealer: LedgerSealer) -> None:
        self._sealer = sealer
        self._lock = threading.Lock()  # guards the maps and the cursor
        self._sync_lock = threading.Lock()  # one sync at a time, without blocking readers
        self._cursor = 0
        self._principals: dict[str, PrincipalInfo] = {}
        self._records: dict[str, RecordInfo] = {}
        self._consents: dict[str, consent_pb2.ConsentRecord] = {}
        self._consents_by_patient: dict[str, list[str]] = {}
        # (patient, delegate) -> delegation, in registration order.
        self._delegations: dict[tuple[str, str], consent_pb2.Delegation] = {}
        # (actor, patient) -> recorded break-glass windows, in log order.
        self._break_glass: dict[tuple[str, str], list[BreakGlassWindow]] = {}
        # Committed consent changes not yet handed to the auditor, in log order.
        self._changes: list[ConsentChange] = []
        # Linked patient -> network identity (LinkPatientIdentity, until unlinked), in link order.
        self._links = PatientLinkTable()

    # --- reading -------------------------------------------------------------

    @property
    def sealer(self) -> LedgerSealer:
        """What opens the sealed payloads this state folds."""
        return self._sealer

    @property
    def cursor(self) -> int:
        """Log index of the next transaction to apply (= number applied)."""
        with self._lock:
            return self._cursor

    def principal(self, principal_id: str) -> PrincipalInfo | None:
        """A registered principal, or None."""
        with self._lock:
            return self._principals.get(principal_id)

    def record(self, record_id: str) -> RecordInfo | None:
        """A registered record (possibly erased), or None."""
        with self._lock:
            return self._records.get(record_id)

    def consent(self, consent_id: str) -> consent_pb2.ConsentRecord | None:
        """A copy of one consent, or None."""
        with self._lock:
            consent = self._consents.get(consent_id)
            return _copy(consent) if consent is not None else None

    def consents_of(self, patient_id: str) -> list[consent_pb2.ConsentRecord]:
        """Copies of a patient's consents, oldest first (revoked ones included)."""
        with self._lock:
            return [_copy(self._consents[c]) for c in self._consents_by_patient.get(patient_id, ())]

    def delegations_of(self, patient_id: str) -> list[consent_pb2.Delegation]:
        """Copies of a patient's delegations (active and revoked), oldest first."""
        with self._lock:
            return [_copy_delegation(d) for (p, _), d in self._delegations.items() if p == patient_id]

    def active_delegate(self, patient_id: str, delegate_id: str, now_ms: int) -> consent_pb2.Delegation | None:
        """The delegation letting delegate_id act for patient_id at now_ms, or None."""
        with self._lock:
            delegation = self._delegations.get((patient_id, delegate_id))
            if delegation is None or delegation.status != consent_pb2.DELEGATION_STATUS_ACTIVE:
                return None
            period = delegation.period
            if (period.start_ms and now_ms < period.start_ms) or (period.end_ms and now_ms >= period.end_ms):
                return None
            return _copy_delegation(delegation)

    def break_glass_window(self, actor_id: str, patient_id: str, now_ms: int) -> BreakGlassWindow | None:
        """The actor's break-glass window for the patient that contains now_ms (earliest recorded), or None."""
        with self._lock:
            for window in self._break_glass.get((actor_id, patient_id), ()):
                if window.started_at_ms <= now_ms < window.expires_at_ms:
                    return window
            return None

    def network_patient(self, patient_id: str) -> str:
        """The network identity whose consents govern patient_id's records (patient_id when not linked)."""
        with self._lock:
            return self._links.network_patient(patient_id)

    def linked_patients(self, network_patient_id: str) -> list[str]:
        """The patient principals linked to network_patient_id, in link order (itself excluded)."""
        with self._lock:
            return self._links.linked_patients(network_patient_id)

    def take_changes(self) -> list[ConsentChange]:
        """The consent changes folded since the last call (the caller audits them, or puts them back)."""
        with self._lock:
            changes, self._changes = self._changes, []
            return changes

    def put_back_changes(self, changes: list[ConsentChange]) -> None:
        """Return changes that could not be audited yet, ahead of newer ones."""
        with self._lock:
            self._changes[:0] = changes

    # --- folding the log -----------------------------------------------------

    def apply(self, logged: ledger_pb2.LoggedTransaction) -> None:
        """Fold one committed transaction (in log order); invalid transactions only move the cursor."""
        body: ledger_pb2.TransactionBody | None = None
        opened: Opened = None
        if logged.result.valid:
            body = ledger_pb2.TransactionBody()
            try:
                body.ParseFromString(logged.transaction.body)
            except Exception:  # noqa: BLE001 - a valid transaction always parses; never stop folding
                log.warning("unparseable transaction body skipped", extra={"log_index": logged.log_index})
                body = None
            if body is not None:
                # Before the cursor moves: if the key is unreachable this raises and nothing is skipped.
                opened = self._open_sealed(body, logged.log_index)
        with self._lock:
            if logged.log_index < self._cursor:
                return  # already applied (overlapping pages)
            if logged.log_index > self._cursor:
                raise FailedPrecondition(
                    f"ledger skipped log indices {self._cursor}..{logged.log_index - 1}; cannot derive consent state"
                )
            self._cursor = logged.log_index + 1
            if body is not None and opened is not _UNOPENED:
                self._apply_body(body, logged.log_index, opened)

    def _open_sealed(self, body: ledger_pb2.TransactionBody, log_index: int) -> Opened:
        """The sealed payload of a RegisterRecord or GrantConsent, opened and checked; _UNOPENED if unusable."""
        kind = body.WhichOneof("payload")
        try:
            if kind == "register_record":
                metadata = self._sealer.open_record(body.register_record)
                known = common_pb2.SensitivityCategory.values()
                if not metadata.categories or any(
                    c == common_pb2.SENSITIVITY_CATEGORY_UNSPECIFIED or c not in known for c in metadata.categories
                ):
                    raise IntegrityError("sealed record metadata has no or unknown categories")
                return metadata
            if kind == "grant_consent":
                policy = self._sealer.open_policy(body.grant_consent)
                validate_grant_policy(policy)  # the rules SealPolicy attested, re-checked on what is applied
                return policy
        except (IntegrityError, InvalidArgument) as exc:
            # Not sealed by a holder of the metadata key for this transaction, or not a usable payload.
            log.warning("sealed ledger payload not applied",
                        extra={"log_index": log_index, "kind": kind, "reason": type(exc).__name__})
            return _UNOPENED
        return None

    def _apply_body(self, body: ledger_pb2.TransactionBody, log_index: int, opened: Opened) -> None:
        kind = body.WhichOneof("payload")
        if kind == "register_principal":
            p = body.register_principal
            self._principals[p.principal_id] = PrincipalInfo(p.principal_id, p.kind, p.organization_id, p.specialty)
        elif kind == "deactivate_principal":
            principal = self._principals.get(body.deactivate_principal.principal_id)
            if principal is not None:
                self._principals[principal.principal_id] = replace(principal, active=False)
        elif kind == "register_record":
            r = body.register_record
            assert isinstance(opened, ledger_pb2.RecordMetadata)
            previous = self._records.get(r.record_id)
            if previous is not None and r.version <= previous.version:
                return  # not a new version (the contract refuses these; never lower what was folded)
            categories, codes = tuple(opened.categories), tuple(opened.codes)
            if previous is not None:
                # Labels across versions: a category (or code) any version had protects every version.
                categories = tuple(sorted({*previous.categories, *categories}))
                codes = tuple(sorted({*previous.codes, *codes}))
            self._records[r.record_id] = _interned(RecordInfo(
                r.record_id,
                r.patient_id,
                r.organization_id,
                categories,
                log_index,
                # A new version of a crypto-shredded record cannot be read either.
                erased=previous.erased if previous is not None else False,
                data_date_ms=opened.data_date_ms,
                # The resource type is the record's (svc-records keeps it across versions).
                resource_type=previous.resource_type if previous is not None else opened.resource_type,
                author_id=opened.author_id,
                codes=codes,
                version=max(r.version, 1),
            ))
        elif kind == "erase_records":
            e = body.erase_records
            # The network patient's records include its linked local identities' (as the contract reads them).
            identities = set(searched_identities(self._links, e.patient_id))
            targets = e.record_ids or [rid for rid, rec in self._records.items() if rec.patient_id in identities]
            for record_id in targets:
                record = self._records.get(record_id)
                if record is not None and record.patient_id in identities:
                    self._records[record_id] = replace(record, erased=True)
        elif kind == "grant_consent":
            g = body.grant_consent
            assert isinstance(opened, policy_pb2.ConsentPolicy)
            if g.consent_id in self._consents:
                return  # a consent id is granted once
            self._consents[g.consent_id] = consent_pb2.ConsentRecord(
                consent_id=g.consent_id,
                patient_id=g.patient_id,
                policy=opened,
                status=consent_pb2.CONSENT_STATUS_ACTIVE,
                granted_log_index=log_index,
                granted_at_ms=body.created_at_ms,
                granted_by=signed_by(body),
            )
            self._consents_by_patient.setdefault(g.patient_id, []).append(g.consent_id)
            self._changes.append(ConsentChange(log_index, True, g.consent_id, g.patient_id, signed_by(body)))
        elif kind == "revoke_consent":
            r = body.revoke_consent
            consent = self._consents.get(r.consent_id)
            if (
                consent is not None
                and consent.patient_id == r.patient_id
                and consent.status == consent_pb2.CONSENT_STATUS_ACTIVE
            ):
                consent.status = consent_pb2.CONSENT_STATUS_REVOKED
                consent.revoked_log_index = log_index
                self._changes.append(ConsentChange(log_index, False, r.consent_id, r.patient_id, signed_by(body)))
        elif kind == "register_delegate":
            d = body.register_delegate
            self._delegations.pop((d.patient_id, d.delegate_id), None)  # re-registration moves it to the end
            self._delegations[(d.patient_id, d.delegate_id)] = consent_pb2.Delegation(
                patient_id=d.patient_id,
                delegate_id=d.delegate_id,
                relationship=d.relationship,
                period=d.period,
                status=consent_pb2.DELEGATION_STATUS_ACTIVE,
                registered_log_index=log_index,
            )
        elif kind == "revoke_delegate":
            d = body.revoke_delegate
            delegation = self._delegations.get((d.patient_id, d.delegate_id))
            if delegation is not None and delegation.status == consent_pb2.DELEGATION_STATUS_ACTIVE:
                delegation.status = consent_pb2.DELEGATION_STATUS_REVOKED
                delegation.revoked_log_index = log_index
        elif kind in ("link_patient_identity", "unlink_patient_identity"):
            self._links.fold(body)
        elif kind == "break_glass_access":
            b = body.break_glass_access
            self._break_glass.setdefault((b.actor_id, b.patient_id), []).append(
                BreakGlassWindow(b.started_at_ms, b.expires_at_ms)
            )

    def sync(self, list_transactions: ListTransactions) -> int:
        """Apply everything committed since the cursor, page by page; returns the new cursor.

        list_transactions is VerifiedLedgerReader.list_transactions (or, in tests,
        a LedgerService.ListTransactions stub method). Errors reaching the ledger
        or the metadata key, and verification failures, propagate, so callers fail closed.
        """
        with self._sync_lock:
            while True:
                start = self.cursor
                response = list_transactions(
                    ledger_pb2.ListTransactionsRequest(from_log_index=start, limit=PAGE_SIZE)
                )
                for logged in response.transactions:
                    self.apply(logged)
                cursor = self.cursor
                if not response.transactions or cursor >= response.log_size or cursor == start:
                    return cursor


    # --- snapshots (carechain.consent.snapshot) ---------------------------------------------

    def export(self, reader_position: Callable[[Callable[[ledger_pb2.LoggedTransaction], None], int],
                                               dict[str, Any] | None]) -> dict[str, Any] | None:
        """The state and the reader's position at one log size, as JSON-able data; None if not at a block boundary.

        reader_position(fold, cursor) is :meth:`VerifiedLedgerReader.export_position`: it folds what it has
        verified beyond the cursor, then describes where it stands (no sync runs meanwhile).
        """
        with self._sync_lock:
            position = reader_position(self.apply, self.cursor)
            if position is None:
                return None
            with self._lock:
                if position["log_size"] != self._cursor:
                    return None
                return {"reader": position, "state": self._export_locked()}

    def _export_locked(self) -> dict[str, Any]:
        return {
            "cursor": self._cursor,
            "principals": [asdict(p) for p in self._principals.values()],
            "records": [asdict(r) for r in self._records.values()],
            "consents": [_b64(c.SerializeToString(deterministic=True)) for c in self._consents.values()],
            "consents_by_patient": self._consents_by_patient,
            "delegations": [_b64(d.SerializeToString(deterministic=True)) for d in self._delegations.values()],
            "break_glass": [[actor, patient, [[w.started_at_ms, w.expires_at_ms] for w in windows]]
                            for (actor, patient), windows in self._break_glass.items()],
            "changes": [asdict(c) for c in self._changes],
            "links": self._links.rows(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace this (fresh) state by an exported one; ValueError/KeyError/TypeError if it is malformed."""
        principals = {p["principal_id"]: PrincipalInfo(**p) for p in data["principals"]}
        records = {}
        for r in data["records"]:
            info = _interned(RecordInfo(**{**r, "categories": tuple(r["categories"]), "codes": tuple(r["codes"])}))
            records[info.record_id] = info
        consents = {}
        for raw in data["consents"]:
            consent = consent_pb2.ConsentRecord.FromString(_unb64(raw))
            consents[consent.consent_id] = consent
        delegations = {}
        for raw in data["delegations"]:
            delegation = consent_pb2.Delegation.FromString(_unb64(raw))
            delegations[(delegation.patient_id, delegation.delegate_id)] = delegation
        break_glass = {(actor, patient): [BreakGlassWindow(int(a), int(b)) for a, b in windows]
                       for actor, patient, windows in data["break_glass"]}
        by_patient = {str(k): [str(c) for c in v] for k, v in data["consents_by_patient"].items()}
        changes = [ConsentChange(**c) for c in data["changes"]]
        links = PatientLinkTable(data.get("links", ()))
        self._install(int(data["cursor"]), principals, records, consents, by_patient, delegations, break_glass,
                      changes, links)

    def take_over(self, restored: ConsentState) -> None:
        """Become restored (a state :meth:`restore` filled), without copying it: a resume builds the state once.

        restored must not be used afterwards; ValueError if this state is not fresh.
        """
        with restored._sync_lock, restored._lock:
            parts = (restored._cursor, restored._principals, restored._records, restored._consents,
                     restored._consents_by_patient, restored._delegations, restored._break_glass, restored._changes,
                     restored._links)
        self._install(*parts)

    def _install(self, cursor: int, principals: dict[str, PrincipalInfo], records: dict[str, RecordInfo],
                 consents: dict[str, consent_pb2.ConsentRecord], by_patient: dict[str, list[str]],
                 delegations: dict[tuple[str, str], consent_pb2.Delegation],
                 break_glass: dict[tuple[str, str], list[BreakGlassWindow]], changes: list[ConsentChange],
                 links: PatientLinkTable) -> None:
        with self._sync_lock, self._lock:
            if self._cursor:
                raise ValueError("a snapshot is restored into a fresh state only")
            self._cursor = cursor
            self._principals, self._records, self._consents = principals, records, consents
            self._consents_by_patient, self._delegations, self._break_glass = by_patient, delegations, break_glass
            self._changes = changes
            self._links = links


def _interned(info: RecordInfo) -> RecordInfo:
    """info with its repeated strings (patient, organisation, type, author) shared by every record holding them."""
    return replace(info, patient_id=sys.intern(info.patient_id), organization_id=sys.intern(info.organization_id),
                   resource_type=sys.intern(info.resource_type), author_id=sys.intern(info.author_id))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _copy(consent: consent_pb2.ConsentRecord) -> consent_pb2.ConsentRecord:
    copy = consent_pb2.ConsentRecord()
    copy.CopyFrom(consent)
    return copy


def _copy_delegation(delegation: consent_pb2.Delegation) -> consent_pb2.Delegation:
    copy = consent_pb2.Delegation()
    copy.CopyFrom(delegation)
    return copy
