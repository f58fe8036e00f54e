"""FHIR R4 Consent import/export: meaning kept both ways, errors naming the FHIR element; clinical dates."""

from __future__ import annotations

import copy
import json

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.consent import fhir_consent as f
from carechain.consent.v1 import consent_pb2
from carechain.consent.v1 import policy_pb2 as p
from carechain.core.errors import InvalidArgument
from carechain.core.fhir import clinical_date_ms, fhir_date_ms, fhir_time_range

SCOPE = {"coding": [{"system": f.CONSENT_SCOPE, "code": "patient-privacy"}]}
CATEGORY = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]


def practitioner(pid: str) -> dict:
    return {"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "IRCP"}]},
            "reference": {"reference": f"Practitioner/{pid}"}}


def consent(provision: dict, **extra) -> dict:
    return {"resourceType": "Consent", "status": "active", "scope": SCOPE, "category": CATEGORY,
            "patient": {"reference": "Patient/example"}, "provision": provision, **extra}


RICH = consent({
    "type": "deny",
    "period": {"start": "2024-01-01", "end": "2026-12-31"},
    "provision": [
        {
            "type": "permit",
            "actor": [
                practitioner("prac-1"),
                {"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "IRCP"}]},
                 "reference": {"reference": "Organization/org-a"}},
                {"role": {"coding": [{"system": f.SPECIALTY_SYSTEM, "code": "oncology"}]},
                 "reference": {"display": "oncologists"}},
            ],
            "action": [{"coding": [{"system": f.CONSENT_ACTION, "code": "access"}]},
                       {"coding": [{"system": f.CONSENT_ACTION, "code": "disclose"}]}],
            "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}, {"system": f.ACT_REASON, "code": "ETREAT"}],
            "securityLabel": [{"system": f.ACT_CODE, "code": "PSY"}, {"system": f.ACT_CODE, "code": "ETH"},
                              {"system": f.ACT_CODE, "code": "STD"}, {"system": f.SENSITIVITY_SYSTEM,
                                                                       "code": "ONCOLOGY"}],
            "class": [{"system": f.RESOURCE_TYPES, "code": "Condition"}],
            "dataPeriod": {"start": "2023", "end": "2023"},
            "provision": [{"type": "deny", "actor": [practitioner("prac-9")],
                           "period": {"start": "2025-03-01T08:30:00Z", "end": "2025-03-01T17:00:00.250Z"}}],
        },
        {"type": "deny", "securityLabel": [{"system": f.ACT_CODE, "code": "HIV"}]},
        {"type": "permit",
         "purpose": [{"system": f.ACT_REASON, "code": code} for code in ("HPAYMT", "HOPERAT", "HRESCH", "PATRQT")],
         "action": [{"coding": [{"system": f.CONSENT_ACTION, "code": "correct"}]}]},
    ],
})


def test_import_maps_every_supported_element() -> None:
    imported = f.consent_from_fhir(RICH)
    policy = imported.policy
    assert imported.status == "active" and imported.patient_id == "" and imported.consent_id == ""
    assert policy.period == c.Period(start_ms=1_704_067_200_000, end_ms=1_798_761_600_000)  # to 2027-01-01
    first = policy.provisions[0]
    assert first.type == p.PROVISION_TYPE_PERMIT
    assert [a.WhichOneof("actor") for a in first.actors] == ["practitioner_id", "organization_id", "specialty"]
    assert (first.actors[0].practitioner_id, first.actors[1].organization_id, first.actors[2].specialty) == (
        "prac-1", "org-a", "oncology")
    assert list(first.actions) == [c.CONSENT_ACTION_ACCESS, c.CONSENT_ACTION_DISCLOSE]
    assert list(first.purposes) == [c.PURPOSE_OF_USE_TREAT, c.PURPOSE_OF_USE_ETREAT]
    assert list(first.categories) == [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH, c.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
                                      c.SENSITIVITY_CATEGORY_HIV_STI, c.SENSITIVITY_CATEGORY_ONCOLOGY]
    assert list(first.resource_types) == ["Condition"]
    assert first.data_period == c.Period(start_ms=1_672_531_200_000, end_ms=1_704_067_200_000)
    nested = first.provisions[0]
    assert nested.type == p.PROVISION_TYPE_DENY and nested.actors[0].practitioner_id == "prac-9"
    assert nested.period.end_ms - nested.period.start_ms == 8 * 3_600_000 + 30 * 60_000 + 251
    assert policy.provisions[1].categories == [c.SENSITIVITY_CATEGORY_HIV_STI]
    assert list(policy.provisions[2].purposes) == [c.PURPOSE_OF_USE_HPAYMT, c.PURPOSE_OF_USE_HOPERAT,
                                                   c.PURPOSE_OF_USE_HRESCH, c.PURPOSE_OF_USE_PATRQT]


