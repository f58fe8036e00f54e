"""FHIR R4 resource validation for the records gateway.

What is labelled is what is stored, so the bytes are read strictly before any
model sees them: UTF-8 without a byte order mark, JSON with no duplicate keys,
no NaN/Infinity, and nesting at most :data:`MAX_DEPTH` deep. Then the
``fhir.resources`` models (its R4B package: FHIR 4.3, the R4 technical
correction whose resources read R4 JSON unchanged) check the structure, and
this module checks what they do not: every required code binding (status,
gender, intent, ... of every element, :func:`_check_bindings`), a few base
invariants (ele-1 no empty values, att-1, per-1, txt-2 narrative), and that
the resource is about the record's patient (every R4 Patient-compartment type,
:data:`PATIENT_REFERENCE_FIELDS`).

Error messages name the field and the problem but never echo field values,
which may be PHI; no exception that carries a value is chained to them (so no
stack trace exported as a span event carries one either).
"""

from __future__ import annotations

import datetime
import functools
import json
import pathlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

from carechain.core.errors import InvalidArgument

FIELD = "resource_json"
# Deepest nesting of JSON objects and arrays accepted (a Questionnaire-style item tree of ~30 levels fits).
MAX_DEPTH = 64

# Where each resource type points at its patient: the element paths of the FHIR R4 Patient compartment
# definition (CompartmentDefinition/patient, the parameter that names the subject). A path with "[]"
# may hold several references (participants, targets): one must be the patient and none another patient.
PATIENT_REFERENCE_FIELDS: dict[str, str] = {
    "Account": "subject[]",
    "AdverseEvent": "subject",
    "AllergyIntolerance": "patient",
    "Appointment": "participant.actor[]",
    "AppointmentResponse": "actor",
    "Basic": "subject",
    "BodyStructure": "patient",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "ChargeItem": "subject",
    "Claim": "patient",
    "ClaimResponse": "patient",
    "ClinicalImpression": "subject",
    "Communication": "subject",
    "CommunicationRequest": "subject",
    "Composition": "subject",
    "Condition": "subject",
    "Consent": "patient",
    "Coverage": "beneficiary",
    "CoverageEligibilityRequest": "patient",
    "CoverageEligibilityResponse": "patient",
    "DetectedIssue": "patient",
    "Device": "patient",
    "DeviceRequest": "subject",
    "DeviceUseStatement": "subject",
    "DiagnosticReport": "subject",
    "DocumentManifest": "subject",
    "DocumentReference": "subject",
    "Encounter": "subject",
    "EnrollmentRequest": "candidate",
    "EpisodeOfCare": "patient",
    "ExplanationOfBenefit": "patient",
    "FamilyMemberHistory": "patient",
    "Flag": "subject",
    "Goal": "subject",
    "ImagingStudy": "subject",
    "Immunization": "patient",
    "ImmunizationEvaluation": "patient",
    "ImmunizationRecommendation": "patient",
    "Invoice": "subject",
    "List": "subject",
    "MeasureReport": "subject",
    "Media": "subject",
    "MedicationAdministration": "subject",
    "MedicationDispense": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MolecularSequence": "patient",
    "NutritionOrder": "patient",
    "Observation": "subject",
    "Procedure": "subject",
    "Provenance": "target[]",
    "QuestionnaireResponse": "subject",
    "RelatedPerson": "patient",
    "RequestGroup": "subject",
    "ResearchSubject": "individual",
    "RiskAssessment": "subject",
    "Schedule": "actor[]",
    "ServiceRequest": "subject",
    "Specimen": "subject",
    "SupplyDelivery": "patient",
    "SupplyRequest": "deliverTo",
    "VisionPrescription": "patient",
}

