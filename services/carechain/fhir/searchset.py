"""The search parameters the patient-facing routes (Consent, AuditEvent) share (docs/fhir.md); their Bundles are
:func:`carechain.fhir.search.bundle_of` with :func:`carechain.fhir.search.link` links, as every search's."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from carechain.core.fhir import fhir_time_range
from carechain.fhir.outcomes import FhirError
from carechain.fhir.patients import PATIENT_PREFIX

#: FHIR date search prefixes CareChain supports on ``date`` (R4 3.1.1.5.2), each on a value's range [start, end).
DATE_PREFIXES = ("ge", "gt", "le", "lt", "eq")
MAX_COUNT = 1000


def check_parameters(request: Request, supported: Iterable[str], resource_type: str) -> None:
    """400 naming the first search parameter this search does not support (never silently ignored)."""
    allowed = {*supported, "_format"}
    for name in request.query_params:
        if name not in allowed:
            raise FhirError(400, "not-supported", f"{name}: not a search parameter of {resource_type} here "
                            f"(supported: {', '.join(sorted(allowed - {'_format'}))})", name)


def patient_parameter(request: Request) -> str:
    """The pseudonym of ``patient=Patient/<pseudonym>`` (or a bare pseudonym); "" when absent."""
    values = request.query_params.getlist("patient")
    if len(values) > 1:
        raise FhirError(400, "invalid", "patient: give one patient", "patient")
    if not values:
        return ""
    patient = values[0].strip().removeprefix(PATIENT_PREFIX)
    if not patient or "/" in patient:
        raise FhirError(400, "value", "patient: a Patient/<pseudonym> reference", "patient")
    return patient


def count_parameter(request: Request) -> int:
    """``_count`` (0 when absent: the service's default page size); 400 unless 1..MAX_COUNT."""
    value = request.query_params.get("_count")
    if value is None:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
        raise FhirError(400, "value", f"_count: a whole number from 1 to {MAX_COUNT}", "_count")
    return int(value)


def date_parameters(request: Request) -> tuple[int, int]:
    """The [since_ms, until_ms) that every ``date`` parameter together allows (0: unbounded on that side)."""
    since, until = 0, 0
    for value in request.query_params.getlist("date"):
        prefix = value[:2] if value[:2] in DATE_PREFIXES else ""
        try:
            start, end = fhir_time_range(value[len(prefix):])
        except ValueError:
            raise FhirError(400, "value", "date: [ge|gt|le|lt|eq]<FHIR date or dateTime>, e.g. ge2026-01-01",
                            "date") from None
        low = {"ge": start, "gt": end, "eq": start, "": start}.get(prefix)
        high = {"le": end, "lt": start, "eq": end, "": end}.get(prefix)
        if low is not None:
            since = max(since, low)
        if high is not None:
            until = high if not until else min(until, high)
    if until and since >= until:
        raise FhirError(400, "value", "date: the parameters leave no time to search", "date")
    return since, until
