"""FHIR R4 conformance: CareChain's input checks and FHIR exports against HAPI FHIR's instance validator.

HAPI FHIR (installed by `make tools`, run offline by tests/fhir_validator.py) validates against the R4
StructureDefinitions: cardinalities, types, required code bindings and the base invariants. Here it is
the reference that CareChain is held to:

- inputs: every resource ``records.fhir.validate_resource`` (what PutRecord runs) accepts, HAPI accepts
  (the Synthea sample, a few of each type), and every resource HAPI rejects in a corpus of known-invalid
  ones (bad codes, missing required elements, broken invariants, broken JSON), CareChain rejects too;
- outputs: the AuditEvent Bundle export and the Consent export of realistic data have no error-level
  issue.

docs/fhir-conformance.md describes the set-up.
"""

from __future__ import annotations

import copy
import gzip
import json
import pathlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fhir_validator import HapiValidator

from carechain.audit import fhir_audit
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent import fhir_consent
from carechain.consent.v1 import consent_pb2
from carechain.core.errors import InvalidArgument
from carechain.core.fhir import PATIENT_REFERENCE_FIELDS, validate_resource

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session
# The first test here also starts the JVM (1-3 minutes on the shared 2-core machine): more than the default 300 s.
pytestmark = pytest.mark.timeout(900)

SYNTHEA = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "synthea-10"
MAX_BYTES = 4 * 1024 * 1024
PER_TYPE = 4  # resources of each Synthea type in the valid corpus: HAPI takes ~0.1-1 s per resource here

def patient_id_of(resource: dict[str, Any]) -> str:
    """The FHIR id of the patient a resource is about (its own id for a Patient)."""
    if resource["resourceType"] == "Patient":
        return resource["id"]
    reference = resource[PATIENT_REFERENCE_FIELDS[resource["resourceType"]]]["reference"]
    return reference.split("/", 1)[1] if reference.startswith("Patient/") else reference.removeprefix("urn:uuid:")


def carechain_accepts(resource: dict[str, Any] | bytes, patient_id: str) -> str | None:
    """None when CareChain's PutRecord validation accepts the resource, else its InvalidArgument message."""
    raw = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    try:
        validate_resource(raw, patient_id, MAX_BYTES)
    except InvalidArgument as rejected:
        return str(rejected)
    return None


def synthea_sample() -> list[dict[str, Any]]:
    """The first PER_TYPE resources of each patient-data type in the Synthea sample."""
    sample = []
    for path in sorted(SYNTHEA.glob("*.000.ndjson.gz")):
        resource_type = path.name.split(".", 1)[0]
        if resource_type != "Patient" and resource_type not in PATIENT_REFERENCE_FIELDS:
            continue  # Organization, Practitioner, Location, ...: not patient data, PutRecord refuses them
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for _, line in zip(range(PER_TYPE), lines, strict=False):
                sample.append(json.loads(line))
    return sample


def first(resource_type: str) -> dict[str, Any]:
    """A fresh copy of the first Synthea resource of a type."""
    with gzip.open(SYNTHEA / f"{resource_type}.000.ndjson.gz", "rt", encoding="utf-8") as lines:
        return json.loads(next(lines))


