"""FHIR search and ``Patient/$everything`` over records' SearchRecords (docs/fhir.md, "Search").

:func:`parse_search` turns the query string of ``GET /{type}`` or ``GET /?_type=...`` into a
:class:`SearchQuery` (one SearchRecordsRequest), :func:`parse_everything` the one of
``GET /Patient/{id}/$everything``; both answer 400 naming the parameter at fault, and refuse a parameter
they do not know unless the client asked for ``Prefer: handling=lenient`` (then it is ignored and said so
in the Bundle's OperationOutcome). :func:`searchset` is the answer: a ``searchset`` Bundle of the matched
resources (each read with GetRecord, so decided and audited one by one), its ``self`` and ``next`` links
(``next`` carries records' opaque page token, bound to the query) and an ``outcome`` entry saying how many
matching records were withheld, never which.

Supported parameters are :func:`search_parameters` of the type (what the CapabilityStatement lists per
type): :data:`SEARCH_PARAMETERS`, and ``category`` for a type with a FHIR ``category`` element (its clinical
category, e.g. Observation ``laboratory``; not a sensitivity label, those are searched with ``_security``).
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from carechain.core.fhir import fhir_time_range
from carechain.fhir.outcomes import FhirError
from carechain.fhir.patients import served_version
from carechain.fhir.provenance import provenance_entry
from carechain.labels.resource_categories import CATEGORY_ELEMENTS, category_token
from carechain.labels.security_labels import ACT_CODE, CARECHAIN_SENSITIVITY, CONFIDENTIALITY, category_of_label
from carechain.records.v1 import records_pb2

#: The version a record is served as (records answers version 1 until updates land: issue 14).
#: Records' page size cap; a larger _count is served as this (FHIR lets a server return fewer).
MAX_COUNT = 200
DEFAULT_COUNT = 50
#: The query parameter of a ``next`` link carrying records' page token.
PAGE_TOKEN = "_page_token"  # noqa: S105 - a parameter name, not a secret
# Parameters every interaction accepts that do not change what is found (_format is negotiated by the app).
_RESULT_PARAMETERS = frozenset({"_format", "_pretty", PAGE_TOKEN})

#: Search parameters per level: (name, FHIR SearchParameter type, what it searches), as the CapabilityStatement says.
SEARCH_PARAMETERS: tuple[tuple[str, str, str], ...] = (
    ("patient", "reference", "the patient: Patient/<pseudonym> (required)"),
    ("subject", "reference", "the same as patient"),
    ("date", "date", "the clinical date (a day; prefixes eq ge gt le lt)"),
    ("_lastUpdated", "date", "when the record was last written (prefixes eq ge gt le lt)"),
    ("_security", "token", "a sensitivity label (system|code, e.g. v3-ActCode|PSY)"),
    ("_count", "number", f"results per page (at most {MAX_COUNT})"),
)
#: ``category``: served for the types with a FHIR category element (carechain.labels.resource_categories).
CATEGORY_SEARCH_PARAMETER = ("category", "token", "the clinical category (system|code, |code or code; commas: "
                             "any of them; e.g. laboratory). Records written before categories were kept "
                             "match none. Not a sensitivity label: see _security")
#: The Patient type's own search: by its logical id (the pseudonym).
PATIENT_SEARCH_PARAMETERS: tuple[tuple[str, str, str], ...] = (
    ("_id", "token", "the patient's pseudonym (required)"),
    ("_lastUpdated", "date", "when the record was last written (prefixes eq ge gt le lt)"),
    ("_security", "token", "a sensitivity label (system|code)"),
    ("_count", "number", f"results per page (at most {MAX_COUNT})"),
)
EVERYTHING_PARAMETERS = frozenset({"_type", "_since", "_count"})
#: The one ``_revinclude`` served (searches and $everything): the ledger's Provenance of each version served.
REVINCLUDE_PROVENANCE = "Provenance:target"
_INCLUDES = ("_include", "_revinclude")
_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_DATE = re.compile(r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})(T(?P<time>[0-9:.]+)"
                   r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")
_PSEUDONYM = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DAY_MS = 86_400_000
_LABEL_SYSTEMS = (ACT_CODE, CONFIDENTIALITY, CARECHAIN_SENSITIVITY)


@dataclass
class SearchQuery:
    """One FHIR search as records' SearchRecords request, and what its links repeat."""

    request: records_pb2.SearchRecordsRequest
    #: The query's own parameters (no page token), repeated in the self and next links.
    parameters: list[tuple[str, str]] = field(default_factory=list)
    #: Parameters ignored under ``Prefer: handling=lenient`` (named in the Bundle's outcome).
    ignored: list[str] = field(default_factory=list)
    #: ``_revinclude=Provenance:target``: each read asks records for its version's Provenance (no extra read).
    revinclude_provenance: bool = False


