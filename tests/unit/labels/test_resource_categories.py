"""Clinical categories of FHIR resources (carechain.labels.resource_categories): what each type's category
element holds, from the Synthea fixtures where they have the type, and how search tokens match them."""

from __future__ import annotations

import gzip
import json
import pathlib
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from carechain.core.fhir import PATIENT_REFERENCE_FIELDS
from carechain.labels.resource_categories import (
    ALLERGY_INTOLERANCE_CATEGORY,
    CATEGORY_ELEMENTS,
    category_token,
    has_category,
    names_sensitive_concept,
    resource_categories,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "synthea-10"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
PSN = {"reference": "Patient/psn-1"}


def _synthea(resource_type: str) -> list[dict[str, Any]]:
    with gzip.open(FIXTURES / f"{resource_type}.000.ndjson.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": code.title()}]}


def test_the_table_is_exactly_the_stored_types_with_a_category_element() -> None:
    """Every stored type whose FHIR model has ``category`` is listed, with the right kind (code or concept)."""
    found = {}
    for resource_type in sorted({"Patient", *PATIENT_REFERENCE_FIELDS}):
        model = get_fhir_model_class(resource_type)
        element = model.model_fields.get("category")
        if element is not None:
            found[resource_type] = "CodeableConcept" if "CodeableConcept" in str(element.annotation) else "code"
    assert found == CATEGORY_ELEMENTS


@pytest.mark.parametrize(("resource_type", "expected"), [
    ("Condition", {f"{TERMINOLOGY}/condition-category|encounter-diagnosis"}),
    ("DocumentReference", {"http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category|clinical-note"}),
    ("MedicationRequest", {f"{TERMINOLOGY}/medicationrequest-category|community"}),
    ("AllergyIntolerance", {f"{ALLERGY_INTOLERANCE_CATEGORY}|{c}" for c in ("medication", "food", "environment")}),
])
def test_synthea_categories(resource_type: str, expected: set[str]) -> None:
    """Synthea's own records: every category coding kept as system|code (AllergyIntolerance's codes too)."""
    resources = _synthea(resource_type)
    found = {category for r in resources for category in resource_categories(r)}
    assert found and found <= expected
    first = resources[0]
    if resource_type != "AllergyIntolerance":
        assert resource_categories(first) == sorted(
            f"{c['system']}|{c['code']}" for concept in first["category"] for c in concept["coding"])


@pytest.mark.parametrize("resource_type", ["Encounter", "Immunization", "Procedure", "Patient", "Device"])
def test_synthea_types_without_categories_have_none(resource_type: str) -> None:
    """Encounter.class, Immunization (no element), Synthea's Procedures (no category given): nothing."""
    assert not any(resource_categories(r) for r in _synthea(resource_type))


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Observation", "status": "final", "subject": PSN,
      "category": [_concept(f"{TERMINOLOGY}/observation-category", "laboratory"),
                   _concept(f"{TERMINOLOGY}/observation-category", "vital-signs")]},
     [f"{TERMINOLOGY}/observation-category|laboratory", f"{TERMINOLOGY}/observation-category|vital-signs"]),
    ({"resourceType": "DiagnosticReport", "category": [_concept("http://loinc.org", "LP29684-5"),
                                                       _concept(f"{TERMINOLOGY}/v2-0074", "LAB")]},
     ["http://loinc.org|LP29684-5", f"{TERMINOLOGY}/v2-0074|LAB"]),
    ({"resourceType": "CarePlan", "category": [_concept("urn:oid:2.16.840.1.113883.6.96", "734163000")]},
     ["http://snomed.info/sct|734163000"]),  # the system normalised as clinical codes are
    ({"resourceType": "Procedure", "category": _concept("http://snomed.info/sct", "387713003")},  # one concept
     ["http://snomed.info/sct|387713003"]),
    ({"resourceType": "ServiceRequest", "category": [{"coding": [{"code": "108252007"}]}, {"text": "lab"}]},
     ["|108252007"]),  # no system: |code; text only: nothing
    ({"resourceType": "MedicationStatement", "category": _concept(f"{TERMINOLOGY}/medication-statement-category",
                                                                  "inpatient")},
     [f"{TERMINOLOGY}/medication-statement-category|inpatient"]),
    ({"resourceType": "AllergyIntolerance", "category": ["food", "food", " biologic "]},
     [f"{ALLERGY_INTOLERANCE_CATEGORY}|biologic", f"{ALLERGY_INTOLERANCE_CATEGORY}|food"]),
    ({"resourceType": "Encounter", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                             "code": "AMB"}, "category": [_concept("x", "y")]}, []),
    ({"resourceType": "Observation", "category": [{"coding": [{"system": "s"}, "junk", {"code": ""}]}]}, []),
])
def test_each_type_keeps_its_category_element(resource: dict[str, Any], expected: list[str]) -> None:
    assert resource_categories(resource) == expected


@pytest.mark.parametrize(("token", "categories", "matches"), [
    ("laboratory", ["http://x|laboratory"], True),  # a bare code: any system
    ("http://x|laboratory", ["http://x|laboratory"], True),
    ("http://y|laboratory", ["http://x|laboratory"], False),
    ("|laboratory", ["http://x|laboratory"], False),  # |code: only a coding without a system
    ("|laboratory", ["|laboratory"], True),
    ("urn:oid:2.16.840.1.113883.6.96|734163000", ["http://snomed.info/sct|734163000"], True),
    ("laboratory", [], False),  # a record without categories matches no category
])
def test_tokens_match_as_fhir_token_search(token: str, categories: list[str], matches: bool) -> None:
    normalised = category_token(token)
    assert normalised is not None and has_category([normalised], categories) is matches


@pytest.mark.parametrize("token", ["", "|", "system|", "a|b|c", "x" * 513])
def test_malformed_tokens(token: str) -> None:
    assert category_token(token) is None


@pytest.mark.parametrize(("token", "sensitive"), [
    ("laboratory", False), ("encounter-diagnosis", False),
    (f"{TERMINOLOGY}/observation-category|social-history", False),
    ("http://snomed.info/sct|35489007", True),  # depressive disorder
    ("35489007", True),  # a bare code is checked in every code system the labeller knows
    ("|F32.9", True),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY", True), ("PSY", True),  # a sensitivity label
    ("urn:oid:2.16.840.1.113883.5.25|R", True), ("N", False),  # restricted; normal is not sensitive
])
def test_which_category_tokens_name_sensitive_content(token: str, sensitive: bool) -> None:
    assert names_sensitive_concept(category_token(token) or "") is sensitive
