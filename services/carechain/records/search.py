"""SearchRecords: a patient's records by type, category, clinical date, author and last update, under consent.

The ledger lists the patient's registrations in log order, a page at a time
(``LedgerService.ListPatientRecords``, svc-records only: O(page), every identity
of the patient); each entry's sealed metadata is opened once and kept by the
gateway (by record id and log index). The filters are applied to the opened
metadata here, never on the ledger (which cannot read it). Consent decides every
match for the caller (``DecideMany``, no data key is released); the caller gets
the metadata of the permitted ones and ``withheld``, how many matched but were
not permitted: never which, never why.

A caller whom the patient's consent permits no record at all is told
PERMISSION_DENIED with GetRecord's denial message: an unknown patient, a patient
without records and one who consented nothing to the caller look the same, so a
search reveals nothing about a patient to a stranger (not even how many records
they have). Every search is one audit event (``AUDIT_ACTION_SEARCH``, the
patient, counts only), in the patient's accounting of disclosures.

Paging: a page holds at most ``page_size`` (<= 200) permitted records; its token
names the log index where the next page's scan starts, bound to the query
(caller, patient, purpose, filters: :mod:`carechain.audit.paging`), so the
withheld counts of all pages add up to the search's, each record once.

A search filtered by sensitivity category answers ``withheld`` 0: a count of the
withheld records of a category would tell what consent hides (that the patient
has, say, psychiatric records), which is exactly what a denial must never name.
So does one filtered by a clinical (FHIR) category whose code itself names
sensitive content (a SNOMED mental-health care plan); an ordinary clinical
category (``laboratory``, ``encounter-diagnosis``) keeps the count, as a type
filter does: :meth:`RecordFilter.reports_withheld`. A record written before
clinical categories were kept has none and matches no category filter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from carechain.audit import paging
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.consent.v1 import consent_pb2
from carechain.core.errors import InvalidArgument, PermissionDenied
from carechain.core.smart_scopes import require_purpose, searchable_types
from carechain.labels.resource_categories import MAX_TOKEN_LENGTH, category_token, has_category, names_sensitive_concept
from carechain.labels.security_labels import security_label_messages
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway, _status_name, organization_of, validate_purpose
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller

Action = audit_pb2.AuditAction
Outcome = audit_pb2.AuditOutcome
#: Records per page when a request asks for none, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Ledger entries asked for per ListPatientRecords call.
LEDGER_PAGE = 500
#: Matches decided per DecideMany of a search (consent accepts up to 256 per call).
DECIDE_CHUNK = 64
#: Most resource types or categories one search may name.
MAX_FILTER_VALUES = 50
# A FHIR resource type name (checked so that nothing else reaches a log line or a token).
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")


@dataclass(frozen=True)
class RecordFilter:
    """What a search (or a summary) asks of a record; an empty filter matches every record."""

    resource_types: frozenset[str] = frozenset()
    categories: frozenset[int] = frozenset()
    date_from_ms: int = 0
    date_to_ms: int = 0
    author_organization_id: str = ""
    updated_since_ms: int = 0
    updated_before_ms: int = 0  # exclusive; 0 = open
    #: FHIR clinical category tokens, as carechain.labels.resource_categories.category_token gives them.
    resource_categories: frozenset[str] = frozenset()

    @classmethod
    def of(cls, resource_types: Any = (), categories: Any = (), date_from_ms: int = 0, date_to_ms: int = 0,
           author_organization_id: str = "", updated_since_ms: int = 0,
           updated_since_field: str = "updated_since_ms", updated_before_ms: int = 0,
           resource_categories: Any = ()) -> RecordFilter:
        """A checked filter; InvalidArgument naming the field (never echoing its value)."""
        types = list(resource_types)
        if len(types) > MAX_FILTER_VALUES:
            raise InvalidArgument("resource_types", f"at most {MAX_FILTER_VALUES}")
        if any(not _RESOURCE_TYPE.fullmatch(t) for t in types):
            raise InvalidArgument("resource_types", "must be FHIR resource type names (e.g. Condition)")
        wanted = list(categories)
        if len(wanted) > MAX_FILTER_VALUES:
            raise InvalidArgument("categories", f"at most {MAX_FILTER_VALUES}")
        if any(c == common_pb2.SENSITIVITY_CATEGORY_UNSPECIFIED or c not in common_pb2.SensitivityCategory.values()
               for c in wanted):
            raise InvalidArgument("categories", "must be known SensitivityCategory values")
        for name, value in (("date_from_ms", date_from_ms), ("date_to_ms", date_to_ms),
                            (updated_since_field, updated_since_ms), ("updated_before_ms", updated_before_ms)):
            if value < 0:
                raise InvalidArgument(name, "must not be negative")
        if date_from_ms and date_to_ms and date_to_ms < date_from_ms:
            raise InvalidArgument("date_to_ms", "must not be before date_from_ms")
        if updated_since_ms and updated_before_ms and updated_before_ms <= updated_since_ms:
            raise InvalidArgument("updated_before_ms", f"must be after {updated_since_field}")
        if len(author_organization_id) > 200:
            raise InvalidArgument("author_organization_id", "is too long to be an organisation id")
        tokens = [category_token(token) for token in resource_categories]
        if len(tokens) > MAX_FILTER_VALUES:
            raise InvalidArgument("resource_categories", f"at most {MAX_FILTER_VALUES}")
        if any(token is None for token in tokens):
            raise InvalidArgument("resource_categories", "must be FHIR tokens: system|code, |code or code "
                                  f"(at most {MAX_TOKEN_LENGTH} characters)")
        return cls(frozenset(types), frozenset(wanted), date_from_ms, date_to_ms, author_organization_id,
                   updated_since_ms, updated_before_ms, frozenset(t for t in tokens if t is not None))

    def within_scopes(self, scope_claim: str) -> RecordFilter:
        """This filter limited to the types a SMART token may search (PermissionDenied for one it may not)."""
        return dataclasses.replace(self, resource_types=searchable_types(scope_claim, self.resource_types))

    def matches(self, entry: ledger_pb2.RecordEntry, metadata: ledger_pb2.RecordMetadata) -> bool:
        """Whether a record (its ledger entry and opened metadata) passes every filter."""
        if self.resource_types and metadata.resource_type not in self.resource_types:
            return False
        if self.categories and not self.categories.intersection(metadata.categories):
            return False
        if self.resource_categories and not has_category(self.resource_categories, metadata.resource_categories):
            return False
        if self.date_from_ms or self.date_to_ms:
            day = metadata.data_date_ms
            if not day or day < self.date_from_ms or (self.date_to_ms and day > self.date_to_ms):
                return False
        if self.author_organization_id and entry.record.organization_id != self.author_organization_id:
            return False
        if self.updated_before_ms and entry.last_updated_ms >= self.updated_before_ms:
            return False
        return not (self.updated_since_ms and entry.last_updated_ms < self.updated_since_ms)

    def key(self) -> tuple[object, ...]:
        """The filter as part of a page token's query."""
        return (sorted(self.resource_types), sorted(self.categories), self.date_from_ms, self.date_to_ms,
                self.author_organization_id, self.updated_since_ms, self.updated_before_ms,
                sorted(self.resource_categories))

    def reports_withheld(self) -> bool:
        """Whether a search by this filter may tell how many matches were withheld: not when it names a
        sensitivity category or a clinical category whose code is itself sensitive (module docstring)."""
        return not self.categories and not any(names_sensitive_concept(t) for t in self.resource_categories)


