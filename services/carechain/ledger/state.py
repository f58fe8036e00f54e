"""Contract state derived from valid transactions, and a write overlay for one block.

The validator reads state through :class:`StateReader` and writes into a
:class:`PendingState` overlay. The chain store applies an overlay's writes in
the same SQLite transaction as the block; verification runs the validator on
an overlay over :class:`EmptyState` and never touches the store's state tables.
Writes are kept in insertion (= log) order so applying them is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

CONSENT_ACTIVE = "ACTIVE"
CONSENT_REVOKED = "REVOKED"


@dataclass(frozen=True)
class Principal:
    """A principal registered on the ledger."""

    principal_id: str
    kind: int  # common_pb2.PrincipalKind
    public_key: bytes
    organization_id: str
    specialty: str
    log_index: int
    kek_version: int = 0  # last KeyRotation version recorded for a patient
    deactivated_log_index: int | None = None  # DeactivatePrincipal: no more transactions or tokens

    @property
    def active(self) -> bool:
        """Not deactivated."""
        return self.deactivated_log_index is None


@dataclass(frozen=True, slots=True)  # one per record of the whole history: no per-instance dict
class RecordState:
    """A registered record."""

    record_id: str
    patient_id: str
    entry: bytes  # deterministic encoding of the RegisterRecord
    log_index: int
    erased: bool = False
    erased_log_index: int | None = None


@dataclass(frozen=True)
class RecordVersionState:
    """An earlier (superseded) version of a record; the latest is the record's :class:`RecordState`."""

    record_id: str
    version: int
    entry: bytes  # deterministic encoding of that version's RegisterRecord
    log_index: int


@dataclass(frozen=True)
class ConsentState:
    """A granted consent and its status."""

    consent_id: str
    patient_id: str
    policy: bytes  # deterministic encoding of the SealedData holding the ConsentPolicy
    status: str
    log_index: int
    revoked_log_index: int | None = None


@dataclass(frozen=True)
class Delegation:
    """A patient's delegate (guardian or proxy) and its status."""

    patient_id: str
    delegate_id: str
    relationship: int  # policy_pb2.DelegateRelationship
    start_ms: int  # 0 = open
    end_ms: int  # exclusive; 0 = open
    status: str  # CONSENT_ACTIVE or CONSENT_REVOKED
    log_index: int
    revoked_log_index: int | None = None

    def active_at(self, time_ms: int) -> bool:
        """Not revoked, and time_ms inside its period."""
        return (
            self.status == CONSENT_ACTIVE
            and (not self.start_ms or time_ms >= self.start_ms)
            and (not self.end_ms or time_ms < self.end_ms)
        )


@dataclass(frozen=True)
class AuditAnchor:
    """An anchored audit batch."""

    batch_number: int
    first_sequence: int
    last_sequence: int
    merkle_root: bytes
    log_index: int


@dataclass(frozen=True)
class PatientLink:
    """A patient principal linked to a network identity (LinkPatientIdentity), and whether it still is."""

    linked_patient_id: str
    network_patient_id: str
    organization_id: str  # the organisation that registered the linked patient and attested the link
    log_index: int
    unlinked_log_index: int | None = None

    @property
    def active(self) -> bool:
        """Not unlinked."""
        return self.unlinked_log_index is None


class LinkResolution:
    """Network identity resolution over ``patient_link`` and ``patient_links_to`` (one place for every state)."""

    def patient_link(self, linked_patient_id: str) -> PatientLink | None:
        raise NotImplementedError

    def patient_links_to(self, network_patient_id: str) -> list[PatientLink]:
        raise NotImplementedError

    def network_patient(self, patient_id: str) -> str:
        """The network identity patient_id is linked to, or patient_id itself when it is not linked."""
        link = self.patient_link(patient_id) if patient_id else None
        return link.network_patient_id if link is not None and link.active else patient_id

    def linked_patients(self, network_patient_id: str) -> list[str]:
        """The patient principals currently linked to network_patient_id, in link order (itself excluded)."""
        return [link.linked_patient_id for link in self.patient_links_to(network_patient_id) if link.active]


class StateReader(Protocol):
    """Read access to committed contract state."""

    def principal(self, principal_id: str) -> Principal | None:
        """A registered principal, or None."""
        ...

    def nonce_used(self, signer_id: str, nonce: bytes) -> bool:
        """True when (signer, nonce) was consumed by a committed transaction."""
        ...

    def record(self, record_id: str) -> RecordState | None:
        """A registered record, or None."""
        ...

    def patient_records(self, patient_id: str) -> list[RecordState]:
        """A patient's records in log order."""
        ...

    def earlier_record_version(self, record_id: str, version: int) -> RecordVersionState | None:
        """A superseded version of a record (not its latest), or None."""
        ...

    def consent(self, consent_id: str) -> ConsentState | None:
        """A consent, or None."""
        ...

    def delegation(self, patient_id: str, delegate_id: str) -> Delegation | None:
        """A patient's delegation to delegate_id, or None."""
        ...

    def last_audit_batch(self) -> int | None:
        """Highest anchored audit batch number, or None."""
        ...

    def patient_link(self, linked_patient_id: str) -> PatientLink | None:
        """The link of a patient principal (active or unlinked), or None."""
        ...

    def patient_links_to(self, network_patient_id: str) -> list[PatientLink]:
        """Every link (active or unlinked) to network_patient_id, in log order."""
        ...

    def network_patient(self, patient_id: str) -> str:
        """The network identity of patient_id (patient_id itself when not linked)."""
        ...

    def linked_patients(self, network_patient_id: str) -> list[str]:
        """The patient principals linked to network_patient_id now, in link order."""
        ...


