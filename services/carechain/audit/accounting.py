"""A patient's accounting of disclosures (45 CFR 164.528), notifications and FHIR export.

Patients read their own; services may read any patient's. A patient's
registered guardian (an active GUARDIAN delegation on the ledger, learnt from
the consent service at read time) is their personal representative
(45 CFR 164.502(g)) and reads the accounting too. Patients and guardians see
each recipient's display name and organisation name (from identity, at read
time); services get identifiers only. A period covers at most six years
(:data:`SIX_YEARS_MS`), the last six by default. Every listing is served a page
at a time (:mod:`carechain.audit.paging`), each page one index range of the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from carechain.audit import fhir_audit, paging
from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.errors import InvalidArgument, PermissionDenied
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Caller

Kind = common_pb2.PrincipalKind
# The longest period an accounting of disclosures covers (45 CFR 164.528: up to six years);
# six calendar years hold at most two leap days.
SIX_YEARS_MS = (6 * 365 + 2) * 24 * 3600 * 1000


class PrincipalDirectory(Protocol):
    """What the audit service asks other services at read time (delegations, names)."""

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        """The patient's delegations (consent service); raises when consent cannot be reached."""
        ...

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        """A registered principal (identity service), or None when unknown or unreachable."""
        ...


def accounting_period(since_ms: int, until_ms: int, now_ms: int) -> tuple[int, int]:
    """The (since, until) period of an accounting of disclosures; until 0 = open-ended.

    Defaults to the last six years; a longer period is INVALID_ARGUMENT.
    """
    if since_ms < 0:
        raise InvalidArgument("since_ms", "must not be negative")
    if until_ms < 0:
        raise InvalidArgument("until_ms", "must not be negative")
    end = until_ms or now_ms
    since = since_ms or max(end - SIX_YEARS_MS, 0)
    if until_ms and until_ms <= since:
        raise InvalidArgument("until_ms", "must be after since_ms")
    if end - since > SIX_YEARS_MS:
        raise InvalidArgument(
            "since_ms", "the period since_ms..until_ms (until_ms 0 = now) may span at most six years"
        )
    return since, until_ms


def _category_names(categories: Any) -> list[str]:
    return [common_pb2.SensitivityCategory.Name(c).removeprefix("SENSITIVITY_CATEGORY_").lower().replace("_", " ")
            for c in categories]


def is_active_guardian(delegation: consent_pb2.Delegation, delegate_id: str, now_ms: int) -> bool:
    """Whether delegation makes delegate_id the patient's personal representative now (a guardian in force)."""
    period = delegation.period
    return (
        delegation.delegate_id == delegate_id
        and delegation.relationship == policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN
        and delegation.status == consent_pb2.DELEGATION_STATUS_ACTIVE
        and (not period.start_ms or now_ms >= period.start_ms)
        and (not period.end_ms or now_ms < period.end_ms)
    )


def disclosure(stored: audit_pb2.StoredAuditEvent) -> audit_pb2.Disclosure:
    """The accounting-of-disclosures entry of one event."""
    event = stored.event
    if event.record_id:
        description = f"{event.resource_type or 'health'} record {event.record_id}"
        names = _category_names(event.categories)
        if names:
            description += f" ({', '.join(names)})"
    else:
        description = audit_pb2.AuditAction.Name(event.action).removeprefix("AUDIT_ACTION_").lower().replace("_", " ")
    return audit_pb2.Disclosure(
        time_ms=event.time_ms, recipient_id=event.actor_id, recipient_organization_id=event.organization_id,
        record_id=event.record_id, resource_type=event.resource_type, categories=event.categories,
        purpose=event.purpose, action=event.action, outcome=event.outcome, description=description,
        sequence=stored.sequence, alert=event.alert,
    )


def named_patient(caller: Caller, patient_id: str) -> str:
    """The patient a read is about: a patient's own (the access table checked it), or the one others name."""
    if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
        return caller.principal_id
    if not patient_id:
        raise InvalidArgument("patient_id", "required")
    return patient_id


class Accounting:
    """The patient-facing reads of the trail; directory (optional) answers delegations and names."""

    def __init__(
        self, store: AuditStore, now_ms: Callable[[], int], directory: PrincipalDirectory | None = None
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._directory = directory

    def access_history(
        self, caller: Caller, patient_id: str, since_ms: int, until_ms: int, page_size: int = 0, page_token: str = ""
    ) -> audit_pb2.GetAccessHistoryResponse:
        """One page of the accounting of disclosures of patient_id (the caller's own when a patient names none)."""
        # The access table's OWN_OR_GUARDIAN scope has checked a patient's or guardian's right to read it.
        patient_id = patient_id or (caller.principal_id if caller.kind == Kind.PRINCIPAL_KIND_PATIENT else "")
        if not patient_id:
            raise InvalidArgument("patient_id", "required")
        events, since, until, token = self._history_page("history", patient_id, since_ms, until_ms, page_size,
                                                         page_token)
        disclosures = [disclosure(e) for e in events]
        if caller.kind != Kind.PRINCIPAL_KIND_SERVICE:
            self._name_recipients(disclosures)
        return audit_pb2.GetAccessHistoryResponse(
            events=events, disclosures=disclosures, since_ms=since, until_ms=until, next_page_token=token
        )

    def _history_page(
        self, listing: str, patient_id: str, since_ms: int, until_ms: int, page_size: int, page_token: str
    ) -> tuple[list[audit_pb2.StoredAuditEvent], int, int, str]:
        """(events, since, until, next token) of one page of a patient's events, newest first: one index range.

        The period's default start (six years before now) is fixed by the first page and kept in the token,
        so that later pages continue the same period.
        """
        query = (listing, patient_id, since_ms, until_ms)
        start = paging.position(page_token, query)
        if start is None:
            since, until = accounting_period(since_ms, until_ms, self._now_ms())
            before = None
        else:
            since, until, before = start.get("since", 0), until_ms, (start.get("t", 0), start.get("s", 0))
        limit = paging.page_size(page_size)
        events = self._store.history(patient_id, since, until, limit + 1, before)
        token = ""
        if len(events) > limit:
            events = events[:limit]
            last = events[-1]
            token = paging.next_token(query, since=since, t=last.event.time_ms, s=last.sequence)
        return events, since, until, token

    def accounting_patient(self, caller: Caller, patient_id: str) -> str:
        """The patient whose accounting caller may read: their own, as the active guardian, or (a service) any."""
        if caller.kind == Kind.PRINCIPAL_KIND_SERVICE:
            if not patient_id:
                raise InvalidArgument("patient_id", "required")
            return patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT and patient_id in ("", caller.principal_id):
            return caller.principal_id
        if not patient_id:
            raise InvalidArgument("patient_id", "required: the patient whose accounting a guardian reads")
        # A personal representative: the ledger's delegations, as the consent service derives them.
        delegations = self._directory.delegations(patient_id) if self._directory is not None else []
        now = self._now_ms()
        if not any(is_active_guardian(d, caller.principal_id, now) for d in delegations):
            raise PermissionDenied("only the patient, the patient's active guardian or a service may read "
                                   "a patient's accounting of disclosures")
        return patient_id

    def _name_recipients(self, disclosures: list[audit_pb2.Disclosure]) -> None:
        """Fill recipient and organisation display names, looked up once per principal (best effort)."""
        if self._directory is None:
            return
        names: dict[str, str] = {}

        def name(principal_id: str) -> str:
            if principal_id and principal_id not in names:
                principal = self._directory.principal(principal_id)  # type: ignore[union-attr]
                names[principal_id] = principal.display_name if principal is not None else ""
            return names.get(principal_id, "")

        for entry in disclosures:
            entry.recipient_name = name(entry.recipient_id)
            entry.recipient_organization_name = name(entry.recipient_organization_id)

    def fhir_export(self, caller: Caller, patient_id: str, since_ms: int, until_ms: int, page_size: int = 0,
                    page_token: str = "") -> audit_pb2.ExportFhirBundleResponse:
        """One page of the patient's audit events in the period as a FHIR R4 Bundle of AuditEvent resources."""
        patient_id = named_patient(caller, patient_id)
        events, _, _, token = self._history_page("fhir-export", patient_id, since_ms, until_ms, page_size,
                                                 page_token)
        return audit_pb2.ExportFhirBundleResponse(
            bundle_json=fhir_audit.bundle_json(events, str(uuid.uuid4()), self._now_ms()), count=len(events),
            next_page_token=token,
        )

    def notifications(
        self, caller: Caller, patient_id: str, page_size: int = 0, page_token: str = ""
    ) -> audit_pb2.ListNotificationsResponse:
        """One page of the patient's notifications (break-glass accesses), newest first."""
        patient_id = named_patient(caller, patient_id)
        query = ("notifications", patient_id)
        start = paging.position(page_token, query)
        limit = paging.page_size(page_size)
        notes = self._store.notifications(patient_id, limit + 1,
                                          None if start is None else (start.get("t", 0), start.get("s", 0)))
        token = ""
        if len(notes) > limit:
            notes = notes[:limit]
            token = paging.next_token(query, t=notes[-1].time_ms, s=notes[-1].event.sequence)
        return audit_pb2.ListNotificationsResponse(notifications=notes, next_page_token=token)