@dataclass(frozen=True)
class Match:
    """A live (not erased) record of the patient that passed the filter."""

    entry: ledger_pb2.RecordEntry
    metadata: ledger_pb2.RecordMetadata

    @property
    def record_id(self) -> str:
        return str(self.entry.record.record_id)

    @property
    def large(self) -> bool:
        """Read only with GetRecordStream (records.large_records)."""
        return bool(self.entry.record.segment_bytes)

    def summary(self) -> records_pb2.RecordSummary:
        """What a search returns about it."""
        record = self.entry.record
        return records_pb2.RecordSummary(
            record_id=record.record_id, resource_type=self.metadata.resource_type, version=record.version,
            data_date_ms=self.metadata.data_date_ms, author_organization_id=record.organization_id,
            last_updated_ms=self.entry.last_updated_ms, categories=list(self.metadata.categories),
            security_labels=security_label_messages(list(self.metadata.categories)),
            ledger_log_index=self.entry.log_index, large=self.large,
            resource_categories=list(self.metadata.resource_categories))


def _permitted(answer: consent_pb2.Decision | BaseException) -> bool:
    """A decision that permits; a refused request raises as Decide's error would."""
    if isinstance(answer, BaseException):
        raise answer
    return answer.effect == consent_pb2.DECISION_EFFECT_PERMIT


