"""Issue 10: every labelling miss observed, one test each; and the one HL7 label mapping."""

from __future__ import annotations

import base64

import pytest

from carechain.consent import fhir_consent
from carechain.consent.v1 import policy_pb2
from carechain.labels import security_labels as labels
from carechain.labels import sensitivity as s


def _coded(system: str, code: str, resource_type: str = "Condition") -> dict:
    return {"resourceType": resource_type, "code": {"coding": [{"system": system, "code": code}]}}


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (s.LOINC, "20447-9", [s.HIV_STI]),  # HIV-1 viral load
        (s.LOINC, "29893-5", [s.HIV_STI]),
        (s.ICD10, "R45.851", [s.MENTAL_HEALTH]),  # suicidal ideations
        (s.ICD10, "Z71.41", [s.SUBSTANCE_USE, s.ALCOHOL_USE]),
        (s.ICD10, "Z20.6", [s.HIV_STI]),
        (s.SNOMED, "15167005", [s.SUBSTANCE_USE, s.ALCOHOL_USE]),  # alcohol abuse
        (s.SNOMED, "26416006", [s.SUBSTANCE_USE]),  # drug abuse
        (s.SNOMED, "191736004", [s.MENTAL_HEALTH]),  # obsessive-compulsive disorder
        (s.SNOMED, "111880001", [s.HIV_STI]),  # acute HIV infection
        (s.RXNORM, "312940", [s.MENTAL_HEALTH]),  # sertraline 50 MG
        # ICD-10 chapters and blocks, not a handful of prefixes
        (s.ICD10, "F01.50", [s.MENTAL_HEALTH]),
        (s.ICD10, "F99", [s.MENTAL_HEALTH]),
        (s.ICD10, "F12.20", [s.SUBSTANCE_USE]),
        (s.ICD10, "F11.20", [s.SUBSTANCE_USE, s.OPIOID_USE]),
        (s.ICD10, "B24", [s.HIV_STI]),
        (s.ICD10, "Z21", [s.HIV_STI]),
        (s.ICD10, "D57.1", [s.SICKLE_CELL]),
        (s.ICD10, "F64.0", [s.SOGI]),
        (s.ICD10, "O98.72", [s.REPRODUCTIVE]),  # HIV in childbirth: one code, one category
        (s.ICD10_WHO, "F32", [s.MENTAL_HEALTH]),
        # ICD-9, every chapter that matters
        (s.ICD9, "296.20", [s.MENTAL_HEALTH]),
        (s.ICD9, "303.90", [s.SUBSTANCE_USE, s.ALCOHOL_USE]),
        (s.ICD9, "304.00", [s.SUBSTANCE_USE, s.OPIOID_USE]),
        (s.ICD9, "305.20", [s.SUBSTANCE_USE]),
        (s.ICD9, "042", [s.HIV_STI]),
        (s.ICD9, "V08", [s.HIV_STI]),
        (s.ICD9, "650", [s.REPRODUCTIVE]),
        (s.ICD9, "995.53", [s.VIOLENCE_ABUSE]),
        (s.ICD9, "174.9", [s.ONCOLOGY]),
        (s.ICD9, "282.60", [s.SICKLE_CELL]),
    ],
)
def test_observed_code_misses_are_labelled(system: str, code: str, expected: list[int]) -> None:
    assert s.categorize(_coded(system, code)) == expected


@pytest.mark.parametrize(
    "system",
    ["urn:oid:2.16.840.1.113883.6.96", "2.16.840.1.113883.6.96", "https://snomed.info/sct",
     "http://snomed.info/sct/731000124108", " http://snomed.info/sct/ "],
)
def test_snomed_under_its_oid_and_other_uri_forms(system: str) -> None:
    assert s.categorize(_coded(system, "370143000")) == [s.MENTAL_HEALTH]


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [("urn:oid:2.16.840.1.113883.6.1", "20447-9", s.HIV_STI), ("urn:oid:2.16.840.1.113883.6.88", "312940",
     s.MENTAL_HEALTH), ("urn:oid:2.16.840.1.113883.6.90", "F33.1", s.MENTAL_HEALTH),
     ("urn:oid:2.16.840.1.113883.6.3", "B20", s.HIV_STI), ("urn:oid:2.16.840.1.113883.6.103", "042", s.HIV_STI)],
)
def test_every_code_system_under_its_oid(system: str, code: str, expected: int) -> None:
    assert s.categorize(_coded(system, code)) == [expected]


def test_a_code_carries_one_category_and_a_resource_several() -> None:
    resource = {"resourceType": "Condition", "code": {"coding": [
        {"system": s.ICD10, "code": "O98.72"}, {"system": s.ICD10, "code": "F32.9"}]}}
    assert s.categorize(resource) == [s.MENTAL_HEALTH, s.REPRODUCTIVE]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"resourceType": "Condition", "code": {"text": "Major depressive disorder"}}, s.MENTAL_HEALTH),
        ({"resourceType": "Condition", "code": {"coding": [{"system": "urn:local", "code": "x1",
                                                            "display": "HIV positive"}]}}, s.HIV_STI),
        ({"resourceType": "Observation", "note": [{"text": "depression with suicidal ideation"}]}, s.MENTAL_HEALTH),
        ({"resourceType": "Observation", "text": {"status": "generated",
                                                  "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Patient "
                                                         "is <b>HIV</b>-positive</p></div>"}}, s.HIV_STI),
        ({"resourceType": "Procedure", "reasonReference": [{"reference": "Condition/1",
                                                            "display": "Normal pregnancy"}]}, s.REPRODUCTIVE),
        ({"resourceType": "DocumentReference", "content": [{"attachment": {
            "contentType": "Text/Plain", "data": base64.b64encode(b"Dx: bipolar disorder").decode()}}]},
         s.MENTAL_HEALTH),
        ({"resourceType": "DocumentReference", "content": [{"attachment": {
            "contentType": "application/octet-stream",
            "data": base64.b64encode(b"history of syphilis").decode()}}]}, s.HIV_STI),
    ],
)
def test_text_everywhere_is_searched(resource: dict, expected: int) -> None:
    assert expected in s.categorize(resource)