def observation() -> dict[str, Any]:
    """A valid vital-signs Observation about the first Synthea patient (the sample has no Observations)."""
    return {
        "resourceType": "Observation", "id": "heart-rate-1", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{first('Patient')['id']}"},
        "effectiveDateTime": "2023-05-02T10:00:00Z",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def test_the_synthea_sample_is_valid_r4_for_carechain_and_hapi(hapi_validator: HapiValidator) -> None:
    corpus = [*synthea_sample(), observation()]
    refused_by_carechain, refused_by_hapi = [], []
    for resource in corpus:
        name = f"{resource['resourceType']}/{resource['id']}"
        reason = carechain_accepts(resource, patient_id_of(resource))
        if reason is not None:
            refused_by_carechain.append(f"{name}: {reason}")
            continue
        outcome = hapi_validator.validate(resource)
        if not outcome.valid:
            refused_by_hapi.append(f"{name}: " + "; ".join(map(str, outcome.errors)))
    assert not refused_by_hapi, "CareChain accepts resources that are not valid R4:\n" + "\n".join(refused_by_hapi)
    assert not refused_by_carechain, "CareChain refuses valid Synthea resources:\n" + "\n".join(refused_by_carechain)
    assert len(corpus) > 30


# --- known-invalid resources -----------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    """A valid base resource broken one way, and the FHIRPath location where HAPI must report it."""

    name: str
    base: Callable[[], dict[str, Any]]
    breaks: Callable[[dict[str, Any]], dict[str, Any] | bytes]
    location: str  # a prefix of the location of (at least) one HAPI error; "" where HAPI has none to give

    def build(self) -> tuple[dict[str, Any] | bytes, str]:
        """The broken resource and the id of its patient."""
        base = self.base()
        return self.breaks(copy.deepcopy(base)), patient_id_of(base)


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A mutation that sets a dotted path (list indexes as numbers) to value."""
    def mutate(resource: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node: Any = resource
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
        return resource
    return mutate


def removing(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A mutation that deletes a top-level element."""
    def mutate(resource: dict[str, Any]) -> dict[str, Any]:
        del resource[key]
        return resource
    return mutate


def applying(*mutations: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(resource: dict[str, Any]) -> dict[str, Any]:
        for one in mutations:
            resource = one(resource)
        return resource
    return mutate


def patient() -> dict[str, Any]:
    return first("Patient")


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

INVALID = [
    # Required code bindings (a code outside the value set the element must be bound to).
    Invalid("observation-status-bogus", observation, setting("status", "bogus"), "Observation.status"),
    Invalid("observation-status-wrong-case", observation, setting("status", "Final"), "Observation.status"),
    Invalid("patient-gender-martian", patient, setting("gender", "martian"), "Patient.gender"),
    Invalid("encounter-status-bogus", lambda: first("Encounter"), setting("status", "bogus"), "Encounter.status"),
    Invalid("procedure-status-bogus", lambda: first("Procedure"), setting("status", "bogus"), "Procedure.status"),
    Invalid("immunization-status-given", lambda: first("Immunization"), setting("status", "given"),
            "Immunization.status"),
    Invalid("medicationrequest-intent-sometimes", lambda: first("MedicationRequest"),
            setting("intent", "sometimes"), "MedicationRequest.intent"),
    Invalid("documentreference-status-draft", lambda: first("DocumentReference"), setting("status", "draft"),
            "DocumentReference.status"),
    Invalid("allergy-criticality-extreme", lambda: first("AllergyIntolerance"), setting("criticality", "extreme"),
            "AllergyIntolerance.criticality"),
    Invalid("condition-clinical-status-bogus", lambda: first("Condition"),
            setting("clinicalStatus", coded(CONDITION_CLINICAL, "bogus")), "Condition.clinicalStatus"),
    # Missing required elements (min cardinality 1).
    Invalid("observation-without-status", observation, removing("status"), "Observation"),
    Invalid("observation-without-code", observation, removing("code"), "Observation"),
    Invalid("encounter-without-class", lambda: first("Encounter"), removing("class"), "Encounter"),
    Invalid("immunization-without-vaccine-code", lambda: first("Immunization"), removing("vaccineCode"),
            "Immunization"),
    Invalid("medicationrequest-without-intent", lambda: first("MedicationRequest"), removing("intent"),
            "MedicationRequest"),
    # Base invariants.
    Invalid("condition-con-4-abated-but-active", lambda: first("Condition"),  # abated => not active
            applying(setting("clinicalStatus", coded(CONDITION_CLINICAL, "active")),
                     setting("abatementDateTime", "2020-01-01")), "Condition"),
    Invalid("condition-con-5-entered-in-error-with-clinical-status", lambda: first("Condition"),
            setting("verificationStatus", coded(CONDITION_VERIFICATION, "entered-in-error")), "Condition"),
    Invalid("allergy-ait-2-entered-in-error-with-clinical-status", lambda: first("AllergyIntolerance"),
            setting("verificationStatus", coded(ALLERGY_VERIFICATION, "entered-in-error")), "AllergyIntolerance"),
    Invalid("observation-obs-6-value-and-data-absent-reason", observation,
            setting("dataAbsentReason", coded("http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                              "unknown")), "Observation"),
    Invalid("patient-pat-1-contact-without-details", patient,
            setting("contact", [{"relationship": [coded("http://terminology.hl7.org/CodeSystem/v2-0131", "N")]}]),
            "Patient.contact"),
    Invalid("patient-ele-1-empty-element", patient, setting("maritalStatus", {}), "Patient.maritalStatus"),
    # Wrong types, formats and unknown elements.
    Invalid("patient-birthdate-not-a-date", patient, setting("birthDate", "1990-13-45"), "Patient.birthDate"),
    Invalid("patient-gender-not-a-string", patient, setting("gender", 5), "Patient.gender"),
    Invalid("patient-unknown-element", patient, setting("favouriteColour", "blue"), "Patient"),
    Invalid("observation-value-quantity-not-a-number", observation, setting("valueQuantity.value", "seventy-two"),
            "Observation.value"),
    # Broken JSON.
    Invalid("patient-duplicate-key", patient,
            lambda resource: json.dumps(resource).encode().replace(b'"gender": ', b'"gender": "male", "gender": ', 1),
            ""),
]

@pytest.mark.parametrize("case", INVALID, ids=[case.name for case in INVALID])
def test_hapi_rejects_each_known_invalid_resource(hapi_validator: HapiValidator, case: Invalid) -> None:
    resource, _ = case.build()
    outcome = hapi_validator.validate(resource)
    assert not outcome.valid, f"HAPI accepts {case.name}: the harness or the case is broken"
    locations = [issue.location for issue in outcome.errors]
    assert any(location.startswith(case.location) for location in locations), locations


@pytest.mark.parametrize("case", INVALID, ids=[case.name for case in INVALID])
def test_carechain_rejects_each_known_invalid_resource(case: Invalid) -> None:
    resource, patient_id = case.build()
    assert carechain_accepts(resource, patient_id) is not None, f"CareChain accepts invalid R4 ({case.name})"


def test_the_invalid_cases_are_broken_copies_of_resources_both_accept(hapi_validator: HapiValidator) -> None:
    """Each invalid case starts from a valid resource, so the one mutation is what makes it invalid."""
    bases = {json.dumps(case.base(), sort_keys=True): case.base() for case in INVALID}
    for base in bases.values():
        assert carechain_accepts(base, patient_id_of(base)) is None
        assert hapi_validator.validate(base).valid


# --- outputs: the AuditEvent Bundle and Consent exports ------------------------------------------------


def audit_events() -> list[audit_pb2.StoredAuditEvent]:
    """Stored audit events covering every action, outcome, purpose, category and kind of actor."""
    actions = [a for a in audit_pb2.AuditAction.values() if a != audit_pb2.AUDIT_ACTION_UNSPECIFIED]
    outcomes = [o for o in audit_pb2.AuditOutcome.values() if o != audit_pb2.AUDIT_OUTCOME_UNSPECIFIED]
    purposes = list(common_pb2.PurposeOfUse.values())  # UNSPECIFIED included: events without a purpose
    categories = [c for c in common_pb2.SensitivityCategory.values()
                  if c != common_pb2.SENSITIVITY_CATEGORY_UNSPECIFIED]
    actors = [("prac-9f", "org-7a"), ("psn-3c", ""), ("org-7a", "org-7a"), ("svc-records", ""), ("operator", ""),
              ("guardian-1", "")]
    services = ["records", "consent", "identity", "storage", "ledger", "audit"]
    events = []
    for n in range(max(len(actions), len(outcomes), len(purposes), len(categories), len(actors))):
        actor_id, organization_id = actors[n % len(actors)]
        with_record = n % 4 != 3  # some events (consent changes, reviews) name no record
        event = audit_pb2.AuditEvent(
            event_id=str(uuid.UUID(int=n + 1)), time_ms=1_700_000_000_123 + n * 61_001,
            service=services[n % len(services)], actor_id=actor_id, organization_id=organization_id,
            patient_id="psn-3c" if n % 5 else "", record_id=str(uuid.UUID(int=1000 + n)) if with_record else "",
            resource_type=["Condition", "Observation", ""][n % 3] if with_record else "",
            categories=[categories[n % len(categories)], categories[(n + 3) % len(categories)]],
            action=actions[n % len(actions)], outcome=outcomes[n % len(outcomes)],
            purpose=purposes[n % len(purposes)], reason="no consent covers this" if n % 3 == 1 else "",
            alert=n % 4 == 2,
        )
        events.append(audit_pb2.StoredAuditEvent(event=event, sequence=n + 1, event_hash=bytes(32)))
    return events


def test_the_audit_event_bundle_export_is_valid_r4(hapi_validator: HapiValidator) -> None:
    bundle = json.loads(fhir_audit.bundle_json(audit_events(), str(uuid.UUID(int=7)), 1_700_000_100_000))
    assert len(bundle["entry"]) >= 8
    outcome = hapi_validator.validate(bundle)
    assert outcome.valid, "\n".join(map(str, outcome.errors))
    single = hapi_validator.validate(bundle["entry"][0]["resource"])  # an AuditEvent on its own, too
    assert single.valid, "\n".join(map(str, single.errors))
    # HAPI does look inside the entries: one bad code in the last event makes the Bundle invalid.
    bundle["entry"][-1]["resource"]["action"] = "X"
    broken = hapi_validator.validate(bundle)
    assert [issue.location for issue in broken.errors] and all(
        issue.location.startswith(f"Bundle.entry[{len(bundle['entry']) - 1}].resource") for issue in broken.errors)


# Labels CareChain reads that are later HL7 Terminology (THO) ActCode codes, not in R4's v3-ActCode (4.0.1):
# HAPI reports them as unknown codes (an error), so a valid R4 input cannot carry them. The export never
# writes them (it writes SEX and SDV for their categories).
NOT_IN_R4 = {(fhir_consent.ACT_CODE, "PREGNANT"), (fhir_consent.ACT_CODE, "SEXASLT")}


def practitioner_actor(practitioner_id: str) -> dict[str, Any]:
    return {"role": coded(fhir_consent.PARTICIPATION_TYPE, "IRCP"),
            "reference": {"reference": f"Practitioner/{practitioner_id}"}}


def rich_consent() -> dict[str, Any]:
    """A FHIR Consent using every construct CareChain imports: nested provisions, every label and purpose."""
    labels = [{"system": system, "code": code} for system, code in fhir_consent.LABEL_CATEGORIES
              if (system, code) not in NOT_IN_R4]
    return {
        "resourceType": "Consent", "status": "active",
        "scope": coded(fhir_consent.CONSENT_SCOPE, "patient-privacy"),
        "category": [coded(fhir_consent.LOINC, "59284-0")],
        "patient": {"reference": "Patient/example"},
        "policyRule": coded(fhir_consent.ACT_CODE, "OPTIN"),
        "provision": {
            "type": "deny", "period": {"start": "2024-01-01", "end": "2026-12-31"},
            "provision": [
                {"type": "permit",
                 "actor": [practitioner_actor("prac-1"),
                           {"role": coded(fhir_consent.PARTICIPATION_TYPE, "IRCP"),
                            "reference": {"reference": "Organization/org-a"}},
                           {"role": coded(fhir_consent.SPECIALTY_SYSTEM, "oncology"),
                            "reference": {"display": "oncologists"}},
                           # A specialty actor's organisation scope: named organisations, or any member one.
                           {"role": coded(fhir_consent.SPECIALTY_SYSTEM, "psychiatry"),
                            "reference": {"type": "PractitionerRole", "display": "psychiatrists of org-b or org-c"},
                            "extension": [{"url": fhir_consent.SPECIALTY_SCOPE_EXTENSION,
                                           "valueReference": {"reference": f"Organization/{org}"}}
                                          for org in ("org-b", "org-c")]},
                           {"role": coded(fhir_consent.SPECIALTY_SYSTEM, "cardiology"),
                            "reference": {"type": "PractitionerRole", "display": "any cardiologist"},
                            "extension": [{"url": fhir_consent.SPECIALTY_SCOPE_EXTENSION,
                                           "valueCode": fhir_consent.ANY_MEMBER_ORGANIZATION}]}],
                 "action": [coded(fhir_consent.CONSENT_ACTION, code) for code in fhir_consent.ACTIONS],
                 "purpose": [{"system": fhir_consent.ACT_REASON, "code": code} for code in fhir_consent.PURPOSES],
                 "class": [{"system": fhir_consent.RESOURCE_TYPES, "code": "Condition"}],
                 "dataPeriod": {"start": "2023", "end": "2023"},
                 "provision": [{"type": "deny", "actor": [practitioner_actor("prac-9")],
                                "period": {"start": "2025-03-01T08:30:00Z", "end": "2025-03-01T17:00:00.250Z"}},
                               {"type": "deny", "code": [coded("http://snomed.info/sct", "44054006"),
                                                         coded("http://loinc.org", "4548-4")]}]},
                {"type": "deny", "securityLabel": labels},
            ],
        },
    }


@pytest.mark.parametrize("status", [consent_pb2.CONSENT_STATUS_ACTIVE, consent_pb2.CONSENT_STATUS_REVOKED])
def test_the_consent_export_is_valid_r4(hapi_validator: HapiValidator, status: int) -> None:
    source = rich_consent()
    assert hapi_validator.validate(source).valid  # the input is valid R4 to begin with
    imported = fhir_consent.consent_from_fhir(source)
    record = consent_pb2.ConsentRecord(consent_id=str(uuid.UUID(int=42)), patient_id="psn-3c", policy=imported.policy,
                                       status=status, granted_log_index=3, granted_at_ms=1_735_000_000_000,
                                       granted_by="psn-3c")
    exported = json.loads(fhir_consent.consent_json(record))
    outcome = hapi_validator.validate(exported)
    assert outcome.valid, "\n".join(map(str, outcome.errors))
    scoped = [a for a in exported["provision"]["provision"][0]["actor"] if "extension" in a]
    assert [len(a["extension"]) for a in scoped] == [2, 1]  # the specialty scopes are exported, not dropped
    # HAPI only notes the CareChain extension as unknown (information): no error or warning about it.
    assert not [str(i) for i in outcome.issues if ".extension" in (i.location or "") and i.severity != "information"]
    # Everything CareChain exports it reads back to the same policy.
    assert fhir_consent.consent_from_fhir(exported).policy == imported.policy