# Required bindings whose fhir.resources enum list ends in "+" (the spec lists the codes in a
# hierarchy): the full R4 value sets.
_FULL_VALUE_SETS: dict[tuple[str, str], frozenset[str]] = {
    **{(model, "status"): frozenset({
        "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"})
       for model in ("Observation", "DetectedIssue", "RiskAssessment")},
    ("DiagnosticReport", "status"): frozenset({
        "registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
        "entered-in-error", "unknown"}),
    **{(model, "status"): frozenset({
        "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error",
        "unknown"}) for model in ("Encounter", "EncounterStatusHistory")},
    ("DeviceUseStatement", "status"): frozenset({
        "active", "completed", "entered-in-error", "intended", "stopped", "on-hold"}),
    ("DeviceUdiCarrier", "entryType"): frozenset({"barcode", "rfid", "manual", "card", "self-reported", "unknown"}),
    ("SupplyRequest", "status"): frozenset({
        "draft", "active", "suspended", "cancelled", "completed", "entered-in-error", "unknown"}),
    ("Task", "status"): frozenset({
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
        "failed", "completed", "entered-in-error"}),
    ("QuestionnaireItem", "type"): frozenset({
        "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time", "string", "text", "url",
        "choice", "open-choice", "attachment", "reference", "quantity"}),
}
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
# pydantic error types, in words: messages are built from the location and the type only, never the input.
_ERROR_WORDS = {
    "missing": "is required", "extra_forbidden": "is not an element of this resource",
    "value_error": "is not a valid value", "assertion_error": "breaks a FHIR rule",
    "string_type": "must be a string", "list_type": "must be an array", "model_type": "must be an object",
    "dict_type": "must be an object", "bool_type": "must be true or false", "int_type": "must be an integer",
    "string_pattern_mismatch": "does not match the FHIR format", "string_too_short": "must not be empty",
    "decimal_type": "must be a number", "float_type": "must be a number",
}


@dataclass(frozen=True)
class ValidatedResource:
    """A resource that passed validation, with the parsed JSON kept for labelling."""

    resource_type: str
    content: dict[str, Any]


def _describe(error: ValidationError) -> str:
    """The first problem as "location: what is wrong", from pydantic's loc and type (never its input or msg)."""
    first = error.errors(include_input=False, include_url=False, include_context=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "__root__")
    kind = str(first.get("type", ""))
    return f"{location or 'resource'}: {_ERROR_WORDS.get(kind, 'is not valid (' + kind + ')')}"


_ALIAS = re.compile(r'alias="_?(\w+)"')