def search_parameters(resource_type: str | None) -> tuple[tuple[str, str, str], ...]:
    """The search parameters served for a type (None: the system-level search, which also takes _type)."""
    if resource_type == "Patient":
        return PATIENT_SEARCH_PARAMETERS
    if resource_type in CATEGORY_ELEMENTS:
        return (*SEARCH_PARAMETERS, CATEGORY_SEARCH_PARAMETER)
    return SEARCH_PARAMETERS


def _refused(resource_type: str | None) -> dict[str, str]:
    """Parameters refused even under lenient handling (a client must not believe them applied), and why
    (any modifier of the name too)."""
    if resource_type in CATEGORY_ELEMENTS:
        return {"category": "modifiers are not supported (give system|code, |code or code)"}
    where = f"{resource_type} has no category element" if resource_type else \
        "search one resource type with it (e.g. Observation?category=laboratory)"
    return {"category": f"not supported here ({where}; sensitivity labels are searched with _security)"}


def lenient(prefer: str) -> bool:
    """Whether a ``Prefer`` header asks for lenient handling of unknown parameters."""
    return "handling=lenient" in prefer.replace(" ", "").lower()


def _bad(parameter: str, why: str, code: str = "invalid") -> FhirError:
    return FhirError(400, code, f"{parameter}: {why}", parameter)


def _one(values: list[str], parameter: str) -> str:
    if len(values) != 1:
        raise _bad(parameter, "give it once")
    return values[0]


def patient_id_of(value: str, parameter: str) -> str:
    """The pseudonym of a ``patient`` reference: ``Patient/<id>``, a URL ending so, or the bare id."""
    reference = value.strip()
    if "/" in reference:
        head, _, reference = reference.rpartition("/")
        if not (head == "Patient" or head.endswith("/Patient")):
            raise _bad(parameter, "must reference a Patient (Patient/<pseudonym>)")
    if not _PSEUDONYM.match(reference):
        raise _bad(parameter, "must be Patient/<pseudonym>")
    return reference


def _instant(text: str, parameter: str) -> tuple[int, int]:
    """A FHIR date/dateTime as the half-open range [start, end) of Unix ms it stands for (UTC when no zone)."""
    if _DATE.match(text) is None:
        raise _bad(parameter, "must be a FHIR date or dateTime (e.g. 2026-03-02), after an optional prefix", "value")
    try:
        return fhir_time_range(text)
    except ValueError:
        raise _bad(parameter, "is not a real date", "value") from None


def _prefixed(value: str, parameter: str) -> tuple[str, int, int]:
    prefixed = value[:2].isalpha() and value[2:3].isdigit()
    prefix = value[:2] if prefixed else "eq"
    if prefix not in _PREFIXES:
        raise _bad(parameter, f"prefix {prefix!r} is not supported (use one of {' '.join(_PREFIXES)})", "not-supported")
    start, end = _instant(value[2:] if prefixed else value, parameter)
    return prefix, start, end


