"""FHIR R4 resource validation for the records gateway.

Resources are validated with the ``fhir.resources`` models (its R4B package: FHIR
4.3, the R4 technical correction whose resources read R4 JSON unchanged). Error
messages name the field and the problem but never echo field values, which may
be PHI.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from carechain.errors import InvalidArgument

FIELD = "resource_json"

# Where each resource type points at its patient (FHIR R4 compartment definition, Patient).
PATIENT_REFERENCE_FIELDS: dict[str, str] = {
    "AllergyIntolerance": "patient",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "Claim": "patient",
    "Condition": "subject",
    "Consent": "patient",
    "Coverage": "beneficiary",
    "Device": "patient",
    "DiagnosticReport": "subject",
    "DocumentReference": "subject",
    "Encounter": "subject",
    "ExplanationOfBenefit": "patient",
    "FamilyMemberHistory": "patient",
    "Goal": "subject",
    "ImagingStudy": "subject",
    "Immunization": "patient",
    "MedicationAdministration": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "Observation": "subject",
    "Procedure": "subject",
    "QuestionnaireResponse": "subject",
    "ServiceRequest": "subject",
    "Specimen": "subject",
}


@dataclass(frozen=True)
class ValidatedResource:
    """A resource that passed validation, with the parsed JSON kept for labelling."""

    resource_type: str
    content: dict[str, Any]


def _describe(error: ValidationError) -> str:
    first = error.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "__root__")
    return f"{location or 'resource'}: {first.get('msg', 'invalid')}"


def validate_resource(raw: bytes, fhir_patient_id: str, max_bytes: int) -> ValidatedResource:
    """Check raw is a valid FHIR R4 resource about the patient; InvalidArgument naming the problem."""
    if not raw:
        raise InvalidArgument(FIELD, "is empty")
    if len(raw) > max_bytes:
        raise InvalidArgument(FIELD, f"is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        content = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        position = getattr(exc, "pos", 0)
        raise InvalidArgument(FIELD, f"is not valid JSON ({type(exc).__name__} at position {position})") from exc
    if not isinstance(content, dict):
        raise InvalidArgument(FIELD, "must be a JSON object")
    resource_type = content.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidArgument(f"{FIELD}.resourceType", "is missing")
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        model = None
    # Data types (Coding, HumanName, ...) are models too, but not resources.
    if model is None or not issubclass(model, Resource) or resource_type in ("Bundle", "Parameters", "Binary"):
        raise InvalidArgument(
            f"{FIELD}.resourceType", f"unknown or unsupported FHIR R4 resource type {resource_type!r}"
        )
    try:
        model.model_validate(content)
    except ValidationError as exc:
        raise InvalidArgument(FIELD, f"not a valid {resource_type}: {_describe(exc)}") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(FIELD, f"not a valid {resource_type}") from exc
    _check_patient(resource_type, content, fhir_patient_id)
    return ValidatedResource(resource_type, content)


def _check_patient(resource_type: str, content: dict[str, Any], fhir_patient_id: str) -> None:
    """The resource must be about this patient."""
    if resource_type == "Patient":
        if content.get("id") != fhir_patient_id:
            raise InvalidArgument(f"{FIELD}.id", "does not match the patient's FHIR id")
        return
    field = PATIENT_REFERENCE_FIELDS.get(resource_type)
    if field is None:
        raise InvalidArgument(f"{FIELD}.resourceType", f"{resource_type} is not patient data")
    reference = content.get(field)
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str) or not target:
        raise InvalidArgument(f"{FIELD}.{field}.reference", "missing patient reference")
    if target not in (f"Patient/{fhir_patient_id}", f"urn:uuid:{fhir_patient_id}"):
        raise InvalidArgument(f"{FIELD}.{field}.reference", "does not reference the record's patient")


# --- clinical dates ---------------------------------------------------------------

DAY_MS = 86_400_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DATE_TIME = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def fhir_time_range(value: str) -> tuple[int, int]:
    """The instants a FHIR date/dateTime/instant covers, as [start_ms, end_ms) in Unix ms.

    FHIR values have a precision: "2023" covers the whole year, "2023-05-02"
    the whole day, "2023-05-02T10:00:00Z" one second. A date without a time
    is taken as UTC (FHIR leaves its time zone open). Raises ValueError when
    value is not a FHIR date, dateTime or instant.
    """
    match = _DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError("not a FHIR date or dateTime")
    g = match.groupdict()
    year, month, day = int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1)
    hour, minute, second = int(g["h"] or 0), int(g["mi"] or 0), int(g["s"] or 0)
    fraction = g["f"] or ""
    start = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        start -= sign * datetime.timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6]))
    millis = int((fraction + "000")[:3]) if fraction else 0
    start_ms = (start - _EPOCH) // datetime.timedelta(milliseconds=1) + millis
    if g["mo"] is None:
        end = start.replace(year=year + 1)
    elif g["d"] is None:
        end = start.replace(year=year + month // 12, month=month % 12 + 1)
    elif g["h"] is None:
        end = start + datetime.timedelta(days=1)
    elif g["s"] is None:
        end = start + datetime.timedelta(minutes=1)
    else:
        return start_ms, start_ms + (10 ** (3 - len(fraction)) if 0 < len(fraction) < 3 else 1 if fraction else 1000)
    return start_ms, (end - _EPOCH) // datetime.timedelta(milliseconds=1)


def fhir_date_ms(ms: int, *, end: bool = False) -> str:
    """A FHIR date or dateTime for a Unix ms instant, the inverse of :func:`fhir_time_range`.

    With end=True, ms is an exclusive end and the value returned is the
    inclusive FHIR end that covers up to it (a UTC-midnight end becomes the
    previous day's date). Day-aligned values are written as dates.
    """
    if end:
        if ms % DAY_MS == 0:
            return (_EPOCH + datetime.timedelta(milliseconds=ms - DAY_MS)).strftime("%Y-%m-%d")
        step = 1000 if ms % 1000 == 0 else 1
        ms -= step
    else:
        if ms % DAY_MS == 0:
            return (_EPOCH + datetime.timedelta(milliseconds=ms)).strftime("%Y-%m-%d")
        step = 1000 if ms % 1000 == 0 else 1
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)
    if step == 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# Where each resource type keeps the clinical date of its content, first match wins.
CLINICAL_DATE_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "AllergyIntolerance": (("onsetDateTime",), ("onsetPeriod", "start"), ("recordedDate",)),
    "CarePlan": (("period", "start"), ("created",)),
    "CareTeam": (("period", "start"),),
    "Claim": (("billablePeriod", "start"), ("created",)),
    "Condition": (("onsetDateTime",), ("onsetPeriod", "start"), ("recordedDate",)),
    "Consent": (("dateTime",),),
    "Coverage": (("period", "start"),),
    "DiagnosticReport": (("effectiveDateTime",), ("effectivePeriod", "start"), ("issued",)),
    "DocumentReference": (("context", "period", "start"), ("date",)),
    "Encounter": (("period", "start"),),
    "ExplanationOfBenefit": (("billablePeriod", "start"), ("created",)),
    "FamilyMemberHistory": (("date",),),
    "Goal": (("startDate",),),
    "ImagingStudy": (("started",),),
    "Immunization": (("occurrenceDateTime",), ("recorded",)),
    "MedicationAdministration": (("effectiveDateTime",), ("effectivePeriod", "start")),
    "MedicationRequest": (("authoredOn",),),
    "MedicationStatement": (("effectiveDateTime",), ("effectivePeriod", "start"), ("dateAsserted",)),
    "Observation": (("effectiveDateTime",), ("effectivePeriod", "start"), ("effectiveInstant",), ("issued",)),
    "Procedure": (("performedDateTime",), ("performedPeriod", "start")),
    "QuestionnaireResponse": (("authored",),),
    "ServiceRequest": (("occurrenceDateTime",), ("occurrencePeriod", "start"), ("authoredOn",)),
    "Specimen": (("collection", "collectedDateTime"), ("receivedTime",)),
}


def clinical_date_ms(resource: dict[str, Any]) -> int:
    """The clinical date of a resource's content at day precision (Unix ms of the UTC day), 0 when it has none.

    Only the day goes on the ledger: a consent's data period needs no more,
    and a day says less about a patient than a time would (docs/consent.md).
    """
    for path in CLINICAL_DATE_FIELDS.get(str(resource.get("resourceType", "")), ()):
        node: Any = resource
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            try:
                start_ms, _ = fhir_time_range(node)
            except ValueError:
                continue
            day = start_ms - start_ms % DAY_MS
            return day if day != 0 else 1  # 0 means "no date"; 1970-01-01 keeps its day
    return 0