class RecordSearch:
    """Searches a patient's records through the ledger's patient index, the gateway and consent."""

    def __init__(self, gateway: RecordsGateway, ledger: Callable[[], Any]) -> None:
        """ledger() returns the LedgerService stub (called per page, so it may be lazy)."""
        self._gateway = gateway
        self._ledger = ledger

    def matches(self, patient_id: str, record_filter: RecordFilter, from_log_index: int = 0) -> Iterator[Match]:
        """The patient's live records passing record_filter, in log order, from from_log_index on."""
        request = ledger_pb2.ListPatientRecordsRequest(patient_id=patient_id, page_size=LEDGER_PAGE,
                                                       from_log_index=from_log_index)
        while True:
            page = self._ledger().ListPatientRecords(request)
            for entry in page.entries:
                if entry.erased:
                    continue
                metadata = self._gateway.verified(entry).metadata
                if record_filter.matches(entry, metadata):
                    yield Match(entry, metadata)
            if not page.next_page_token:
                return
            request = ledger_pb2.ListPatientRecordsRequest(patient_id=patient_id, page_size=LEDGER_PAGE,
                                                           page_token=page.next_page_token)

    def decide(self, caller: Caller, matches: list[Match], purpose: int) -> list[bool]:
        """Whether consent permits caller to read each match (ACCESS for purpose; no key released)."""
        answers = self._gateway.decider.decide_all([
            consent_pb2.DecideRequest(actor_id=caller.principal_id, record_id=m.record_id, purpose=purpose,  # type: ignore[arg-type]
                                      action=common_pb2.CONSENT_ACTION_ACCESS) for m in matches])
        return [_permitted(answer) for answer in answers]

    def permits_any(self, caller: Caller, patient_id: str, purpose: int) -> bool:
        """Whether consent permits caller any record of the patient at all (stops at the first permit)."""
        chunk: list[Match] = []
        for match in self.matches(patient_id, RecordFilter()):
            chunk.append(match)
            if len(chunk) == DECIDE_CHUNK:
                if any(self.decide(caller, chunk, purpose)):
                    return True
                chunk = []
        return bool(chunk) and any(self.decide(caller, chunk, purpose))

    def search(self, caller: Caller, request: records_pb2.SearchRecordsRequest) -> records_pb2.SearchRecordsResponse:
        """One page of the caller's search (see the module docstring); audited as one event."""
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        validate_purpose(request.purpose)
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE}")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        record_filter = RecordFilter.of(request.resource_types, request.categories, request.date_from_ms,
                                        request.date_to_ms, request.author_organization_id,
                                        request.updated_since_ms,
                                        updated_before_ms=request.updated_before_ms,
                                        resource_categories=request.resource_categories,
                                        ).within_scopes(caller.scope)
        require_purpose(caller.purpose_of_use, request.purpose)  # a SMART token binds the purpose it was issued for
        query = ("search", caller.principal_id, request.patient_id, request.purpose, *record_filter.key())
        start = paging.position(request.page_token, query)
        audit_fields = {"actor_id": caller.principal_id, "organization_id": organization_of(caller),
                        "patient_id": request.patient_id, "purpose": request.purpose}
        try:
            listed, withheld, following = self._page(caller, request, record_filter,
                                                     start["from"] if start else 0, page_size)
            # Nothing permitted here: does the patient's consent permit this caller anything at all?
            known = bool(listed) or self.permits_any(caller, request.patient_id, request.purpose)
        except Exception as exc:
            self._report(Outcome.AUDIT_OUTCOME_FAILED, audit_fields, f"search failed ({_status_name(exc)})")
            raise
        if not known:
            # Fail closed, as GetRecord: the denial is audited before the caller hears it.
            self._report(Outcome.AUDIT_OUTCOME_DENIED, audit_fields, "search: no record of the patient permitted")
            raise PermissionDenied(DENIAL_MESSAGE)
        self._report(Outcome.AUDIT_OUTCOME_SUCCESS, audit_fields,
                     f"search: {len(listed)} records listed, {withheld} withheld")
        return records_pb2.SearchRecordsResponse(
            records=[m.summary() for m in listed], withheld=withheld if record_filter.reports_withheld() else 0,
            next_page_token=paging.next_token(query, **{"from": following}) if following is not None else "")

    def _page(self, caller: Caller, request: records_pb2.SearchRecordsRequest, record_filter: RecordFilter,
              from_log_index: int, page_size: int) -> tuple[list[Match], int, int | None]:
        """(permitted matches, withheld, next page's first log index or None at the end) from from_log_index."""
        listed: list[Match] = []
        withheld = 0
        scan = self.matches(request.patient_id, record_filter, from_log_index)
        while True:
            chunk = [m for _, m in zip(range(min(DECIDE_CHUNK, page_size - len(listed))), scan, strict=False)]
            if not chunk:
                return listed, withheld, None
            for match, permitted in zip(chunk, self.decide(caller, chunk, request.purpose), strict=True):
                if permitted:
                    listed.append(match)
                else:
                    withheld += 1
            if len(listed) == page_size:
                return listed, withheld, chunk[-1].entry.log_index + 1

    def _report(self, outcome: int, audit_fields: dict[str, Any], reason: str) -> None:
        self._gateway.audit.report(Action.AUDIT_ACTION_SEARCH, outcome, reason=reason, **audit_fields)