def date_window(values: Sequence[str], parameter: str) -> tuple[int, int]:
    """The clinical-date range (first day, last day; Unix ms of UTC midnights, 0 = open) of ``date`` values.

    Clinical dates are days, so a dateTime stands for its day. Several values all apply (AND).
    """
    low, high = 0, 0
    for value in values:
        prefix, start, end = _prefixed(value, parameter)
        first, last = start - start % _DAY_MS, (end - 1) - (end - 1) % _DAY_MS
        if prefix in ("eq", "ge"):
            low = max(low, first)
        if prefix == "gt":
            low = max(low, last + _DAY_MS)
        if prefix in ("eq", "le"):
            high = min(high, last) if high else last
        if prefix == "lt":
            high = min(high, first - _DAY_MS) if high else first - _DAY_MS
    if high and high < low:
        raise _bad(parameter, "the range is empty (its end is before its start)", "value")
    if high < 0:
        raise _bad(parameter, "is before 1970", "value")
    return low, high


def updated_window(values: Sequence[str], parameter: str) -> tuple[int, int]:
    """The last-updated window [since, before) in Unix ms (0 = open) of ``_lastUpdated`` values (AND)."""
    since, before = 0, 0
    for value in values:
        prefix, start, end = _prefixed(value, parameter)
        lower = {"eq": start, "ge": start, "gt": end}.get(prefix)
        upper = {"eq": end, "le": end, "lt": start}.get(prefix)
        if lower is not None:
            since = max(since, lower)
        if upper is not None:
            before = min(before, upper) if before else upper
    if before and before <= since:
        raise _bad(parameter, "the window is empty (its end is not after its start)", "value")
    if before < 0 or since < 0:
        raise _bad(parameter, "is before 1970", "value")
    return since, before


def categories_of(values: Sequence[str], parameter: str = "_security") -> list[int]:
    """The sensitivity categories of ``_security`` tokens (``system|code``, ``|code`` or ``code``; commas: OR)."""
    found: set[int] = set()
    for value in values:
        for token in value.split(","):
            system, bar, code = token.partition("|")
            systems = (system,) if bar and system else _LABEL_SYSTEMS
            code = code if bar else system
            categories = {c for s in systems if (c := category_of_label(s, code)) is not None}
            if not categories:
                raise _bad(parameter, "not a security label CareChain labels records with (e.g. "
                           f"{ACT_CODE}|PSY)", "code-invalid")
            found |= categories
    return sorted(found)


def resource_categories_of(values: Sequence[str], parameter: str = "category") -> list[str]:
    """The clinical category tokens of ``category`` (``system|code``, ``|code`` or ``code``; commas: OR).

    Given more than once (AND) it is 400: records matches any of a search's categories, not all.
    """
    tokens = _one(list(values), parameter).split(",")
    if any(category_token(token) is None for token in tokens):
        raise _bad(parameter, "must be tokens system|code, |code or code (commas: any of them)", "value")
    return sorted(set(tokens))


def count_of(values: Sequence[str], parameter: str = "_count") -> int:
    """The page size of ``_count`` (1..): above MAX_COUNT it is MAX_COUNT."""
    text = _one(list(values), parameter)
    if not text.isdigit() or int(text) < 1:
        raise _bad(parameter, "must be a whole number of at least 1", "value")
    return min(int(text), MAX_COUNT)


def resource_types_of(values: Sequence[str], known: frozenset[str], parameter: str = "_type") -> list[str]:
    """The resource types of ``_type`` (commas; repeated: all of them); 400 for a type this server does not store."""
    types = sorted({t.strip() for value in values for t in value.split(",") if t.strip()})
    if not types:
        raise _bad(parameter, "name at least one resource type")
    if any(not _TYPE.match(t) or t not in known for t in types):
        raise _bad(parameter, "names a resource type this server does not store (see /metadata)", "not-supported")
    return types


