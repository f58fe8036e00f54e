"""Issue 10: PutRecord input must be really valid R4, and what is labelled is what is stored."""

from __future__ import annotations

import json
import traceback

import pytest

from carechain.core.errors import InvalidArgument
from carechain.core.fhir import MAX_DEPTH, PATIENT_REFERENCE_FIELDS, validate_resource
from carechain.labels import sensitivity

PATIENT = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
OTHER = "99999999-8d06-89de-ad63-0204a93e76c3"
LIMIT = 256 * 1024
ME = {"reference": f"Patient/{PATIENT}"}
SOMEONE_ELSE = {"reference": f"Patient/{OTHER}"}
CODE = {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}


def _refused(raw: bytes, field: str, why: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate_resource(raw, PATIENT, LIMIT)
    assert caught.value.field == field, str(caught.value)
    assert why in str(caught.value)
    return caught.value


def _observation(**fields) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": CODE, "subject": ME, **fields}


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (_observation(status="bogus"), "resource_json.status"),
        ({"resourceType": "Patient", "id": PATIENT, "gender": "martian"}, "resource_json.gender"),
        ({"resourceType": "MedicationRequest", "status": "active", "intent": "wish", "subject": ME,
          "medicationCodeableConcept": CODE}, "resource_json.intent"),
        ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": ME,
          "statusHistory": [{"status": "sleeping", "period": {"start": "2020-01-01"}}]},
         "resource_json.statusHistory[0].status"),
        ({"resourceType": "DiagnosticReport", "status": "maybe", "code": CODE, "subject": ME},
         "resource_json.status"),
        (_observation(text={"status": "made-up", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}),
         "resource_json.text.status"),
    ],
)
def test_required_code_bindings_are_checked(resource: dict, field: str) -> None:
    _refused(json.dumps(resource).encode(), field, "required value set")


def test_every_observation_status_of_r4_is_accepted() -> None:
    for status in ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
                   "unknown"):
        validate_resource(json.dumps(_observation(status=status)).encode(), PATIENT, LIMIT)


@pytest.mark.parametrize(
    ("resource", "field", "why"),
    [
        (_observation(valueString=""), "resource_json.valueString", "empty string"),
        (_observation(note=[]), "resource_json.note", "empty array"),
        (_observation(effectivePeriod={"start": "2021-02-01", "end": "2020-01-01"}),
         "resource_json.effectivePeriod.end", "per-1"),
        ({"resourceType": "DocumentReference", "status": "current", "subject": ME,
          "content": [{"attachment": {"data": "aGVsbG8="}}]}, "resource_json.content[0].attachment.contentType",
         "att-1"),
        (_observation(text={"status": "generated", "div": "plain text"}), "resource_json.text.div", "XHTML"),
    ],
)
def test_base_invariants_the_models_leave_out(resource: dict, field: str, why: str) -> None:
    _refused(json.dumps(resource).encode(), field, why)


def test_duplicate_key_cannot_hide_a_psychiatric_code() -> None:
    # json.loads would keep the last value: labelled NORMAL, yet a reader keeping the first sees F32.9.
    raw = (b'{"resourceType": "Condition", "subject": {"reference": "Patient/' + PATIENT.encode() + b'"},'
           b' "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.9"}]},'
           b' "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}}')
    _refused(raw, "resource_json", "duplicate JSON key 'code'")


def test_duplicate_subject_naming_another_patient_first_is_refused() -> None:
    raw = (b'{"resourceType": "Condition", "code": {"text": "x"},'
           b' "subject": {"reference": "Patient/' + OTHER.encode() + b'"},'
           b' "subject": {"reference": "Patient/' + PATIENT.encode() + b'"}}')
    _refused(raw, "resource_json", "duplicate JSON key 'subject'")


def test_a_byte_order_mark_is_refused() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(_observation()).encode()
    _refused(raw, "resource_json", "byte order mark")
    _refused(json.dumps(_observation()).encode("utf-16"), "resource_json", "byte order mark")


def test_latin_1_is_refused() -> None:
    raw = json.dumps(_observation(valueString="café"), ensure_ascii=False).encode("latin-1")
    error = _refused(raw, "resource_json", "not UTF-8")
    assert "caf" not in str(error)