def test_round_trip_keeps_the_policy() -> None:
    first = f.consent_from_fhir(json.dumps(RICH))
    record = consent_pb2.ConsentRecord(consent_id="5b7d8f5e-0a43-4a8e-9a0e-3e7a2a1b2c3d", patient_id="pat-1",
                                       policy=first.policy, status=consent_pb2.CONSENT_STATUS_ACTIVE,
                                       granted_at_ms=1_700_000_000_123)
    exported = f.consent_to_fhir(record)
    second = f.consent_from_fhir(f.consent_json(record))
    assert second.policy == first.policy
    assert (second.patient_id, second.consent_id) == ("pat-1", record.consent_id)
    assert exported["meta"]["lastUpdated"] == "2023-11-14T22:13:20.123Z"  # the grant; RICH has no dateTime
    assert "dateTime" not in exported
    assert exported["provision"]["type"] == "deny"  # CareChain's default deny: the opt-in pattern
    assert exported["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert f.consent_to_fhir(consent_pb2.ConsentRecord(consent_id="x", policy=first.policy,
                                                       status=consent_pb2.CONSENT_STATUS_REVOKED))["status"] == \
        "inactive"


@pytest.mark.parametrize("category", [v for v in c.SensitivityCategory.values() if v])
def test_every_category_round_trips_through_its_security_label(category: int) -> None:
    # A substance-use permit must name its recipient (42 CFR Part 2), so every case names one.
    policy = p.ConsentPolicy(provisions=[p.Provision(type=p.PROVISION_TYPE_PERMIT, purposes=[c.PURPOSE_OF_USE_TREAT],
                                                     actors=[p.ConsentActor(practitioner_id="prac-1")],
                                                     categories=[category])])
    assert f.consent_from_fhir(f.policy_to_fhir(policy)).policy == policy


def test_flat_consent_is_one_provision_and_deny_all_is_a_deny() -> None:
    flat = f.consent_from_fhir(consent({"type": "permit", "actor": [practitioner("prac-1")],
                                        "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}],
                                        "period": {"start": "2025-01-01"}}))
    assert len(flat.policy.provisions) == 1 and flat.policy.provisions[0].period.start_ms == 1_735_689_600_000
    assert f.consent_from_fhir(f.policy_to_fhir(flat.policy)).policy == flat.policy
    deny_all = f.consent_from_fhir(consent({"type": "deny"}))
    assert [x.type for x in deny_all.policy.provisions] == [p.PROVISION_TYPE_DENY]
    assert f.consent_from_fhir(f.policy_to_fhir(deny_all.policy)).policy == deny_all.policy


def _broken(path: list, value) -> dict:
    resource = copy.deepcopy(RICH)
    node = resource
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return resource


ERRORS = [
    ("not a Consent", {"resourceType": "Patient"}, "Consent.resourceType"),
    ("not FHIR (wrong type)", _broken(["status"], 5), "Consent.status"),
    ("scope missing", _broken(["scope"], None), "Consent.scope"),
    ("not a privacy consent", _broken(["scope"], {"coding": [{"system": f.CONSENT_SCOPE, "code": "treatment"}]}),
     "Consent.scope"),
    ("no provision", _broken(["provision"], None), "Consent.provision"),
    ("unknown purpose", _broken(["provision", "provision", 0, "purpose", 1], {"system": f.ACT_REASON, "code": "X"}),
     "Consent.provision.provision[0].purpose[1]"),
    ("unknown action", _broken(["provision", "provision", 0, "action", 0],
                               {"coding": [{"system": f.CONSENT_ACTION, "code": "collect"}]}),
     "Consent.provision.provision[0].action[0]"),
    ("unknown label", _broken(["provision", "provision", 1, "securityLabel", 0], {"system": f.ACT_CODE, "code": "R"}),
     "Consent.provision.provision[1].securityLabel[0]"),
    ("patient as actor", _broken(["provision", "provision", 0, "actor", 0, "reference"], {"reference": "Patient/1"}),
     "Consent.provision.provision[0].actor[0].reference"),
    ("code without a coding", _broken(["provision", "provision", 1, "code"], [{"text": "x"}]),
     "Consent.provision.provision[1].code[0]"),
    ("code coding without a system", _broken(["provision", "provision", 1, "code"], [{"coding": [{"code": "1"}]}]),
     "Consent.provision.provision[1].code[0].coding[0]"),
    ("type missing", _broken(["provision", "provision", 1, "type"], None), "Consent.provision.provision[1].type"),
    ("top-level permit without purpose", _broken(["provision", "provision", 2, "purpose"], None),
     "Consent.provision.provision[2].purpose"),
    ("bad period", _broken(["provision", "provision", 0, "dataPeriod"], {"start": "2024", "end": "2023"}),
     "Consent.provision.provision[0].dataPeriod.end"),
    ("class not a resource type", _broken(["provision", "provision", 0, "class", 0], {"system": "x", "code": "y"}),
     "Consent.provision.provision[0].class[0]"),
]