class EmptyState(LinkResolution):
    """The state before genesis."""

    def principal(self, principal_id: str) -> Principal | None:
        return None

    def nonce_used(self, signer_id: str, nonce: bytes) -> bool:
        return False

    def record(self, record_id: str) -> RecordState | None:
        return None

    def patient_records(self, patient_id: str) -> list[RecordState]:
        return []

    def earlier_record_version(self, record_id: str, version: int) -> RecordVersionState | None:
        return None

    def consent(self, consent_id: str) -> ConsentState | None:
        return None

    def delegation(self, patient_id: str, delegate_id: str) -> Delegation | None:
        return None

    def last_audit_batch(self) -> int | None:
        return None

    def patient_link(self, linked_patient_id: str) -> PatientLink | None:
        return None

    def patient_links_to(self, network_patient_id: str) -> list[PatientLink]:
        return []


class PendingState(LinkResolution):
    """Writes of not-yet-committed transactions layered over a committed state."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.principals: dict[str, Principal] = {}
        self.nonces: dict[tuple[str, bytes], int] = {}  # -> log index that consumed it
        self.records: dict[str, RecordState] = {}
        self.record_versions: dict[tuple[str, int], RecordVersionState] = {}  # superseded versions
        self.consents: dict[str, ConsentState] = {}
        self.delegations: dict[tuple[str, str], Delegation] = {}
        self.anchors: list[AuditAnchor] = []
        self.links: dict[str, PatientLink] = {}  # by linked patient id

    # --- reads -------------------------------------------------------------------------------

    def principal(self, principal_id: str) -> Principal | None:
        found = self.principals.get(principal_id)
        return found if found is not None else self.base.principal(principal_id)

    def nonce_used(self, signer_id: str, nonce: bytes) -> bool:
        return (signer_id, nonce) in self.nonces or self.base.nonce_used(signer_id, nonce)

    def record(self, record_id: str) -> RecordState | None:
        found = self.records.get(record_id)
        return found if found is not None else self.base.record(record_id)

    def patient_records(self, patient_id: str) -> list[RecordState]:
        merged = {r.record_id: r for r in self.base.patient_records(patient_id)}
        merged.update((r.record_id, r) for r in self.records.values() if r.patient_id == patient_id)
        return sorted(merged.values(), key=lambda r: r.log_index)

    def earlier_record_version(self, record_id: str, version: int) -> RecordVersionState | None:
        found = self.record_versions.get((record_id, version))
        return found if found is not None else self.base.earlier_record_version(record_id, version)

    def consent(self, consent_id: str) -> ConsentState | None:
        found = self.consents.get(consent_id)
        return found if found is not None else self.base.consent(consent_id)

    def delegation(self, patient_id: str, delegate_id: str) -> Delegation | None:
        found = self.delegations.get((patient_id, delegate_id))
        return found if found is not None else self.base.delegation(patient_id, delegate_id)

    def last_audit_batch(self) -> int | None:
        return self.anchors[-1].batch_number if self.anchors else self.base.last_audit_batch()

    def patient_link(self, linked_patient_id: str) -> PatientLink | None:
        found = self.links.get(linked_patient_id)
        return found if found is not None else self.base.patient_link(linked_patient_id)

    def patient_links_to(self, network_patient_id: str) -> list[PatientLink]:
        merged = {link.linked_patient_id: link for link in self.base.patient_links_to(network_patient_id)}
        for link in self.links.values():  # a link moved to another network identity leaves this one
            merged.pop(link.linked_patient_id, None)
            if link.network_patient_id == network_patient_id:
                merged[link.linked_patient_id] = link
        return sorted(merged.values(), key=lambda link: link.log_index)

    # --- writes ------------------------------------------------------------------------------

    def consume_nonce(self, signer_id: str, nonce: bytes, log_index: int) -> None:
        """Mark (signer, nonce) used."""
        self.nonces[(signer_id, nonce)] = log_index

    def put_principal(self, principal: Principal) -> None:
        """Add or update a principal."""
        self.principals[principal.principal_id] = principal

    def put_record(self, record: RecordState) -> None:
        """Add or update a record."""
        self.records[record.record_id] = record

    def put_record_version(self, latest: RecordState, version: int, log_index: int, entry: bytes) -> None:
        """A new latest version of a record: the current one is kept as an earlier version."""
        previous_version = version - 1
        self.record_versions[(latest.record_id, previous_version)] = RecordVersionState(
            latest.record_id, previous_version, latest.entry, latest.log_index)
        self.records[latest.record_id] = replace(latest, entry=entry, log_index=log_index)

    def erase_record(self, record: RecordState, log_index: int) -> None:
        """Tombstone a record."""
        self.records[record.record_id] = replace(record, erased=True, erased_log_index=log_index)

    def put_consent(self, consent: ConsentState) -> None:
        """Add or update a consent."""
        self.consents[consent.consent_id] = consent

    def put_delegation(self, delegation: Delegation) -> None:
        """Add or update a delegation."""
        self.delegations[(delegation.patient_id, delegation.delegate_id)] = delegation

    def add_anchor(self, anchor: AuditAnchor) -> None:
        """Record an anchored audit batch."""
        self.anchors.append(anchor)

    def put_link(self, link: PatientLink) -> None:
        """Add or update a patient identity link."""
        self.links[link.linked_patient_id] = link


def searched_identities(state: object, patient_id: str) -> list[str]:
    """Every patient id whose records are patient_id's: itself, then the local identities linked to it.

    Links (issue 14 part 1) come from the state's ``linked_patients`` once the chain store has it; before
    that a patient is one identity.
    """
    linked = getattr(state, "linked_patients", None)
    aliases = list(linked(patient_id)) if callable(linked) else []
    return [patient_id, *(alias for alias in aliases if alias != patient_id)]