@functools.cache
def _element_names() -> frozenset[str]:
    """Every element name of every R4B model (JSON keys that are safe to name in an error).

    Read from the models' source (each element is declared with its JSON ``alias``) rather than by
    importing some 150 modules, which took tens of seconds on the first refused request.
    """
    import fhir.resources.R4B as package

    names = {"resourceType", "fhir_comments"}
    for source in pathlib.Path(package.__path__[0]).glob("*.py"):
        if not source.name.startswith(("fhirtypes", "tests")):
            names.update(_ALIAS.findall(source.read_text(encoding="utf-8")))
    return frozenset(names | {f"_{name}" for name in names})


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice would let the labeller and a reader see different values."""
    result = dict(pairs)
    if len(result) == len(pairs):  # no key twice (the common case, without a Python loop)
        return result
    result = {}
    for key, value in pairs:
        if key in result:
            name = f" {key!r}" if key in _element_names() else ""  # a FHIR element name, never free text
            raise InvalidArgument(FIELD, f"has a duplicate JSON key{name}: every key must appear once per object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidArgument(FIELD, f"has {name}, which is not JSON")


_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)
# Segments of a too-deep path shown at each end (the middle of a long chain is elided).
_PATH_ENDS = 6


def _model_named(name: str) -> type[BaseModel] | None:
    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError, ImportError):
        return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _element_model(model: type[BaseModel] | None, key: str) -> tuple[type[BaseModel] | None, bool]:
    """The model of element key of model (None when unknown or primitive), and whether key is an element of it.

    Walks the models along a path only, so naming a path never loads every FHIR model.
    """
    if model is None:
        return None, False
    info = next((i for n, i in model.model_fields.items() if (i.alias or n) == key), None)
    if info is None:
        return None, False
    type_name = re.search(r"(\w+)Type\b", str(info.annotation))
    return (_model_named(type_name.group(1)) if type_name else None), True


def _too_deep_path(text: str) -> str:
    """The element path (e.g. ``resource_json.extension[0].extension[0]``) of the first object or array
    nested deeper than MAX_DEPTH. A key that is not an element of the resource's model there is not
    echoed (it may be PHI)."""
    frames: list[list[Any]] = []  # per open container: [is_object, key or index]
    last_string = ""
    for token in _JSON_TOKEN.finditer(text):
        value = token.group()
        if value in "{[":
            if len(frames) == MAX_DEPTH:
                break
            frames.append([value == "{", None if value == "{" else 0])
        elif value in "}]":
            if frames:
                frames.pop()
        elif value == ":" and frames and frames[-1][0]:
            frames[-1][1] = last_string
        elif value == "," and frames and not frames[-1][0]:
            frames[-1][1] += 1
        else:
            last_string = value[1:-1] if value.startswith('"') else last_string
    named = re.search(r'"resourceType"\s*:\s*"([A-Za-z]{1,64})"', text)
    model = _model_named(named.group(1)) if named else None
    elements = [FIELD]  # one per object key, with the array indices that follow it
    for is_object, step in frames:
        if is_object and step is not None:
            model, known = _element_model(model, step)
            elements.append(step if known else "<key>")
        elif not is_object:
            elements[-1] += f"[{step}]"
    if len(elements) > 2 * _PATH_ENDS:
        return ".".join(elements[:_PATH_ENDS]) + "..." + ".".join(elements[-_PATH_ENDS:])
    return ".".join(elements)


def parse_json(raw: bytes) -> Any:
    """Strict JSON of a resource: UTF-8, no BOM, no duplicate keys, nesting at most MAX_DEPTH; else InvalidArgument."""
    if raw.startswith(_BOMS):
        raise InvalidArgument(FIELD, "starts with a byte order mark; send UTF-8 JSON without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(FIELD, f"is not UTF-8 (invalid byte at position {exc.start})") from None
    depth = deepest = 0
    # Fewer opening brackets than the limit (strings included) cannot nest deeper: no scan needed.
    if text.count("{") + text.count("[") > MAX_DEPTH:
        for bracket in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
            depth += 1 if bracket.group() in "[{" else -1
            deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise InvalidArgument(_too_deep_path(text), f"nests {deepest} levels of objects and arrays; the limit is "
                              f"{MAX_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        position = getattr(exc, "pos", 0)
        raise InvalidArgument(FIELD, f"is not valid JSON ({type(exc).__name__} at position {position})") from None


def validate_resource(raw: bytes, fhir_patient_id: str, max_bytes: int, pseudonym: str = "",
                      record_id: str = "") -> ValidatedResource:
    """Check raw is a valid FHIR R4 resource about the patient; InvalidArgument naming the problem.

    pseudonym: the patient's network id, which names the patient as well as its FHIR id does
    (``Patient/<pseudonym>``, the Patient's logical id on the FHIR REST gateway, docs/fhir.md).
    record_id: the record a new version amends (records' UpdateRecord); a Patient version may have it as
    its ``id``, the id the FHIR REST gateway serves the Patient record under (``PUT /Patient/<record id>``).
    """
    if not raw:
        raise InvalidArgument(FIELD, "is empty")
    if len(raw) > max_bytes:
        raise InvalidArgument(FIELD, f"is {len(raw)} bytes; the limit is {max_bytes}")
    content = parse_json(raw)
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
    if resource_type != "Patient" and resource_type not in PATIENT_REFERENCE_FIELDS:
        raise InvalidArgument(f"{FIELD}.resourceType", f"{resource_type} is not patient data")
    _check_no_empty_values(content, FIELD)
    try:
        instance = _model_instance(model, raw, content)
    except ValidationError as exc:
        problem = _describe(exc)  # built before the exception (which holds the input) is dropped
        raise InvalidArgument(FIELD, f"not a valid {resource_type}: {problem}") from None
    except (ValueError, TypeError, RecursionError):
        raise InvalidArgument(FIELD, f"not a valid {resource_type}") from None
    _check_bindings(instance, FIELD)
    _check_invariants(content, FIELD)
    _check_patient(resource_type, content, fhir_patient_id, pseudonym, record_id)
    return ValidatedResource(resource_type, content)


def _model_instance(model: type[BaseModel], raw: bytes, content: dict[str, Any]) -> BaseModel:
    """The model of the resource, validated from its bytes (pydantic's JSON mode: a third cheaper than from
    the parsed dict, with the same rules). The bytes already passed :func:`parse_json`, so JSON mode can
    only refuse what it reads differently from Python's json (a lone surrogate escape): that resource is
    judged on the parsed dict, exactly as before."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors(include_input=False, include_url=False, include_context=False)[0].get("type") != "json_invalid":
            raise
    return model.model_validate(content)


def _check_no_empty_values(node: Any, path: str, nulls_allowed: bool = False) -> None:
    """FHIR JSON ele-1: no empty object, array or string; null only in arrays paired with a ``_name`` array."""
    if isinstance(node, dict):
        if not node:
            raise InvalidArgument(path, "is an empty object (FHIR ele-1: leave the element out)")
        for key, value in node.items():
            if value is None:
                raise InvalidArgument(f"{path}.{key}", "is null (FHIR JSON: leave the element out)")
            # ["a", null] with "_given": [null, {...}] is how FHIR JSON keeps extensions of array items.
            paired = key.startswith("_") or f"_{key}" in node
            _check_no_empty_values(value, f"{path}.{key}", paired)
    elif isinstance(node, list):
        if not node:
            raise InvalidArgument(path, "is an empty array (FHIR ele-1: leave the element out)")
        for i, item in enumerate(node):
            if item is None and not nulls_allowed:
                raise InvalidArgument(f"{path}[{i}]", "is null")
            if item is not None:
                _check_no_empty_values(item, f"{path}[{i}]")
    elif node == "":
        raise InvalidArgument(path, "is an empty string (FHIR: a value must have content)")


@functools.cache
def _binding_fields(model: type[BaseModel]) -> tuple[tuple[str, str, frozenset[str] | None], ...]:
    """Per field of model: (attribute, JSON name, the codes of its required binding or None), worked out
    once per model class rather than on every instance."""
    fields = []
    for name, info in model.model_fields.items():
        element = info.alias or name
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        allowed = extra.get("enum_values")
        codes = None
        if allowed:
            codes = _FULL_VALUE_SETS.get((model.__name__.removesuffix("Type"), element))
            if codes is None and "+" not in allowed:
                codes = frozenset(allowed)
        fields.append((name, element, codes))
    return tuple(fields)


def _check_bindings(instance: BaseModel, path: str) -> None:
    """Every code element with a required binding holds a code of its value set (the models do not check)."""
    for name, element_name, codes in _binding_fields(type(instance)):
        value = getattr(instance, name, None)
        if value is None:
            continue
        element = f"{path}.{element_name}"
        values = value if isinstance(value, list) else [value]
        if codes is not None:
            for i, code in enumerate(values):
                if isinstance(code, str) and code not in codes:
                    where = f"{element}[{i}]" if isinstance(value, list) else element
                    raise InvalidArgument(where, "is not a code of its required value set")
        for i, child in enumerate(values):
            if isinstance(child, BaseModel):
                _check_bindings(child, f"{element}[{i}]" if isinstance(value, list) else element)


# --- base invariants ---------------------------------------------------------------
# The R4 constraints (StructureDefinition constraint, severity error) that the models leave out and that
# can be decided from the resource alone (none that needs resolve() or a terminology server). Each is
# checked on every element it is defined on, contained resources included; a rejection names the element
# and the invariant id, never a value.

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

# Required bindings of CodeableConcept elements (the models check none): a coding of the value set's
# system with one of its codes must be present.
_REQUIRED_CONCEPT_BINDINGS: dict[str, tuple[str, frozenset[str]]] = {
    "Condition.clinicalStatus": (CONDITION_CLINICAL, frozenset({
        "active", "recurrence", "relapse", "inactive", "remission", "resolved"})),
    "Condition.verificationStatus": (CONDITION_VERIFICATION, frozenset({
        "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"})),
    "AllergyIntolerance.clinicalStatus": (ALLERGY_CLINICAL, frozenset({"active", "inactive", "resolved"})),
    "AllergyIntolerance.verificationStatus": (ALLERGY_VERIFICATION, frozenset({
        "unconfirmed", "confirmed", "refuted", "entered-in-error"})),
}


def _has_code(concept: Any, system: str, codes: frozenset[str] | set[str]) -> bool:
    """Whether a CodeableConcept has a coding of system with one of codes."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == system and c.get("code") in codes for c in codings)


def _has_choice(node: dict[str, Any], name: str) -> bool:
    """Whether a choice element name[x] is present (as a value or as a primitive's extension)."""
    return any(key.lstrip("_").startswith(name) and key.lstrip("_")[len(name):][:1].isupper() for key in node)


def _period_in_order(node: dict[str, Any]) -> bool:
    start, end = node.get("start"), node.get("end")
    if not (isinstance(start, str) and isinstance(end, str)):
        return True
    try:
        return fhir_time_range(start)[0] <= fhir_time_range(end)[1]
    except ValueError:
        return True  # not dates (e.g. Sequence coordinates); the model checked their type


@dataclass(frozen=True)
class _Invariant:
    """One FHIR invariant: where the rejection points (relative to the element), and the rule in words."""

    id: str
    element: str  # ".end", ".clinicalStatus", ... or "" for the element itself
    rule: str
    holds: Callable[[dict[str, Any]], bool]


# Data-type invariants, checked on every JSON object of the data type's shape.
_EXTENSION = re.compile(r"\.(?:extension|modifierExtension)\[\d+\]$")
_DATATYPE_INVARIANTS: tuple[tuple[Callable[[dict[str, Any], str], bool], _Invariant], ...] = (
    (lambda node, path: isinstance(node.get("data"), str),
     _Invariant("att-1", ".contentType", "is required when an attachment has data",
                lambda node: "contentType" in node)),
    (lambda node, path: True,
     _Invariant("per-1", ".end", "is before start", _period_in_order)),
    (lambda node, path: isinstance(node.get("div"), str) and path.endswith(".text"),
     _Invariant("txt-1, txt-2", ".div", "must be an XHTML div element",
                lambda node: node["div"].lstrip().startswith("<div"))),
    (lambda node, path: _EXTENSION.search(path) is not None,
     _Invariant("ext-1", "", "must have either extensions or a value[x], not both",
                lambda node: ("extension" in node) != _has_choice(node, "value"))),
)

# Resource and backbone-element invariants, by element path.
_ELEMENT_INVARIANTS: dict[str, tuple[_Invariant, ...]] = {
    "AllergyIntolerance": (
        _Invariant("ait-1", ".clinicalStatus", "is required unless verificationStatus is entered-in-error",
                   lambda n: "clinicalStatus" in n or _has_code(
                       n.get("verificationStatus"), ALLERGY_VERIFICATION, {"entered-in-error"})),
        _Invariant("ait-2", ".clinicalStatus", "must be absent when verificationStatus is entered-in-error",
                   lambda n: "clinicalStatus" not in n or not _has_code(
                       n.get("verificationStatus"), ALLERGY_VERIFICATION, {"entered-in-error"})),
    ),
    "Appointment": (
        _Invariant("app-2", ".end", "must be given with start, and start with end",
                   lambda n: ("start" in n) == ("end" in n)),
        _Invariant("app-3", ".start", "and end are required unless the status is proposed, cancelled or waitlist",
                   lambda n: ("start" in n and "end" in n) or n.get("status") in ("proposed", "cancelled", "waitlist")),
        _Invariant("app-4", ".cancelationReason", "is only for a cancelled or no-show appointment",
                   lambda n: "cancelationReason" not in n or n.get("status") in ("noshow", "cancelled")),
    ),
    "Appointment.participant": (
        _Invariant("app-1", ".type", "or actor is required", lambda n: "type" in n or "actor" in n),
    ),
    "AppointmentResponse": (
        _Invariant("apr-1", ".participantType", "or actor is required",
                   lambda n: "participantType" in n or "actor" in n),
    ),
    "CarePlan.activity": (
        _Invariant("cpl-3", ".detail", "and reference must not both be given",
                   lambda n: "detail" not in n or "reference" not in n),
    ),
    "Composition.section": (
        _Invariant("cmp-1", "", "must have text, an entry or a sub-section",
                   lambda n: "text" in n or "entry" in n or "section" in n),
        _Invariant("cmp-2", ".emptyReason", "is only for a section without entries",
                   lambda n: "emptyReason" not in n or "entry" not in n),
    ),
    "Condition": (
        _Invariant("con-4", ".clinicalStatus", "must be inactive, resolved or remission when abatement is given",
                   lambda n: not _has_choice(n, "abatement") or _has_code(
                       n.get("clinicalStatus"), CONDITION_CLINICAL, {"inactive", "resolved", "remission"})),
        _Invariant("con-5", ".clinicalStatus", "must be absent when verificationStatus is entered-in-error",
                   lambda n: "clinicalStatus" not in n or not _has_code(
                       n.get("verificationStatus"), CONDITION_VERIFICATION, {"entered-in-error"})),
    ),
    "Consent": (
        _Invariant("ppc-1", ".policyRule", "or policy is required", lambda n: "policy" in n or "policyRule" in n),
    ),
    "List": (
        _Invariant("lst-1", ".emptyReason", "is only for a list without entries",
                   lambda n: "emptyReason" not in n or "entry" not in n),
        _Invariant("lst-2", ".entry", "may be marked deleted only when the mode is changes",
                   lambda n: n.get("mode") == "changes" or not any(
                       isinstance(e, dict) and "deleted" in e for e in n.get("entry", []))),
        _Invariant("lst-3", ".entry", "may have a date only when the mode is working",
                   lambda n: n.get("mode") == "working" or not any(
                       isinstance(e, dict) and "date" in e for e in n.get("entry", []))),
    ),
    "MedicationAdministration.dosage": (
        _Invariant("mad-1", ".dose", "or rate[x] is required", lambda n: "dose" in n or _has_choice(n, "rate")),
    ),
    "Observation": (
        _Invariant("obs-6", ".dataAbsentReason", "must be absent when value[x] is given",
                   lambda n: "dataAbsentReason" not in n or not _has_choice(n, "value")),
        _Invariant("obs-7", ".component", "must not repeat the observation's code when value[x] is given",
                   lambda n: not _has_choice(n, "value") or not any(
                       isinstance(component, dict) and isinstance(component.get("code"), dict)
                       and any(coding in (n.get("code") or {}).get("coding", [])
                               for coding in component["code"].get("coding", []))
                       for component in n.get("component", []))),
    ),
    "Observation.referenceRange": (
        _Invariant("obs-3", ".low", "high or text is required", lambda n: "low" in n or "high" in n or "text" in n),
    ),
    "Patient.contact": (
        _Invariant("pat-1", "", "must have a name, telecom, address or organization",
                   lambda n: any(key in n for key in ("name", "telecom", "address", "organization"))),
    ),
    "QuestionnaireResponse.item": (
        _Invariant("qrs-1", ".item", "must not be given beside answer (nest it in the answer)",
                   lambda n: "answer" not in n or "item" not in n),
    ),
}


def _check_invariants(node: Any, path: str, element: str = "") -> None:
    """The base invariants (:data:`_DATATYPE_INVARIANTS`, :data:`_ELEMENT_INVARIANTS`) and the required
    CodeableConcept bindings of a tree; path is the JSON path, element the FHIR element path."""
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            element = node["resourceType"]  # the resource, or a contained one
        checks = [invariant for applies, invariant in _DATATYPE_INVARIANTS if applies(node, path)]
        for invariant in (*checks, *_ELEMENT_INVARIANTS.get(element, ())):
            if not invariant.holds(node):
                raise InvalidArgument(f"{path}{invariant.element}", f"{invariant.rule} (FHIR {invariant.id})")
        binding = _REQUIRED_CONCEPT_BINDINGS.get(element)
        if binding is not None and not _has_code(node, *binding):
            raise InvalidArgument(path, "is not a code of its required value set")
        for key, value in node.items():
            _check_invariants(value, f"{path}.{key}", f"{element}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_invariants(item, f"{path}[{i}]", element)


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every (path, Reference.reference) in a tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield f"{path}.reference", value
            else:
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _references(item, f"{path}[{i}]")


def _at(node: Any, steps: list[str]) -> Iterator[Any]:
    """The values at a dotted element path, through arrays."""
    if isinstance(node, list):
        for item in node:
            yield from _at(item, steps)
    elif not steps:
        yield node
    elif isinstance(node, dict) and steps[0] in node:
        yield from _at(node[steps[0]], steps[1:])


def _check_patient(resource_type: str, content: dict[str, Any], fhir_patient_id: str, pseudonym: str = "",
                   record_id: str = "") -> None:
    """The resource must be about this patient, and name no other patient anywhere.

    A Patient's id is the patient's (its FHIR id or pseudonym) or, for a new version, the id of the record it
    amends: the ledger says that record is this patient's, so that id too names no other patient.
    """
    own = (f"Patient/{fhir_patient_id}", f"urn:uuid:{fhir_patient_id}", f"Patient/{pseudonym or fhir_patient_id}")
    for where, target in _references(content, FIELD):
        if target.startswith("Patient/") and target not in own:
            raise InvalidArgument(where, "references another patient than the record's")
    if resource_type == "Patient":
        if content.get("id") not in (fhir_patient_id, pseudonym or fhir_patient_id, record_id or fhir_patient_id):
            raise InvalidArgument(f"{FIELD}.id", "does not match the patient's FHIR id")
        return
    spec = PATIENT_REFERENCE_FIELDS[resource_type]
    field = spec.removesuffix("[]")
    targets = [
        ref.get("reference") for ref in _at(content, field.split(".")) if isinstance(ref, dict)
    ]
    targets = [t for t in targets if isinstance(t, str) and t]
    if not targets:
        raise InvalidArgument(f"{FIELD}.{field}.reference", "missing patient reference")
    if spec.endswith("[]"):
        if not any(t in own for t in targets):
            raise InvalidArgument(f"{FIELD}.{field}.reference", "does not reference the record's patient")
    elif any(t not in own for t in targets):
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