@pytest.mark.parametrize(("resource", "field"), [(r, e) for _, r, e in ERRORS], ids=[n for n, _, _ in ERRORS])
def test_errors_name_the_fhir_element(resource: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        f.consent_from_fhir(resource)
    assert raised.value.field == field, raised.value.message


def test_invalid_json_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="^Consent: is not valid JSON"):
        f.consent_from_fhir(b"{nope")


# --- FHIR dates and the clinical date of a record --------------------------------------------------------

@pytest.mark.parametrize(("value", "start", "end"), [
    ("2023", "2023-01-01", "2023-12-31"),
    ("2023-02", "2023-02-01", "2023-02-28"),
    ("2024-02-29", "2024-02-29", "2024-02-29"),
    ("2023-05-02T10:00:00Z", "2023-05-02T10:00:00Z", "2023-05-02T10:00:00Z"),
    ("2023-05-02T10:00:00.25+02:00", "2023-05-02T08:00:00.250Z", "2023-05-02T08:00:00.259Z"),
    ("1950-07-04", "1950-07-04", "1950-07-04"),
])
def test_fhir_dates_round_trip_with_their_precision(value: str, start: str, end: str) -> None:
    start_ms, end_ms = fhir_time_range(value)
    assert (fhir_date_ms(start_ms), fhir_date_ms(end_ms, end=True)) == (start, end)
    assert fhir_time_range(fhir_date_ms(start_ms))[0] == start_ms
    assert fhir_time_range(fhir_date_ms(end_ms, end=True))[1] == end_ms


@pytest.mark.parametrize(("resource", "day"), [
    ({"resourceType": "Condition", "onsetDateTime": "2020-01-02T23:11:12-05:00"}, "2020-01-03"),
    ({"resourceType": "Condition", "recordedDate": "2019-06-01"}, "2019-06-01"),
    ({"resourceType": "Observation", "effectivePeriod": {"start": "2021-03-04T05:06:07Z"}}, "2021-03-04"),
    ({"resourceType": "Encounter", "period": {"start": "1987-11-19T00:22:16-05:00"}}, "1987-11-19"),
    ({"resourceType": "DocumentReference", "date": "2001-01-01T00:00:00Z",
      "context": {"period": {"start": "2000-12-31T10:00:00Z"}}}, "2000-12-31"),
    ({"resourceType": "Procedure", "performedPeriod": {"start": "2015-05-05T10:00:00Z"}}, "2015-05-05"),
    ({"resourceType": "MedicationRequest", "authoredOn": "2018-08-08T08:08:08Z"}, "2018-08-08"),
    ({"resourceType": "Immunization", "occurrenceDateTime": "2022-10-10T10:00:00Z"}, "2022-10-10"),
])
def test_clinical_date_is_the_utc_day_of_the_content(resource: dict, day: str) -> None:
    ms = clinical_date_ms(resource)
    assert ms % 86_400_000 == 0 and fhir_date_ms(ms) == day


def test_resources_without_a_clinical_date_have_none() -> None:
    assert clinical_date_ms({"resourceType": "Patient", "birthDate": "1970-01-01"}) == 0
    assert clinical_date_ms({"resourceType": "Condition"}) == 0
    assert clinical_date_ms({"resourceType": "Condition", "onsetDateTime": "garbage"}) == 0