def test_nesting_deeper_than_the_limit_is_invalid_argument_naming_the_element() -> None:
    deep = {"resourceType": "Observation"}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["extension"] = [{"url": "http://x"}]
        node = node["extension"][0]
    # The error names the element path where the limit is crossed (its long middle elided).
    error = _refused(json.dumps(deep).encode(), "resource_json.extension[0].extension[0].extension[0]"
                     ".extension[0].extension[0]...extension[0].extension[0].extension[0].extension[0]"
                     ".extension[0].extension[0]", f"the limit is {MAX_DEPTH}")
    assert f"nests {2 * (MAX_DEPTH + 5) + 1} levels" in str(error)
    # far deeper than the parser's recursion limit
    _refused(b"[" * 100_000 + b"]" * 100_000, "resource_json" + "[0]" * MAX_DEPTH, f"the limit is {MAX_DEPTH}")
    # a key that is not a FHIR element name is not echoed (free text may be PHI)
    secret = {"resourceType": "Observation", "Jane Doe": [[[[["x"]]]]]}
    node = secret["Jane Doe"][0][0][0][0]
    for _ in range(MAX_DEPTH):
        node.append([])
        node = node[-1]
    error = _refused(json.dumps(secret).encode(), "resource_json.<key>" + "[0]" * 4 + "[1]" + "[0]" * 58,
                     "the limit is")
    assert "Jane" not in str(error)
    # brackets inside strings do not count
    validate_resource(json.dumps(_observation(valueString="[" * 200)).encode(), PATIENT, LIMIT)


