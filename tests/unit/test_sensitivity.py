"""Sensitivity labelling from clinical codes, including over the Synthea sample."""

from __future__ import annotations

import gzip
import json

import pytest

from carechain import sensitivity as s


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
        (s.ICD10, "F10.20", s.SUBSTANCE_USE),
        (s.ICD10, "B20", s.HIV_STI),
        (s.ICD10, "O09.90", s.REPRODUCTIVE),
        (s.ICD10, "C50.911", s.ONCOLOGY),
        (s.ICD10, "T74.11XA", s.VIOLENCE_ABUSE),
        (s.ICD10, "Z15.01", s.GENETIC),
        (s.LOINC, "7918-6", s.HIV_STI),
        (s.RXNORM, "1010600", s.SUBSTANCE_USE),
    ],
)
def test_sensitive_codes_get_their_category(system: str, code: str, expected: int) -> None:
    assert s.categorize(_condition(system, code)) == [expected]


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