DOCUMENTED = consent(
    {"type": "permit", "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}],
     "actor": [practitioner("prac-1"),
               {"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "AUT"}]},
                "reference": {"reference": "Practitioner/prac-7"}},
               {"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "CST"}]},
                "reference": {"reference": "Organization/org-b"}}],
     "data": [{"meaning": "instance", "reference": {"reference": "DocumentReference/rec-1"}}],
     "provision": [{"type": "deny", "purpose": [{"system": f.ACT_REASON, "code": "CLINTRCH"}]}]},
    dateTime="2025-01-02T10:00:00+01:00",
    performer=[{"reference": "RelatedPerson/psn-guardian"}],
    organization=[{"reference": "Organization/org-a"}],
    policyRule={"coding": [{"system": f.ACT_CODE, "code": "OPTOUT"}]},
    policy=[{"authority": "https://www.hhs.gov", "uri": "https://www.ecfr.gov/current/title-42/part-2"}],
    sourceAttachment={"contentType": "application/pdf", "url": "https://docs.example/consent-17.pdf",
                      "hash": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "title": "Signed consent", "creation": "2025-01-02",
                      "size": 1024},
    verification=[{"verified": True, "verifiedWith": {"reference": "RelatedPerson/psn-guardian"},
                   "verificationDate": "2025-01-03"}],
)


def test_export_keeps_every_documentary_element_as_given() -> None:
    imported = f.consent_from_fhir(DOCUMENTED)
    record = consent_pb2.ConsentRecord(consent_id="5b7d8f5e-0a43-4a8e-9a0e-3e7a2a1b2c3d", patient_id="pat-1",
                                       policy=imported.policy, status=consent_pb2.CONSENT_STATUS_ACTIVE,
                                       granted_at_ms=1_700_000_000_123)
    exported = f.consent_to_fhir(record)
    for element in ("dateTime", "performer", "organization", "policyRule", "policy", "sourceAttachment",
                    "verification"):
        assert exported[element] == DOCUMENTED[element], element
    assert exported["policyRule"]["coding"][0]["code"] == "OPTOUT"  # OPTOUT stays OPTOUT
    permit = exported["provision"]["provision"][0]
    assert [a["role"]["coding"][0]["code"] for a in permit["actor"]] == ["IRCP", "AUT", "CST"]
    assert permit["data"] == DOCUMENTED["provision"]["data"]
    assert f.consent_from_fhir(exported).policy == imported.policy


def test_actor_roles_and_data_are_read_with_their_meaning() -> None:
    provision = f.consent_from_fhir(DOCUMENTED).policy.provisions[0]
    assert [(a.role, a.WhichOneof("actor")) for a in provision.actors] == [
        (p.ACTOR_ROLE_UNSPECIFIED, "practitioner_id"), (p.ACTOR_ROLE_AUTHOR, "practitioner_id"),
        (p.ACTOR_ROLE_CUSTODIAN, "organization_id")]
    assert [(d.resource_type, d.record_id) for d in provision.data] == [("DocumentReference", "rec-1")]
    assert list(provision.provisions[0].purposes) == [c.PURPOSE_OF_USE_CLINTRCH]


# --- a specialty actor's organisation scope (SPECIALTY_SCOPE_EXTENSION) ---------------------------------------

def _scope(*values: dict) -> list[dict]:
    return [{"url": f.SPECIALTY_SCOPE_EXTENSION, **value} for value in values]


ANY_ORGANIZATION = {"valueCode": f.ANY_MEMBER_ORGANIZATION}


def _organization(oid: str) -> dict:
    return {"valueReference": {"reference": f"Organization/{oid}"}}


def _psychiatry(extension: list[dict] | None = None, actor: dict | None = None) -> dict:
    node = actor or {"role": {"coding": [{"system": f.SPECIALTY_SYSTEM, "code": "psychiatry"}]},
                     "reference": {"type": "PractitionerRole", "display": "psychiatrists"}}
    if extension is not None:
        node = {**node, "extension": extension}
    return consent({"type": "permit", "actor": [node], "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}]})


@pytest.mark.parametrize(("extension", "any_organization", "organizations"), [
    (None, False, []),
    (_scope(ANY_ORGANIZATION), True, []),
    (_scope(_organization("org-b")), False, ["org-b"]),
    (_scope(_organization("org-b"), _organization("org-c")), False, ["org-b", "org-c"]),
], ids=["default", "any member organisation", "one organisation", "two organisations"])
def test_specialty_scope_round_trips(extension, any_organization: bool, organizations: list[str]) -> None:
    policy = f.consent_from_fhir(_psychiatry(extension)).policy
    actor = policy.provisions[0].actors[0]
    assert (actor.specialty, actor.any_organization, list(actor.specialty_organization_ids)) == (
        "psychiatry", any_organization, organizations)
    exported = f.policy_to_fhir(policy)
    written = exported["provision"]["provision"][0]["actor"][0]
    assert written.get("extension") == extension  # as given, in order, and none for the default scope
    assert f.consent_from_fhir(json.dumps(exported)).policy == policy


def test_specialty_scope_exports_from_the_proto() -> None:
    for actor in (p.ConsentActor(specialty="psychiatry", any_organization=True),
                  p.ConsentActor(specialty="psychiatry", specialty_organization_ids=["org-b", "org-c"])):
        policy = p.ConsentPolicy(provisions=[p.Provision(type=p.PROVISION_TYPE_PERMIT, actors=[actor],
                                                         purposes=[c.PURPOSE_OF_USE_TREAT])])
        assert f.consent_from_fhir(f.consent_json(consent_pb2.ConsentRecord(policy=policy))).policy == policy


ACTOR = "Consent.provision.actor[0]"
SCOPE_ERRORS = [
    ("on a practitioner actor", _psychiatry(_scope(_organization("org-b")), practitioner("prac-1")),
     f"{ACTOR}.extension"),
    ("any on an organisation actor", _psychiatry(_scope(ANY_ORGANIZATION), {
        "role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "IRCP"}]},
        "reference": {"reference": "Organization/org-a"}}), f"{ACTOR}.extension"),
    ("both forms", _psychiatry(_scope(_organization("org-b"), ANY_ORGANIZATION)), f"{ACTOR}.extension"),
    ("both values in one", _psychiatry(_scope({**ANY_ORGANIZATION, **_organization("org-b")})),
     f"{ACTOR}.extension[0]"),
    ("no value", _psychiatry(_scope({})), f"{ACTOR}.extension[0]"),
    ("any twice", _psychiatry(_scope(ANY_ORGANIZATION, ANY_ORGANIZATION)), f"{ACTOR}.extension[1]"),
    ("unknown code", _psychiatry(_scope({"valueCode": "any"})), f"{ACTOR}.extension[0].valueCode"),
    ("not an organisation", _psychiatry(_scope(_organization("org-b"), {"valueReference": {
        "reference": "Practitioner/prac-1"}})), f"{ACTOR}.extension[1].valueReference.reference"),
    ("a reference without an id", _psychiatry(_scope({"valueReference": {"display": "Clinic B"}})),
     f"{ACTOR}.extension[0].valueReference.display"),
    ("an empty reference", _psychiatry(_scope({"valueReference": {"reference": "Organization/"}})),
     f"{ACTOR}.extension[0].valueReference.reference"),
    ("another value type", _psychiatry(_scope({"valueString": "org-b"})), f"{ACTOR}.extension[0].valueString"),
    ("a nested extension", _psychiatry(_scope({**ANY_ORGANIZATION, "extension": _scope(ANY_ORGANIZATION)})),
     f"{ACTOR}.extension[0].extension"),
    ("another extension on the actor", _psychiatry([*_scope(ANY_ORGANIZATION),
                                                    {"url": "https://example.org/x", "valueCode": "y"}]),
     f"{ACTOR}.extension[1]"),
    ("the scope extension elsewhere", {**_psychiatry(), "extension": _scope(ANY_ORGANIZATION)}, "Consent.extension"),
    ("the scope extension on the provision", consent({
        "type": "permit", "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}],
        "extension": _scope(ANY_ORGANIZATION)}), "Consent.provision.extension"),
    ("the scope extension on the reference", _psychiatry(actor={
        "role": {"coding": [{"system": f.SPECIALTY_SYSTEM, "code": "psychiatry"}]},
        "reference": {"display": "psychiatrists", "extension": _scope(ANY_ORGANIZATION)}}),
     f"{ACTOR}.reference.extension"),
]


@pytest.mark.parametrize(("resource", "field"), [(r, e) for _, r, e in SCOPE_ERRORS],
                         ids=[n for n, _, _ in SCOPE_ERRORS])
def test_specialty_scope_refusals_name_the_element(resource: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        f.consent_from_fhir(resource)
    assert raised.value.field == field, raised.value.message