def test_valid_resources_nested_close_to_the_limit_are_accepted() -> None:
    extension = {"url": "http://example.org/leaf", "valueString": "leaf"}
    for _ in range((MAX_DEPTH - 2) // 2 - 1):  # 30 nested extensions: 63 levels with the resource
        extension = {"url": "http://example.org/branch", "extension": [extension]}
    assert validate_resource(json.dumps(_observation(extension=[extension])).encode(), PATIENT, LIMIT)


def test_nan_is_refused() -> None:
    _refused(b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}', "resource_json", "NaN")


# One minimal valid R4 instance per Patient-compartment type CareChain did not accept before.
COMPARTMENT_EXAMPLES = {
    "Provenance": {"target": [{"reference": "Observation/1"}, ME], "recorded": "2020-01-01T00:00:00Z",
                   "agent": [{"who": {"reference": "Practitioner/1"}}]},
    "SupplyDelivery": {"status": "completed", "patient": ME},
    "MedicationDispense": {"status": "completed", "subject": ME, "medicationCodeableConcept": CODE},
    "Flag": {"status": "active", "code": CODE, "subject": ME},
    "EpisodeOfCare": {"status": "active", "patient": ME},
    "RiskAssessment": {"status": "final", "subject": ME},
    "Appointment": {"status": "booked", "start": "2020-01-01T09:00:00Z", "end": "2020-01-01T09:30:00Z",
                    "participant": [{"actor": {"reference": "Practitioner/1"}, "status": "accepted"},
                                    {"actor": ME, "status": "accepted"}]},
    "Communication": {"status": "completed", "subject": ME},
    "NutritionOrder": {"status": "active", "intent": "order", "patient": ME, "dateTime": "2020-01-01"},
    "DetectedIssue": {"status": "final", "patient": ME},
}


@pytest.mark.parametrize("resource_type", sorted(COMPARTMENT_EXAMPLES))
def test_patient_compartment_types_are_accepted_with_their_patient_checked(resource_type: str) -> None:
    resource = {"resourceType": resource_type, **COMPARTMENT_EXAMPLES[resource_type]}
    assert validate_resource(json.dumps(resource).encode(), PATIENT, LIMIT).resource_type == resource_type
    field = PATIENT_REFERENCE_FIELDS[resource_type].removesuffix("[]")
    swapped = json.loads(json.dumps(resource).replace(PATIENT, OTHER))
    with pytest.raises(InvalidArgument) as caught:
        validate_resource(json.dumps(swapped).encode(), PATIENT, LIMIT)
    assert "patient" in str(caught.value)
    assert caught.value.field.startswith("resource_json." + field.split(".")[0])


def test_the_whole_r4_patient_compartment_is_listed() -> None:
    for resource_type in ("Account", "AdverseEvent", "BodyStructure", "ChargeItem", "ClaimResponse",
                          "ClinicalImpression", "Composition", "DeviceRequest", "DeviceUseStatement",
                          "DocumentManifest", "ImmunizationEvaluation", "ImmunizationRecommendation", "Invoice",
                          "List", "MeasureReport", "Media", "MolecularSequence", "RelatedPerson", "RequestGroup",
                          "ResearchSubject", "Schedule", "SupplyRequest", "VisionPrescription"):
        assert resource_type in PATIENT_REFERENCE_FIELDS


def test_no_other_patient_anywhere_in_the_resource() -> None:
    resource = _observation(performer=[SOMEONE_ELSE])
    _refused(json.dumps(resource).encode(), "resource_json.performer[0].reference", "another patient")


def test_errors_name_no_rejected_value() -> None:
    for resource in (_observation(status="SECRET-DIAGNOSIS"), _observation(effectiveDateTime="SECRET-DIAGNOSIS"),
                     _observation(valueQuantity={"value": "SECRET-DIAGNOSIS"})):
        with pytest.raises(InvalidArgument) as caught:
            validate_resource(json.dumps(resource).encode(), PATIENT, LIMIT)
        assert "SECRET" not in str(caught.value)
        # nothing chained that a traceback (or a span event's stack trace) would print
        assert "SECRET" not in "".join(traceback.format_exception(caught.value))


def test_what_is_labelled_is_what_is_stored() -> None:
    raw = json.dumps({"resourceType": "Condition", "subject": ME,
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.9"}]}}).encode()
    validated = validate_resource(raw, PATIENT, LIMIT)
    assert validated.content == json.loads(raw)
    assert sensitivity.categorize(validated.content) == [sensitivity.MENTAL_HEALTH]


def test_a_duplicate_key_that_is_not_an_element_name_is_not_echoed() -> None:
    raw = b'{"resourceType": "Observation", "John Smith HIV": 1, "John Smith HIV": 2}'
    error = _refused(raw, "resource_json", "duplicate JSON key")
    assert "John" not in str(error)


def test_nulls_paired_with_primitive_extensions_are_valid_fhir_json() -> None:
    patient = {"resourceType": "Patient", "id": PATIENT, "name": [{
        "given": ["Ann", None], "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}]}
    validate_resource(json.dumps(patient).encode(), PATIENT, LIMIT)
    unpaired = {"resourceType": "Patient", "id": PATIENT, "name": [{"given": ["Ann", None]}]}
    _refused(json.dumps(unpaired).encode(), "resource_json.name[0].given[1]", "null")


# --- R4 base invariants: each a broken resource and a valid control that differs in the one element --------

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
START, END = "2020-01-01T09:00:00Z", "2020-01-01T09:30:00Z"


def _coded(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def _condition(**fields) -> dict:
    return {"resourceType": "Condition", "subject": ME, "code": CODE, **fields}


def _allergy(**fields) -> dict:
    return {"resourceType": "AllergyIntolerance", "patient": ME, "code": CODE, **fields}


def _patient(**fields) -> dict:
    return {"resourceType": "Patient", "id": PATIENT, **fields}


def _appointment(**fields) -> dict:
    return {"resourceType": "Appointment", "status": "booked", "start": START, "end": END,
            "participant": [{"actor": ME, "status": "accepted"}], **fields}


_ACTIVE, _RESOLVED = _coded(CLINICAL, "active"), _coded(CLINICAL, "resolved")
_IN_ERROR, _CONFIRMED = _coded(VERIFICATION, "entered-in-error"), _coded(VERIFICATION, "confirmed")
_ALLERGY_IN_ERROR = _coded(ALLERGY_VERIFICATION, "entered-in-error")
_ALLERGY_ACTIVE = _coded(ALLERGY_CLINICAL, "active")
_HEART_RATE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
_DATA_ABSENT = _coded("http://terminology.hl7.org/CodeSystem/data-absent-reason", "unknown")
_EXTENSION_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"  # a simple extension: a value
_COMPLEX_URL = "https://carechain.dev/fhir/StructureDefinition/example"  # no definition: extensions allowed
_CARE_PLAN_ACTIVITY = {"reference": {"reference": "ServiceRequest/1"}, "detail": {"status": "scheduled"}}

INVARIANT_CASES = [
    # (invariant, invalid resource, field of the rejection, valid control)
    ("con-4", _condition(clinicalStatus=_ACTIVE, abatementDateTime="2020-01-01"), "resource_json.clinicalStatus",
     _condition(clinicalStatus=_RESOLVED, abatementDateTime="2020-01-01")),
    ("con-4", _condition(abatementString="in childhood"), "resource_json.clinicalStatus",
     _condition(clinicalStatus=_coded(CLINICAL, "remission"), abatementString="in childhood")),
    ("con-5", _condition(clinicalStatus=_ACTIVE, verificationStatus=_IN_ERROR), "resource_json.clinicalStatus",
     _condition(verificationStatus=_IN_ERROR)),
    ("ait-1", _allergy(verificationStatus=_coded(ALLERGY_VERIFICATION, "confirmed")), "resource_json.clinicalStatus",
     _allergy(clinicalStatus=_ALLERGY_ACTIVE, verificationStatus=_coded(ALLERGY_VERIFICATION, "confirmed"))),
    ("ait-2", _allergy(clinicalStatus=_ALLERGY_ACTIVE, verificationStatus=_ALLERGY_IN_ERROR),
     "resource_json.clinicalStatus", _allergy(verificationStatus=_ALLERGY_IN_ERROR)),
    ("obs-6", _observation(valueString="x", dataAbsentReason=_DATA_ABSENT), "resource_json.dataAbsentReason",
     _observation(dataAbsentReason=_DATA_ABSENT)),
    ("obs-7", _observation(code=_HEART_RATE, valueString="x", component=[{"code": _HEART_RATE, "valueString": "y"}]),
     "resource_json.component", _observation(code=_HEART_RATE, component=[{"code": _HEART_RATE, "valueString": "y"}])),
    ("obs-3", _observation(referenceRange=[{"type": CODE}]), "resource_json.referenceRange[0].low",
     _observation(referenceRange=[{"text": "normal"}])),
    ("pat-1", _patient(contact=[{"relationship": [_coded("http://terminology.hl7.org/CodeSystem/v2-0131", "N")]}]),
     "resource_json.contact[0]", _patient(contact=[{"name": {"family": "Doe"}}])),
    ("ext-1", _patient(extension=[{"url": _EXTENSION_URL}]), "resource_json.extension[0]",
     _patient(extension=[{"url": _EXTENSION_URL, "valueAddress": {"city": "Boston"}}])),
    ("ext-1", _patient(extension=[{"url": _COMPLEX_URL, "valueAddress": {"city": "Boston"},
                                   "extension": [{"url": "x", "valueString": "y"}]}]), "resource_json.extension[0]",
     _patient(extension=[{"url": _COMPLEX_URL, "extension": [{"url": "x", "valueString": "y"}]}])),
    ("app-1", _appointment(participant=[{"status": "accepted"}, {"actor": ME, "status": "accepted"}]),
     "resource_json.participant[0].type", _appointment()),
    ("app-2", _appointment(end=None), "resource_json.end", _appointment(status="proposed", start=None, end=None)),
    ("app-3", _appointment(start=None, end=None), "resource_json.start",
     _appointment(status="waitlist", start=None, end=None)),
    ("app-4", _appointment(cancelationReason=CODE), "resource_json.cancelationReason",
     _appointment(status="cancelled", cancelationReason=CODE)),
    ("cpl-3", {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": ME,
               "activity": [_CARE_PLAN_ACTIVITY]}, "resource_json.activity[0].detail",
     {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": ME,
      "activity": [{"detail": {"status": "scheduled"}}]}),
    ("lst-1", {"resourceType": "List", "status": "current", "mode": "snapshot", "subject": ME, "emptyReason": CODE,
               "entry": [{"item": {"reference": "Observation/1"}}]}, "resource_json.emptyReason",
     {"resourceType": "List", "status": "current", "mode": "snapshot", "subject": ME, "emptyReason": CODE}),
    ("lst-2", {"resourceType": "List", "status": "current", "mode": "snapshot", "subject": ME,
               "entry": [{"deleted": True, "item": {"reference": "Observation/1"}}]}, "resource_json.entry",
     {"resourceType": "List", "status": "current", "mode": "changes", "subject": ME,
      "entry": [{"deleted": True, "item": {"reference": "Observation/1"}}]}),
    ("lst-3", {"resourceType": "List", "status": "current", "mode": "snapshot", "subject": ME,
               "entry": [{"date": "2020-01-01", "item": {"reference": "Observation/1"}}]}, "resource_json.entry",
     {"resourceType": "List", "status": "current", "mode": "working", "subject": ME,
      "entry": [{"date": "2020-01-01", "item": {"reference": "Observation/1"}}]}),
    ("mad-1", {"resourceType": "MedicationAdministration", "status": "completed", "subject": ME,
               "medicationCodeableConcept": CODE, "effectiveDateTime": "2020-01-01", "dosage": {"text": "once"}},
     "resource_json.dosage.dose",
     {"resourceType": "MedicationAdministration", "status": "completed", "subject": ME,
      "medicationCodeableConcept": CODE, "effectiveDateTime": "2020-01-01",
      "dosage": {"text": "once", "dose": {"value": 1}}}),
    ("qrs-1", {"resourceType": "QuestionnaireResponse", "status": "completed", "subject": ME,
               "item": [{"linkId": "1", "answer": [{"valueString": "a"}], "item": [{"linkId": "1.1"}]}]},
     "resource_json.item[0].item",
     {"resourceType": "QuestionnaireResponse", "status": "completed", "subject": ME,
      "item": [{"linkId": "1", "answer": [{"valueString": "a", "item": [{"linkId": "1.1"}]}]}]}),
    ("cmp-1", {"resourceType": "Composition", "status": "final", "type": CODE, "subject": ME, "date": "2020-01-01",
               "author": [{"reference": "Practitioner/1"}], "title": "t", "section": [{"title": "s"}]},
     "resource_json.section[0]",
     {"resourceType": "Composition", "status": "final", "type": CODE, "subject": ME, "date": "2020-01-01",
      "author": [{"reference": "Practitioner/1"}], "title": "t",
      "section": [{"title": "s", "entry": [{"reference": "Observation/1"}]}]}),
    ("ppc-1", {"resourceType": "Consent", "status": "active", "patient": ME, "category": [CODE],
               "scope": _coded("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")},
     "resource_json.policyRule",
     {"resourceType": "Consent", "status": "active", "patient": ME, "category": [CODE],
      "scope": _coded("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
      "policyRule": _coded("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN")}),
]


def _without_nones(resource: dict) -> dict:
    return {key: value for key, value in resource.items() if value is not None}


@pytest.mark.parametrize(("invariant", "invalid", "field", "valid"), INVARIANT_CASES,
                         ids=[f"{case[0]}-{n}" for n, case in enumerate(INVARIANT_CASES)])
def test_r4_base_invariants_are_checked(invariant: str, invalid: dict, field: str, valid: dict) -> None:
    validate_resource(json.dumps(_without_nones(valid)).encode(), PATIENT, LIMIT)  # the control is accepted
    error = _refused(json.dumps(_without_nones(invalid)).encode(), field, f"(FHIR {invariant})")
    for value in ("Boston", "in childhood", "once", "2020-01-01", "Observation/1"):
        assert value not in str(error)  # names the element and the invariant, never a value


@pytest.mark.parametrize(("resource", "field"), [
    (_condition(clinicalStatus=_coded(CLINICAL, "bogus")), "resource_json.clinicalStatus"),
    (_condition(verificationStatus=_coded(VERIFICATION, "maybe")), "resource_json.verificationStatus"),
    (_condition(clinicalStatus={"text": "active"}), "resource_json.clinicalStatus"),
    (_allergy(clinicalStatus=_coded(CLINICAL, "active")), "resource_json.clinicalStatus"),  # Condition's system
    (_allergy(clinicalStatus=_ALLERGY_ACTIVE, verificationStatus=_coded(ALLERGY_VERIFICATION, "provisional")),
     "resource_json.verificationStatus"),
])
def test_required_codeable_concept_bindings_are_checked(resource: dict, field: str) -> None:
    _refused(json.dumps(resource).encode(), field, "required value set")
    validate_resource(json.dumps(_condition(clinicalStatus=_ACTIVE, verificationStatus=_CONFIRMED)).encode(),
                      PATIENT, LIMIT)


def test_invariants_hold_in_contained_resources_too() -> None:
    contained = _condition(id="c1", clinicalStatus=_ACTIVE, verificationStatus=_IN_ERROR)
    resource = _observation(contained=[contained], hasMember=[{"reference": "#c1"}])
    _refused(json.dumps(resource).encode(), "resource_json.contained[0].clinicalStatus", "(FHIR con-5)")


def test_a_lone_surrogate_escape_is_refused_naming_its_element() -> None:
    """Models are validated from the bytes (JSON mode); where that mode reads JSON differently from Python's
    json (a lone UTF-16 surrogate escape), the element is still named as when validated from the parsed dict."""
    raw = json.dumps(_observation(valueString="before \ud800 after")).encode()
    assert b"\\ud800" in raw
    _refused(raw, "resource_json", "valueString: is not valid (string_unicode)")
    paired = json.dumps(_observation(valueString="emoji \U0001F600")).encode()  # an escaped surrogate pair is fine
    assert validate_resource(paired, PATIENT, LIMIT).content["valueString"] == "emoji \U0001F600"
