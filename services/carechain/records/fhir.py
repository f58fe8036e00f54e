"""FHIR R4 resource validation for the records gateway.

Resources are validated with the ``fhir.resources`` models (its R4B package: FHIR
4.3, the R4 technical correction whose resources read R4 JSON unchanged). Error
messages name the field and the problem but never echo field values, which may
be PHI.
"""

from __future__ import annotations

import json
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