def test_incoming_meta_security_is_respected_and_never_weakened() -> None:
    harmless = {"resourceType": "Observation", "code": {"coding": [{"system": s.LOINC, "code": "8302-2"}]}}
    assert s.categorize(harmless) == [s.NORMAL]
    labelled = dict(harmless, meta={"security": [{"system": labels.ACT_CODE, "code": "PSY"},
                                                 {"system": labels.CONFIDENTIALITY, "code": "R"}]})
    assert s.categorize(labelled) == [s.MENTAL_HEALTH]
    # Restricted by the source without a sensitivity code CareChain maps: restricted, never NORMAL.
    for code, expected in (("R", s.RESTRICTED), ("V", s.VERY_RESTRICTED)):
        marked = dict(harmless, meta={"security": [{"system": "urn:oid:2.16.840.1.113883.5.25", "code": code}]})
        assert s.categorize(marked) == [expected]
    unknown = dict(harmless, meta={"security": [{"system": labels.ACT_CODE, "code": "ADOL"}]})
    assert s.categorize(unknown) == [s.RESTRICTED]
    # V with a category that is only R keeps V.
    very = dict(harmless, meta={"security": [{"system": labels.ACT_CODE, "code": "HIV"},
                                             {"system": labels.CONFIDENTIALITY, "code": "V"}]})
    assert s.categorize(very) == [s.HIV_STI, s.VERY_RESTRICTED]
    assert labels.confidentiality(s.categorize(very)) == "V"
    # A "normal" label never lowers what the content says.
    normal = {"resourceType": "Condition", "meta": {"security": [{"system": labels.CONFIDENTIALITY, "code": "N"}]},
              "code": {"coding": [{"system": s.ICD10, "code": "F32.9"}]}}
    assert s.categorize(normal) == [s.MENTAL_HEALTH]


@pytest.mark.parametrize(
    ("code", "expected"),
    [("ETH", [s.SUBSTANCE_USE]), ("SUD", [s.SUBSTANCE_USE]), ("ETHUD", [s.SUBSTANCE_USE, s.ALCOHOL_USE]),
     ("OPIOIDUD", [s.SUBSTANCE_USE, s.OPIOID_USE]), ("PSY", [s.MENTAL_HEALTH]),
     ("PSYTHPN", [s.MENTAL_HEALTH, s.PSYCHOTHERAPY_NOTE]), ("HIV", [s.HIV_STI]), ("STD", [s.HIV_STI]),
     ("SDV", [s.VIOLENCE_ABUSE]), ("SEX", [s.REPRODUCTIVE]), ("GDIS", [s.GENETIC]), ("SCA", [s.SICKLE_CELL]),
     ("TBOO", [s.TABOO])],
)
def test_every_hl7_sensitivity_code_is_representable(code: str, expected: list[int]) -> None:
    resource = {"resourceType": "Observation", "meta": {"security": [{"system": labels.ACT_CODE, "code": code}]}}
    categories = s.categorize(resource)
    assert categories == expected
    written = {(label["system"], label["code"]) for label in labels.security_labels(categories)}
    assert (labels.ACT_CODE, code) in written or code == "SUD"


def test_sogi_and_oncology_use_the_one_carechain_system() -> None:
    for category, code in ((s.SOGI, "SOGI"), (s.ONCOLOGY, "ONCOLOGY")):
        assert labels.security_labels([category]) == [
            {"system": labels.CARECHAIN_SENSITIVITY, "code": code, "display": labels.CATEGORY_LABELS[category][0][2]}]
        assert labels.category_of_label(labels.CARECHAIN_SENSITIVITY, code) == category


def test_meta_security_output_carries_confidentiality() -> None:
    assert labels.security_labels([s.NORMAL], with_confidentiality=True) == [
        {"system": labels.CONFIDENTIALITY, "code": "N", "display": "normal"}]
    coded = labels.security_labels([s.MENTAL_HEALTH], with_confidentiality=True)
    assert [(c["system"], c["code"]) for c in coded] == [(labels.ACT_CODE, "PSY"), (labels.CONFIDENTIALITY, "R")]
    assert labels.security_labels([s.SUBSTANCE_USE], with_confidentiality=True)[-1]["code"] == "V"


def test_consent_export_and_audit_export_use_the_same_labels() -> None:
    from carechain.audit import fhir_audit

    every = [c for c in s.Category.values() if c != s.Category.SENSITIVITY_CATEGORY_UNSPECIFIED]
    provision = policy_pb2.Provision(type=policy_pb2.PROVISION_TYPE_PERMIT, categories=every)
    exported = fhir_consent._fhir_provision(provision)["securityLabel"]
    assert exported == fhir_audit.security_labels(every) == labels.security_labels(every)
    # and every label exported reads back as its category
    assert {labels.category_of_label(label["system"], label["code"]) for label in exported} == set(every)