def _grouped(params: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    return grouped


def _unknown(names: Sequence[str], handle_lenient: bool, refused: dict[str, str]) -> list[str]:
    for name in names:
        if name.split(":", 1)[0] in refused:
            raise FhirError(400, "not-supported", f"{name}: {refused[name.split(':', 1)[0]]}", name)
    if names and not handle_lenient:
        raise FhirError(400, "not-supported", f"{names[0]}: this search parameter is not supported here (see "
                        "/metadata; or send Prefer: handling=lenient to have it ignored)", names[0])
    return sorted(names)


def includes_of(grouped: dict[str, list[str]], handle_lenient: bool) -> tuple[bool, list[str]]:
    """Whether ``_revinclude=Provenance:target`` is asked for, and the include parameters ignored (lenient).

    Any other ``_revinclude`` value, and any ``_include`` (nothing here references another stored resource the
    client could not read itself), is 400 naming the parameter unless handling is lenient.
    """
    wanted, ignored = False, []
    for name in _INCLUDES:
        for value in grouped.get(name, []):
            if name == "_revinclude" and value.strip() == REVINCLUDE_PROVENANCE:
                wanted = True
            elif handle_lenient:
                ignored.append(name)
            else:
                raise FhirError(400, "not-supported", f"{name}: not supported here; this server serves only "
                                f"_revinclude={REVINCLUDE_PROVENANCE} (see /metadata)", name)
    return wanted, sorted(set(ignored))


def _kept(params: Sequence[tuple[str, str]], supported: set[str] | frozenset[str], revinclude: bool
          ) -> list[tuple[str, str]]:
    """The parameters the self and next links repeat: the supported ones and the served _revinclude."""
    return [(n, v) for n, v in params
            if n in supported or (revinclude and n == "_revinclude" and v.strip() == REVINCLUDE_PROVENANCE)]


def parse_search(resource_type: str | None, params: Sequence[tuple[str, str]], known_types: frozenset[str],
                 purpose: int, handle_lenient: bool = False) -> SearchQuery:
    """The SearchRecords request of a FHIR search (resource_type None: ``GET /`` with ``_type``)."""
    grouped = _grouped(params)
    supported = {name for name, _, _ in search_parameters(resource_type)} | (
        {"_type"} if resource_type is None else set())
    ignored = _unknown([n for n in grouped if n not in supported | _RESULT_PARAMETERS | set(_INCLUDES)],
                       handle_lenient, _refused(resource_type))
    revinclude, ignored_includes = includes_of(grouped, handle_lenient)
    request = records_pb2.SearchRecordsRequest(purpose=purpose)  # type: ignore[arg-type]
    patient_parameters = ("_id",) if resource_type == "Patient" else ("patient", "subject")
    given = [(name, v) for name in patient_parameters for v in grouped.get(name, [])]
    if not given:
        raise FhirError(400, "required", f"{patient_parameters[0]}: required (a search covers one patient: "
                        "Patient/<pseudonym>)", patient_parameters[0])
    patients = {patient_id_of(value, name) for name, value in given}
    if len(patients) != 1:
        raise _bad(patient_parameters[0], "name one patient")
    request.patient_id = patients.pop()
    if resource_type is not None:
        request.resource_types.append(resource_type)
    elif "_type" in grouped:
        request.resource_types.extend(resource_types_of(grouped["_type"], known_types))
    if "date" in grouped:
        request.date_from_ms, request.date_to_ms = date_window(grouped["date"], "date")
    if "_lastUpdated" in grouped:
        request.updated_since_ms, request.updated_before_ms = updated_window(grouped["_lastUpdated"], "_lastUpdated")
    if "_security" in grouped:
        request.categories.extend(categories_of(grouped["_security"]))  # type: ignore[arg-type]
    if "category" in grouped:
        request.resource_categories.extend(resource_categories_of(grouped["category"]))
    request.page_size = count_of(grouped["_count"]) if "_count" in grouped else DEFAULT_COUNT
    if PAGE_TOKEN in grouped:
        request.page_token = _one(grouped[PAGE_TOKEN], PAGE_TOKEN)
    return SearchQuery(request, _kept(params, supported, revinclude), sorted({*ignored, *ignored_includes}),
                       revinclude)


def parse_everything(patient_id: str, params: Sequence[tuple[str, str]], known_types: frozenset[str],
                     purpose: int, handle_lenient: bool = False) -> SearchQuery:
    """The SearchRecords request of ``Patient/{id}/$everything`` (``_type``, ``_since``, ``_count``)."""
    grouped = _grouped(params)
    ignored = _unknown([n for n in grouped if n not in EVERYTHING_PARAMETERS | _RESULT_PARAMETERS | set(_INCLUDES)],
                       handle_lenient, _refused(None))
    revinclude, ignored_includes = includes_of(grouped, handle_lenient)
    request = records_pb2.SearchRecordsRequest(patient_id=patient_id_of(patient_id, "Patient.id"),
                                               purpose=purpose)  # type: ignore[arg-type]
    if "_type" in grouped:
        request.resource_types.extend(resource_types_of(grouped["_type"], known_types))
    if "_since" in grouped:
        request.updated_since_ms = _instant(_one(grouped["_since"], "_since"), "_since")[0]
    request.page_size = count_of(grouped["_count"]) if "_count" in grouped else DEFAULT_COUNT
    if PAGE_TOKEN in grouped:
        request.page_token = _one(grouped[PAGE_TOKEN], PAGE_TOKEN)
    return SearchQuery(request, _kept(params, EVERYTHING_PARAMETERS, revinclude),
                       sorted({*ignored, *ignored_includes}), revinclude)


def link(url: str, parameters: Sequence[tuple[str, str]]) -> str:
    """url with parameters as its query string (a self or next link)."""
    # FHIR's own separators stay literal (validators read _type=Condition,Observation, not %2C).
    query = urllib.parse.urlencode(parameters, safe=",|:/", quote_via=urllib.parse.quote)
    return f"{url}?{query}" if parameters else url


@dataclass
class SearchPage:
    """What one page of a search found: the permitted records read, and what was not included."""

    records: list[records_pb2.GetRecordResponse]
    withheld: int = 0
    large: int = 0
    next_page_token: str = ""


def searchset(base_url: str, url: str, query: SearchQuery, page: SearchPage) -> dict[str, Any]:
    """The ``searchset`` Bundle of one page (url: this search's URL without its query string); with
    ``_revinclude=Provenance:target`` each match's version Provenance follows the matches as an include."""
    entries = [match_entry(base_url, served_version(record)) for record in page.records]
    if query.revinclude_provenance:
        entries += [provenance_entry(base_url, record, "include") for record in page.records
                    if record.provenance_json]
    own = [*query.parameters, *([(PAGE_TOKEN, query.request.page_token)] if query.request.page_token else [])]
    links = [{"relation": "self", "url": link(url, own)}]
    if page.next_page_token:
        links.append({"relation": "next", "url": link(url, [*query.parameters, (PAGE_TOKEN, page.next_page_token)])})
    return bundle_of(entries, outcome_issues(page.withheld, page.large, query.ignored), links)


def match_entry(base_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    """A searchset entry (search mode match) of a resource as this server serves it (its id is the server's)."""
    return {"fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}", "resource": resource,
            "search": {"mode": "match"}}


def outcome_issues(withheld: int, large: int, ignored: Sequence[str]) -> list[dict[str, Any]]:
    """The issues of a searchset's outcome entry: how many were withheld (never which), large records left
    out, parameters ignored under lenient handling."""
    issues = []
    if withheld:
        issues.append({"severity": "information", "code": "suppressed",
                       "diagnostics": f"{withheld} matching record{'s were' if withheld != 1 else ' was'} "
                                      "withheld: not permitted to this client"})
    if large:
        issues.append({"severity": "information", "code": "too-costly",
                       "diagnostics": f"{large} large record{'s' if large != 1 else ''} left out: read "
                                      "with the CareChain SDK (GetRecordStream)"})
    if ignored:
        issues.append({"severity": "warning", "code": "not-supported",
                       "diagnostics": "ignored (Prefer: handling=lenient): " + ", ".join(ignored)})
    return issues


def bundle_of(entries: list[dict[str, Any]], issues: list[dict[str, Any]], links: list[dict[str, str]],
              total: int | None = None) -> dict[str, Any]:
    """A ``searchset`` Bundle of entries, an ``outcome`` entry when there are issues, and links."""
    if issues:
        entries = [*entries, {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                              "resource": {"resourceType": "OperationOutcome", "issue": issues},
                              "search": {"mode": "outcome"}}]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
                              **({"total": total} if total is not None else {}), "link": links}
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle
