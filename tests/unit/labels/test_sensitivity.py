"""Sensitivity labelling from clinical codes, including over the Synthea sample."""

from __future__ import annotations

import base64
import gzip
import json
import pathlib

import pytest

from carechain.labels import sensitivity as s


def _condition(system: str, code: str) -> dict:
    return {"resourceType": "Condition", "code": {"coding": [{"system": system, "code": code}]}}


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (s.SNOMED, "254837009", s.ONCOLOGY),
        (s.SNOMED, "706893006", s.VIOLENCE_ABUSE),
        (s.SNOMED, "72892002", s.REPRODUCTIVE),
        (s.SNOMED, "370143000", s.MENTAL_HEALTH),
        (s.SNOMED, "361055000", s.SUBSTANCE_USE),
        (s.SNOMED, "86406008", s.HIV_STI),
        (s.ICD10, "F32.9", s.MENTAL_HEALTH),
        (s.ICD10, "F10.20", [s.SUBSTANCE_USE, s.ALCOHOL_USE]),  # a sub-label comes with its parent
        (s.ICD10, "B20", s.HIV_STI),
        (s.ICD10, "O09.90", s.REPRODUCTIVE),
        (s.ICD10, "C50.911", s.ONCOLOGY),
        (s.ICD10, "T74.11XA", s.VIOLENCE_ABUSE),
        (s.ICD10, "Z15.01", s.GENETIC),
        (s.LOINC, "7918-6", s.HIV_STI),
        (s.RXNORM, "1010600", [s.SUBSTANCE_USE, s.OPIOID_USE]),
    ],
)
def test_sensitive_codes_get_their_category(system: str, code: str, expected: int | list[int]) -> None:
    assert s.categorize(_condition(system, code)) == (expected if isinstance(expected, list) else [expected])


def test_ordinary_codes_are_normal() -> None:
    assert s.categorize(_condition(s.SNOMED, "91302008")) == [s.NORMAL]  # sepsis
    assert s.categorize(_condition(s.ICD10, "J20.9")) == [s.NORMAL]
    assert s.categorize({"resourceType": "Patient"}) == [s.NORMAL]


def test_codes_anywhere_in_the_resource_count_and_combine() -> None:
    resource = {
        "resourceType": "Encounter",
        "reasonCode": [{"coding": [{"system": s.SNOMED, "code": "706893006"}]}],
        "diagnosis": [{"condition": {"display": "x"}, "use": {"coding": [{"system": s.SNOMED, "code": "72892002"}]}}],
    }
    assert s.categorize(resource) == sorted([s.VIOLENCE_ABUSE, s.REPRODUCTIVE])


def test_synthea_sensitive_findings_are_labelled(synthea_dir) -> None:
    found: dict[str, set[int]] = {}
    with gzip.open(synthea_dir / "Condition.000.ndjson.gz", "rt") as lines:
        for line in lines:
            condition = json.loads(line)
            found.setdefault(condition["code"]["coding"][0]["display"], set()).update(s.categorize(condition))
    assert found["Victim of intimate partner abuse (finding)"] == {s.VIOLENCE_ABUSE}
    assert found["Normal pregnancy"] == {s.REPRODUCTIVE}
    assert found["Malignant neoplasm of breast (disorder)"] == {s.ONCOLOGY}
    assert found["Stress (finding)"] == {s.MENTAL_HEALTH}
    assert found["Misuses drugs (finding)"] == {s.SUBSTANCE_USE}
    assert found["Sepsis (disorder)"] == {s.NORMAL}


def test_labelling_runs_over_every_fixture_resource_and_finds_what_is_sensitive(synthea_dir) -> None:
    """Every resource of every Synthea file is labelled without error; the sensitive findings there get labels."""
    labels: dict[tuple[str, str], set[int]] = {}
    counted = 0
    for path in sorted(synthea_dir.glob("*.ndjson.gz")):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                resource = json.loads(line)
                categories = s.categorize(resource)
                counted += 1
                assert categories and all(s.category_name(c).isupper() for c in categories)
                assert s.NORMAL not in categories or categories == [s.NORMAL]
                for coding in _top_codings(resource):
                    labels.setdefault((resource.get("resourceType", ""), coding), set()).update(categories)
    assert counted > 5000

    def label(resource_type: str, display: str) -> set[int]:
        found = [cats for (rtype, disp), cats in labels.items() if rtype == resource_type and disp == display]
        assert found, f"{resource_type} {display!r} is not in the fixtures"
        return set().union(*found)

    expected = {
        ("Condition", "Victim of intimate partner abuse (finding)"): s.VIOLENCE_ABUSE,
        ("Condition", "Normal pregnancy"): s.REPRODUCTIVE,
        ("Condition", "Miscarriage in first trimester"): s.REPRODUCTIVE,
        ("Condition", "Misuses drugs (finding)"): s.SUBSTANCE_USE,
        ("Condition", "Unhealthy alcohol drinking behavior (finding)"): s.SUBSTANCE_USE,
        ("Condition", "Stress (finding)"): s.MENTAL_HEALTH,
        ("Condition", "Severe anxiety (panic) (finding)"): s.MENTAL_HEALTH,
        ("Condition", "Malignant neoplasm of breast (disorder)"): s.ONCOLOGY,
        ("Condition", "Non-small cell lung cancer (disorder)"): s.ONCOLOGY,
        ("Encounter", "Prenatal visit"): s.REPRODUCTIVE,
        ("Encounter", "Obstetric emergency hospital admission"): s.REPRODUCTIVE,
        ("Procedure", "Induced termination of pregnancy"): s.REPRODUCTIVE,
        ("Procedure", "Screening for domestic abuse (procedure)"): s.VIOLENCE_ABUSE,
        ("Procedure", "Screening for drug abuse (procedure)"): s.SUBSTANCE_USE,
        ("Procedure", "Depression screening (procedure)"): s.MENTAL_HEALTH,
        ("Procedure", "Human immunodeficiency virus antigen test"): s.HIV_STI,
        ("Procedure", "Combined chemotherapy and radiation therapy (procedure)"): s.ONCOLOGY,
        ("MedicationRequest", "Cisplatin 50 MG Injection"): s.ONCOLOGY,
        ("MedicationRequest", "Mirena 52 MG Intrauterine System"): s.REPRODUCTIVE,
    }
    for (resource_type, display), category in expected.items():
        assert category in label(resource_type, display), (resource_type, display)
    assert label("Condition", "Sepsis (disorder)") == {s.NORMAL}
    assert label("Immunization", "Influenza, seasonal, injectable, preservative free") == {s.NORMAL}
    assert label("MedicationRequest", "Acetaminophen 325 MG Oral Tablet") == {s.NORMAL}


def _top_codings(resource: dict) -> list[str]:
    """Displays of the resource's main code (code, type, medicationCodeableConcept, vaccineCode)."""
    displays = []
    for key in ("code", "medicationCodeableConcept", "vaccineCode", "type"):
        value = resource.get(key)
        for concept in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            displays += [c.get("display", "") for c in concept.get("coding", [])]
    return displays


def test_clinical_notes_are_labelled_from_their_text() -> None:
    note = "History: victim of intimate partner abuse (finding), stress (finding), hearing aids."
    resource = {"resourceType": "DocumentReference", "content": [{"attachment": {
        "contentType": "text/plain; charset=utf-8", "data": base64.b64encode(note.encode()).decode()}}]}
    assert s.categorize(resource) == sorted([s.VIOLENCE_ABUSE, s.MENTAL_HEALTH])
    plain = {"resourceType": "DocumentReference", "content": [{"attachment": {
        "contentType": "text/plain", "data": base64.b64encode(b"Cough. Hearing aids. Child well.").decode()}}]}
    assert s.categorize(plain) == [s.NORMAL]


def test_synthea_clinical_notes_mentioning_abuse_are_labelled(synthea_dir) -> None:
    with gzip.open(synthea_dir / "DocumentReference.000.ndjson.gz", "rt") as lines:
        for line in lines:
            resource = json.loads(line)
            text = base64.b64decode(resource["content"][0]["attachment"]["data"]).decode()
            if "intimate partner abuse" in text:
                assert s.VIOLENCE_ABUSE in s.categorize(resource)
                return
    pytest.fail("no clinical note mentions intimate partner abuse")


def test_clinical_codes_are_the_primary_code_element_with_canonical_systems() -> None:
    from carechain.labels.sensitivity import clinical_codes

    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    medication = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [
        {"system": "2.16.840.1.113883.6.88", "code": " 197361 "}, {"system": rxnorm, "code": "197361"}]},
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}]}
    assert clinical_codes(medication) == [f"{rxnorm}|197361"]
    history = {"resourceType": "FamilyMemberHistory", "condition": [
        {"code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "254837009"}]}}]}
    assert clinical_codes(history) == ["http://snomed.info/sct|254837009"]
    patient = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "x", "code": "M"}]}}
    assert clinical_codes(patient) == []
    assert clinical_codes({"resourceType": "Immunization", "vaccineCode": {"text": "flu"}}) == []


def _synthea_resources() -> list[dict]:
    fixtures = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "synthea-10"
    resources = []
    for path in sorted(fixtures.glob("*.ndjson.gz")):
        if not path.name.startswith("log"):
            resources += [json.loads(line) for line in gzip.open(path).read().splitlines()]
    return resources


def test_categorize_labels_exactly_as_explain_does() -> None:
    """categorize searches all texts in one pass; its labels are those of explain (text by text), including
    terms split over two texts (not found) and terms at a text's very start and end (found)."""
    crafted = [
        {"resourceType": "Condition", "code": {"text": "history of"}, "note": [{"text": "HIV infection"}]},
        {"resourceType": "Condition", "code": {"text": "HIV"}, "note": [{"text": "infection"}]},
        {"resourceType": "Observation", "code": {"text": "schizo"}, "note": [{"text": "phrenia"}]},
        {"resourceType": "Observation", "note": [{"text": "depression"}, {"text": "ΣΑΣ"}, {"text": "x\u0000opioid"}]},
    ]
    for resource in _synthea_resources() + crafted:
        assert s.categorize(resource) == s.explain(resource).categories, resource.get("id")


def test_the_term_trie_finds_what_the_flat_longest_first_alternation_finds() -> None:
    # The trie is a speed-up only: same terms, same positions, longest term first, no word character after.
    import random
    import re

    from carechain.labels.sensitivity import _TERMS, SENSITIVE_TERMS

    flat = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(SENSITIVE_TERMS, key=len, reverse=True))
                      + r")(?!\w)")
    chooser = random.Random(13)
    terms = sorted(SENSITIVE_TERMS)
    pieces = [*terms, *(t[: chooser.randint(1, len(t))] for t in terms), " ", "-", "x", "1", "_", ".", "é", "s"]
    for _ in range(5000):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 8)))
        assert ([(m.span(), m.group(1)) for m in _TERMS.finditer(text)]
                == [(m.span(), m.group(1)) for m in flat.finditer(text)]), text
