"""The consent policy, table-driven: one row per case (consents, request, expected effect and reason).

Consents are written as FHIR R4 Consent resources and read through the real import
(``consent_from_fhir``), so every row also checks that the FHIR meaning survives into the decision.
Decisions go through ``decide`` with the break-glass rules in force (emergency-medicine, 4 h window).
A row expecting INVALID names the FHIR element the import must refuse.

The default request: practitioner prac-1 (organisation org-a, specialty oncology) asks to ACCESS
record rec-1 (a Condition written by prac-7 of org-b, clinical date 2023-06-01, category NORMAL) of
patient pat-1 (registered by org-a) for TREAT, on 2025-06-01; break-glass only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.consent import fhir_consent as f
from carechain.consent.policy import AccessRequest, BreakGlassRules, BreakGlassWindow, decide
from carechain.consent.v1 import consent_pb2
from carechain.core.errors import InvalidArgument
from carechain.core.fhir import fhir_time_range

PATIENT = "pat-1"
NOW = fhir_time_range("2025-06-01T12:00:00Z")[0]
HOUR = 3_600_000
RULES = BreakGlassRules(frozenset({"emergency-medicine"}), 4 * HOUR)
PT = f.PARTICIPATION_TYPE

LABELS = {"N": (f.CONFIDENTIALITY, "N"), "PSY": (f.ACT_CODE, "PSY"), "ETH": (f.ACT_CODE, "ETH"),
          "SUD": (f.ACT_CODE, "SUD"), "HIV": (f.ACT_CODE, "HIV"), "STD": (f.ACT_CODE, "STD"),
          "SEX": (f.ACT_CODE, "SEX"), "GDIS": (f.ACT_CODE, "GDIS"), "SDV": (f.ACT_CODE, "SDV"),
          "ETHUD": (f.ACT_CODE, "ETHUD"), "ONC": (f.SENSITIVITY_SYSTEM, "ONCOLOGY")}
CATEGORIES = {"NORMAL": c.SENSITIVITY_CATEGORY_NORMAL, "MENTAL": c.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
              "SUD": c.SENSITIVITY_CATEGORY_SUBSTANCE_USE, "HIV": c.SENSITIVITY_CATEGORY_HIV_STI,
              "REPRO": c.SENSITIVITY_CATEGORY_REPRODUCTIVE, "GENETIC": c.SENSITIVITY_CATEGORY_GENETIC,
              "VIOLENCE": c.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE, "ONC": c.SENSITIVITY_CATEGORY_ONCOLOGY,
              "ALCOHOL": c.SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER,
              "OPIOID": c.SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER}


# --- FHIR builders ------------------------------------------------------------------------------------

def actor(reference: str, role: str = "IRCP") -> dict[str, Any]:
    return {"role": {"coding": [{"system": PT, "code": role}]}, "reference": {"reference": reference}}


def specialty(name: str, *organizations: str, any_organization: bool = False) -> dict[str, Any]:
    """A specialty actor; its organisation scope (SPECIALTY_SCOPE_EXTENSION) names organizations or any."""
    node: dict[str, Any] = {"role": {"coding": [{"system": f.SPECIALTY_SYSTEM, "code": name}]},
                            "reference": {"type": "PractitionerRole", "display": f"any {name} practitioner"}}
    scope = [{"url": f.SPECIALTY_SCOPE_EXTENSION, "valueCode": f.ANY_MEMBER_ORGANIZATION}] if any_organization else []
    scope += [{"url": f.SPECIALTY_SCOPE_EXTENSION, "valueReference": {"reference": f"Organization/{o}"}}
              for o in organizations]
    if scope:
        node["extension"] = scope
    return node


def rule(kind: str, *, actors=(), purposes=("TREAT",), labels=(), actions=(), period=None, data_period=None,
         classes=(), data=(), nested=(), **extra) -> dict[str, Any]:
    """A FHIR Consent.provision; actors are Practitioner/.. or Organization/.. ids or ready actor dicts."""
    node: dict[str, Any] = {"type": kind}
    if actors:
        node["actor"] = [a if isinstance(a, dict) else actor(a) for a in actors]
    if purposes:
        node["purpose"] = [{"system": f.ACT_REASON, "code": code} for code in purposes]
    if labels:
        node["securityLabel"] = [{"system": LABELS[x][0], "code": LABELS[x][1]} for x in labels]
    if actions:
        node["action"] = [{"coding": [{"system": f.CONSENT_ACTION, "code": code}]} for code in actions]
    if period:
        node["period"] = dict(zip(("start", "end"), period, strict=True))
    if data_period:
        node["dataPeriod"] = dict(zip(("start", "end"), data_period, strict=True))
    if classes:
        node["class"] = [{"system": f.RESOURCE_TYPES, "code": t} for t in classes]
    if data:
        node["data"] = [{"meaning": "instance", "reference": {"reference": ref}} for ref in data]
    if nested:
        node["provision"] = list(nested)
    node.update(extra)
    return node


def permit(**kw) -> dict[str, Any]:
    return rule("permit", **kw)


def deny(**kw) -> dict[str, Any]:
    kw.setdefault("purposes", ())
    return rule("deny", **kw)


@dataclass(frozen=True)
class C:
    """One consent of the row: its FHIR provisions (nested in the opt-in root) and its ledger status."""

    provisions: tuple[dict[str, Any], ...]
    period: tuple[str, str] | None = None
    revoked: bool = False
    patient: str = PATIENT
    extra: dict[str, Any] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        root: dict[str, Any] = {"type": "deny", "provision": list(self.provisions)}
        if self.period:
            root["period"] = dict(zip(("start", "end"), self.period, strict=True))
        return {"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system": f.CONSENT_SCOPE, "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": f.LOINC, "code": "59284-0"}]}],
                "patient": {"identifier": {"system": f.PSEUDONYM_SYSTEM, "value": self.patient}},
                "provision": root, **self.extra}


def one(*provisions: dict[str, Any], **kw: Any) -> list[C]:
    return [C(tuple(provisions), **kw)]


# --- rows -----------------------------------------------------------------------------------------------

PERMIT, DENY, INVALID = "PERMIT", "DENY", "INVALID"
SCT, SCT_OID, ICD10 = "http://snomed.info/sct", "urn:oid:2.16.840.1.113883.6.96", "http://hl7.org/fhir/sid/icd-10-cm"
DIABETES, HYPERTENSION, DEPRESSION = "44054006", "38341003", "370143000"
# The record's codes as the records gateway seals them: "<canonical system>|<code>".
DIABETES_CODE, HYPERTENSION_CODE, DEPRESSION_CODE = (f"{SCT}|{x}" for x in (DIABETES, HYPERTENSION, DEPRESSION))


def concept(system: str, code: str, *more: tuple[str, str]) -> dict[str, Any]:
    """A FHIR CodeableConcept for provision.code."""
    return {"coding": [{"system": s, "code": x} for s, x in ((system, code), *more)]}


@dataclass(frozen=True)
class Row:
    name: str
    consents: list[C]
    expect: str  # PERMIT, DENY or INVALID
    detail: str = ""  # a substring of the reason, or (INVALID) the FHIR element refused
    request: dict[str, Any] = field(default_factory=dict)
    window: tuple[int, int] | None = None  # an existing break-glass window (start, end) relative to NOW
    break_glass: bool = False


# A denial never names the record's category (42 CFR 2.13(c)): the category goes to the audit trail only.
NAMED_BY_NONE = "a sensitive category of the record is named by no consent"
ANY = permit()  # any actor, TREAT, ACCESS
PSY_PERMIT = permit(labels=["PSY"])
ETH_PERMIT = permit(actors=["Practitioner/prac-1"], labels=["ETH"])

ROWS: list[Row] = [
    # Default deny and actors (recipient role).
    Row("no consent denies", [], DENY, "no active consent permits practitioner prac-1 for TREAT"),
    Row("permit for any actor", one(ANY), PERMIT, "actor any actor"),
    Row("permit names the practitioner", one(permit(actors=["Practitioner/prac-1"])), PERMIT,
        "actor practitioner prac-1"),
    Row("permit names another practitioner", one(permit(actors=["Practitioner/prac-2"])), DENY),
    Row("permit names the actor's organisation", one(permit(actors=["Organization/org-a"])), PERMIT,
        "organization org-a"),
    Row("permit names another organisation", one(permit(actors=["Organization/org-z"])), DENY),
    Row("permit names the actor's specialty", one(permit(actors=[specialty("oncology")])), PERMIT,
        "specialty oncology"),
    Row("specialty compared case-insensitively", one(permit(actors=[specialty("Oncology")])), PERMIT),
    Row("permit names another specialty", one(permit(actors=[specialty("cardiology")])), DENY),
    # A specialty actor's organisation scope (SPECIALTY_SCOPE_EXTENSION); the patient is registered by org-a.
    Row("specialty by default: a psychiatrist of the patient's organisation", one(permit(actors=[specialty(
        "psychiatry")])), PERMIT, "specialty psychiatry", {"actor_specialty": "psychiatry"}),
    Row("specialty by default: not a psychiatrist of another organisation", one(permit(actors=[specialty(
        "psychiatry")])), DENY, request={"actor_specialty": "psychiatry", "actor_organization_id": "org-b"}),
    Row("specialty scoped to another organisation: its psychiatrist", one(permit(actors=[specialty(
        "psychiatry", "org-b")])), PERMIT, "specialty psychiatry",
        {"actor_specialty": "psychiatry", "actor_organization_id": "org-b"}),
    Row("specialty scoped to another organisation: not a third organisation's", one(permit(actors=[specialty(
        "psychiatry", "org-b")])), DENY, request={"actor_specialty": "psychiatry", "actor_organization_id": "org-c"}),
    Row("specialty scoped to another organisation: not the patient's own", one(permit(actors=[specialty(
        "psychiatry", "org-b")])), DENY, request={"actor_specialty": "psychiatry"}),
    Row("specialty scoped to two organisations", one(permit(actors=[specialty("psychiatry", "org-b", "org-c")])),
        PERMIT, "specialty psychiatry", {"actor_specialty": "psychiatry", "actor_organization_id": "org-c"}),
    Row("specialty of any member organisation", one(permit(actors=[specialty("psychiatry", any_organization=True)])),
        PERMIT, "specialty psychiatry", {"actor_specialty": "psychiatry", "actor_organization_id": "org-z"}),
    Row("specialty of any member organisation: still that specialty", one(permit(actors=[specialty(
        "psychiatry", any_organization=True)])), DENY, request={"actor_organization_id": "org-z"}),
    Row("specialty scope on a practitioner actor is refused", one(permit(actors=[
        {**actor("Practitioner/prac-1"), "extension": specialty("x", "org-b")["extension"]}])), INVALID,
        "Consent.provision.provision[0].actor[0].extension"),
    Row("specialty scope: any and named organisations together are refused", one(permit(actors=[specialty(
        "psychiatry", "org-b", any_organization=True)])), INVALID, "Consent.provision.provision[0].actor[0].extension"),
    Row("primary recipient role is a recipient", one(permit(actors=[actor("Practitioner/prac-1", "PRCP")])),
        PERMIT, "practitioner prac-1"),
    Row("one of several actors matches", one(permit(actors=["Practitioner/prac-2", "Organization/org-a"])),
        PERMIT),

    # securityLabel x record category: labels limit what a provision covers.
    Row("no label: normal record", one(ANY), PERMIT),
    Row("no label: mental-health record stays closed", one(ANY), DENY,
        NAMED_BY_NONE, {"categories": ["MENTAL"]}),
    Row("no label: substance-use record stays closed", one(ANY), DENY, NAMED_BY_NONE, {"categories": ["SUD"]}),
    Row("no label: HIV record stays closed", one(ANY), DENY, NAMED_BY_NONE, {"categories": ["HIV"]}),
    Row("no label: mixed sensitive record stays closed", one(ANY), DENY, "", {"categories": ["MENTAL", "HIV"]}),
    Row("N label: normal record", one(permit(labels=["N"])), PERMIT),
    Row("N label: mental-health record", one(permit(labels=["N"])), DENY, "", {"categories": ["MENTAL"]}),
    Row("PSY label does not open normal data", one(PSY_PERMIT), DENY,
        "consent c-0 provision[0] is limited to security labels this record does not carry"),
    Row("PSY label opens mental-health data", one(PSY_PERMIT), PERMIT, "categories MENTAL_HEALTH",
        {"categories": ["MENTAL"]}),
    Row("PSY label: substance-use record", one(PSY_PERMIT), DENY, "", {"categories": ["SUD"]}),
    Row("PSY label: HIV record", one(PSY_PERMIT), DENY, "", {"categories": ["HIV"]}),
    Row("PSY label: mental-health and HIV record needs both named", one(PSY_PERMIT), DENY,
        NAMED_BY_NONE, {"categories": ["MENTAL", "HIV"]}),
    Row("PSY and N labels: normal record", one(permit(labels=["N", "PSY"])), PERMIT),
    Row("PSY and N labels: mental-health record", one(permit(labels=["N", "PSY"])), PERMIT, "",
        {"categories": ["MENTAL"]}),
    Row("PSY and HIV labels: mixed record", one(permit(labels=["PSY", "HIV"])), PERMIT, "",
        {"categories": ["MENTAL", "HIV"]}),
    Row("PSY and HIV labels: HIV record", one(permit(labels=["PSY", "HIV"])), PERMIT, "", {"categories": ["HIV"]}),
    Row("PSY and HIV labels: normal record", one(permit(labels=["PSY", "HIV"])), DENY),
    Row("two provisions cannot combine for one record", one(PSY_PERMIT, permit(labels=["HIV"])), DENY,
        "no single provision names all sensitive categories", {"categories": ["MENTAL", "HIV"]}),
    Row("label STD reads as HIV/STI", one(permit(labels=["STD"])), PERMIT, "", {"categories": ["HIV"]}),
    Row("label ETH opens substance use for the named recipient", one(ETH_PERMIT), PERMIT, "SUBSTANCE_USE",
        {"categories": ["SUD"]}),
    Row("label SUD reads as substance use", one(permit(actors=["Practitioner/prac-1"], labels=["SUD"])), PERMIT,
        "", {"categories": ["SUD"]}),
    Row("ETH label does not open normal data", one(ETH_PERMIT), DENY),
    # HL7 sub-labels: naming the parent (ETH) covers ETHUD and OPIOIDUD records; naming a child covers only it.
    Row("ETH label opens an alcohol use disorder record", one(ETH_PERMIT), PERMIT, "",
        {"categories": ["SUD", "ALCOHOL"]}),
    Row("ETH label opens an opioid use disorder record", one(ETH_PERMIT), PERMIT, "",
        {"categories": ["SUD", "OPIOID"]}),
    Row("ETHUD label opens an alcohol use disorder record", one(permit(actors=["Practitioner/prac-1"],
        labels=["ETH", "ETHUD"])), PERMIT, "", {"categories": ["SUD", "ALCOHOL"]}),
    Row("ETHUD label alone leaves other substance-use records closed", one(permit(
        actors=["Practitioner/prac-1"], labels=["ETHUD"])), DENY, "", {"categories": ["SUD", "OPIOID"]}),
    Row("PSY label does not open an alcohol use disorder record", one(PSY_PERMIT), DENY, "",
        {"categories": ["SUD", "ALCOHOL"]}),
    Row("oncology label opens oncology", one(permit(labels=["ONC"])), PERMIT, "", {"categories": ["ONC"]}),
    Row("oncology label does not open normal data", one(permit(labels=["ONC"])), DENY),
    Row("SEX label opens reproductive", one(permit(labels=["SEX"])), PERMIT, "", {"categories": ["REPRO"]}),
    Row("SEX label: genetic record", one(permit(labels=["SEX"])), DENY, "", {"categories": ["GENETIC"]}),
    Row("GDIS label opens genetic", one(permit(labels=["GDIS"])), PERMIT, "", {"categories": ["GENETIC"]}),
    Row("SDV label opens violence and abuse", one(permit(labels=["SDV"])), PERMIT, "",
        {"categories": ["VIOLENCE"]}),
    Row("SDV label: mental-health record", one(permit(labels=["SDV"])), DENY, "", {"categories": ["MENTAL"]}),
    Row("record without categories counts as normal", one(permit(labels=["N"])), PERMIT, "",
        {"categories": []}),

    # Denies by label.
    Row("deny PSY beats a PSY permit", one(permit(labels=["N", "PSY"]), deny(labels=["PSY"])), DENY,
        "denied by consent", {"categories": ["MENTAL"]}),
    Row("deny PSY leaves normal data open", one(permit(labels=["N", "PSY"]), deny(labels=["PSY"])), PERMIT),
    Row("deny HIV does not touch a normal record", one(ANY, deny(labels=["HIV"])), PERMIT),
    Row("deny without labels covers everything", one(ANY, deny()), DENY, "denied by consent c-0 provision[1]"),
    Row("deny for one practitioner only", one(ANY, deny(actors=["Practitioner/prac-9"])), PERMIT),
    Row("deny for the asking practitioner", one(ANY, deny(actors=["Practitioner/prac-1"])), DENY,
        "actor practitioner prac-1"),

    # Actions.
    Row("permit without action: ACCESS", one(ANY), PERMIT),
    Row("permit without action does not DISCLOSE", one(ANY), DENY, "to DISCLOSE", {"action": "DISCLOSE"}),
    Row("permit without action does not CORRECT", one(ANY), DENY, "", {"action": "CORRECT"}),
    Row("permit disclose: DISCLOSE", one(permit(actions=["disclose"])), PERMIT, "action DISCLOSE",
        {"action": "DISCLOSE"}),
    Row("permit disclose only: ACCESS", one(permit(actions=["disclose"])), DENY),
    Row("permit access and disclose: DISCLOSE", one(permit(actions=["access", "disclose"])), PERMIT, "",
        {"action": "DISCLOSE"}),
    Row("deny without action covers DISCLOSE", one(permit(actions=["disclose"]), deny()), DENY, "denied by",
        {"action": "DISCLOSE"}),
    Row("deny without action covers CORRECT", one(permit(actions=["correct"]), deny()), DENY, "denied by",
        {"action": "CORRECT"}),
    Row("deny of ACCESS leaves DISCLOSE", one(permit(actions=["disclose"]), deny(actions=["access"])), PERMIT, "",
        {"action": "DISCLOSE"}),
    Row("deny of DISCLOSE leaves ACCESS", one(ANY, deny(actions=["disclose"])), PERMIT),
    Row("deny of DISCLOSE denies DISCLOSE", one(permit(actions=["disclose"]), deny(actions=["disclose"])), DENY,
        "", {"action": "DISCLOSE"}),

    # Purpose of use: the HL7 v3 ActReason hierarchy.
    Row("TREAT covers TREAT", one(ANY), PERMIT, "purpose TREAT"),
    Row("TREAT covers ETREAT", one(ANY), PERMIT, "purpose ETREAT", {"purpose": "ETREAT"}),
    Row("TREAT covers BTG (via ETREAT)", one(ANY), PERMIT, "", {"purpose": "BTG"}),
    Row("TREAT covers COC", one(ANY), PERMIT, "", {"purpose": "COC"}),
    Row("TREAT covers POPHLTH", one(ANY), PERMIT, "", {"purpose": "POPHLTH"}),
    Row("TREAT does not cover HPAYMT", one(ANY), DENY, "for HPAYMT", {"purpose": "HPAYMT"}),
    Row("ETREAT does not cover TREAT", one(permit(purposes=["ETREAT"])), DENY),
    Row("ETREAT covers BTG", one(permit(purposes=["ETREAT"])), PERMIT, "", {"purpose": "BTG"}),
    Row("ETREAT does not cover COC", one(permit(purposes=["ETREAT"])), DENY, "", {"purpose": "COC"}),
    Row("HRESCH covers CLINTRCH", one(permit(purposes=["HRESCH"])), PERMIT, "", {"purpose": "CLINTRCH"}),
    Row("CLINTRCH does not cover HRESCH", one(permit(purposes=["CLINTRCH"])), DENY, "", {"purpose": "HRESCH"}),
    Row("HPAYMT covers COVAUTH", one(permit(purposes=["HPAYMT"])), PERMIT, "", {"purpose": "COVAUTH"}),
    Row("HOPERAT covers PATADMIN", one(permit(purposes=["HOPERAT"])), PERMIT, "", {"purpose": "PATADMIN"}),
    Row("PATRQT covers FAMRQT", one(permit(purposes=["PATRQT"])), PERMIT, "", {"purpose": "FAMRQT"}),
    Row("PATRQT covers PWATRNY", one(permit(purposes=["PATRQT"])), PERMIT, "", {"purpose": "PWATRNY"}),
    Row("deny TREAT covers ETREAT", one(ANY, deny(purposes=["TREAT"])), DENY, "denied by",
        {"purpose": "ETREAT"}),
    Row("deny ETREAT leaves TREAT", one(ANY, deny(purposes=["ETREAT"])), PERMIT),
    Row("deny ETREAT covers ETREAT", one(ANY, deny(purposes=["ETREAT"])), DENY, "", {"purpose": "ETREAT"}),
    Row("deny HRESCH does not touch TREAT", one(ANY, deny(purposes=["HRESCH"])), PERMIT),

    # actor.role: author and custodian restrict the data, not the recipient.
    Row("permit data authored by prac-7", one(permit(actors=[actor("Practitioner/prac-7", "AUT")])), PERMIT,
        "records authored by practitioner prac-7"),
    Row("permit data authored by prac-8: prac-7's record", one(permit(actors=[actor("Practitioner/prac-8", "AUT")])),
        DENY),
    Row("withhold data authored by prac-7", one(ANY, deny(actors=[actor("Practitioner/prac-7", "AUT")])), DENY,
        "records authored by practitioner prac-7"),
    Row("withhold data authored by prac-7: another author's record",
        one(ANY, deny(actors=[actor("Practitioner/prac-7", "AUT")])), PERMIT, "", {"record_author_id": "prac-8"}),
    Row("withhold data authored by prac-7 is not deny prac-7 access",
        one(ANY, deny(actors=[actor("Practitioner/prac-7", "AUT")])), PERMIT, "",
        {"actor_id": "prac-7", "record_author_id": "prac-8"}),
    Row("deny prac-7 access is not withhold prac-7's data", one(ANY, deny(actors=["Practitioner/prac-7"])), PERMIT),
    Row("deny prac-7 access: prac-7 asks", one(ANY, deny(actors=["Practitioner/prac-7"])), DENY, "",
        {"actor_id": "prac-7"}),
    Row("withhold data held by custodian org-b", one(ANY, deny(actors=[actor("Organization/org-b", "CST")])),
        DENY, "records held by organization org-b"),
    Row("custodian org-b: record held by org-c", one(ANY, deny(actors=[actor("Organization/org-b", "CST")])),
        PERMIT, "", {"record_organization_id": "org-c"}),
    Row("custodian org-b is not deny org-b's staff", one(ANY, deny(actors=[actor("Organization/org-b", "CST")])),
        PERMIT, "", {"actor_organization_id": "org-b", "record_organization_id": "org-c"}),
    Row("author organisation covers its records", one(permit(actors=[actor("Organization/org-b", "AUT")])), PERMIT,
        "records authored by organization org-b"),
    Row("recipient and author in one provision",
        one(permit(actors=["Practitioner/prac-1", actor("Practitioner/prac-7", "AUT")])), PERMIT,
        "practitioner prac-1; records authored by practitioner prac-7"),
    Row("recipient and author: another recipient",
        one(permit(actors=["Practitioner/prac-1", actor("Practitioner/prac-7", "AUT")])), DENY, "",
        {"actor_id": "prac-2"}),
    Row("recipient and author: another author",
        one(permit(actors=["Practitioner/prac-1", actor("Practitioner/prac-7", "AUT")])), DENY, "",
        {"record_author_id": "prac-8"}),
    Row("a custodian is an organisation", one(deny(actors=[actor("Practitioner/prac-7", "CST")])), INVALID,
        "Consent.provision.provision[0].actor[0].role"),
    Row("unknown actor role refused", one(permit(actors=[actor("Practitioner/prac-1", "INF")])), INVALID,
        "Consent.provision.provision[0].actor[0].role"),

    # provision.data: specific records.
    Row("permit one record", one(permit(data=["Condition/rec-1"])), PERMIT, "record rec-1 named"),
    Row("permit one record: another record", one(permit(data=["Condition/rec-1"])), DENY, "",
        {"record_id": "rec-2"}),
    Row("permit one record: type must agree", one(permit(data=["Observation/rec-1"])), DENY),
    Row("withhold one record", one(ANY, deny(data=["Condition/rec-1"])), DENY, "denied by"),
    Row("withhold one record: other records open", one(ANY, deny(data=["Condition/rec-1"])), PERMIT, "",
        {"record_id": "rec-2"}),
    Row("data meaning related refused",
        one(dict(permit(), data=[{"meaning": "related", "reference": {"reference": "Condition/rec-1"}}])),
        INVALID, "Consent.provision.provision[0].data[0].meaning"),
    Row("data reference must be a record", one(dict(permit(), data=[{"meaning": "instance", "reference": {
        "reference": "urn:uuid:1"}}])), INVALID, "Consent.provision.provision[0].data[0].reference"),

    # Periods, data periods, resource types.
    Row("provision period in force", one(permit(period=("2025-01-01", "2025-12-31"))), PERMIT),
    Row("provision period over", one(permit(period=("2020-01-01", "2024-12-31"))), DENY),
    Row("provision period not started", one(permit(period=("2026-01-01", "2026-12-31"))), DENY),
    Row("consent period over", one(ANY, period=("2020-01-01", "2024-12-31")), DENY,
        "consent c-0 is not in force at this time"),
    Row("data period contains the record", one(permit(data_period=("2023", "2023"))), PERMIT, "records dated"),
    Row("data period excludes the record", one(permit(data_period=("2023", "2023"))), DENY, "",
        {"data_date_ms": fhir_time_range("2021-03-04")[0]}),
    Row("data period: undated record never matches a permit", one(permit(data_period=("2023", "2023"))), DENY, "",
        {"data_date_ms": 0}),
    Row("deny by data period hides the period", one(ANY, deny(data_period=("2023", "2023"))), DENY),
    Row("deny by data period: other years open", one(ANY, deny(data_period=("2023", "2023"))), PERMIT, "",
        {"data_date_ms": fhir_time_range("2021-03-04")[0]}),
    Row("deny by data period: undated record open", one(ANY, deny(data_period=("2023", "2023"))), PERMIT, "",
        {"data_date_ms": 0}),
    Row("class Condition: Condition", one(permit(classes=["Condition"])), PERMIT, "types Condition"),
    Row("class Condition: Observation", one(permit(classes=["Condition"])), DENY, "",
        {"resource_type": "Observation"}),

    # Nested provisions are exceptions.
    Row("nested deny excepts one practitioner", one(permit(nested=[deny(actors=["Practitioner/prac-9"])])), DENY,
        "provision[0].provision[0]", {"actor_id": "prac-9"}),
    Row("nested deny: others permitted", one(permit(nested=[deny(actors=["Practitioner/prac-9"])])), PERMIT),
    Row("nested permit names PSY", one(permit(nested=[permit(labels=["PSY"], purposes=())])), PERMIT,
        "provision[0].provision[0]", {"categories": ["MENTAL"]}),
    Row("nested provision cannot widen its parent's labels",
        one(permit(labels=["N"], nested=[permit(labels=["PSY"], purposes=())])), DENY, "",
        {"categories": ["MENTAL"]}),
    Row("deny with a nested permit exception", one(deny(nested=[permit(actors=["Practitioner/prac-1"])])), PERMIT,
        "provision[0].provision[0]"),
    Row("deny with a nested permit: others denied", one(deny(nested=[permit(actors=["Practitioner/prac-1"])])), DENY,
        "", {"actor_id": "prac-2"}),

    # Several consents.
    Row("deny in one consent beats a permit in another", one(ANY) + one(deny()), DENY, "denied by"),
    Row("permit in a second consent", one(permit(actors=["Practitioner/prac-2"])) + one(ANY), PERMIT,
        "consent c-1"),
    Row("revoked consent never permits", one(ANY, revoked=True), DENY, "consent c-0 was revoked"),
    Row("another patient's consent never applies", one(ANY, patient="pat-2"), DENY, "no active consent"),

    # Break-glass: only when the request explicitly asks for it (GetRecord/Decide break_glass + reason).
    Row("ETREAT without an explicit break-glass request is no break-glass", [], DENY, "no active consent",
        {"actor_specialty": "emergency-medicine", "purpose": "ETREAT"}),
    Row("break-glass: emergency physician, ETREAT, normal data", [], PERMIT, "break-glass: emergency access",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT"}, break_glass=True),
    Row("break-glass never opens sensitive data", [], DENY, "break-glass never opens sensitive categories",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT", "categories": ["MENTAL"]}),
    Row("break-glass needs an emergency specialty", [], DENY, "break-glass needs purpose ETREAT",
        {"break_glass": True, "purpose": "ETREAT"}),
    Row("break-glass needs ETREAT", [], DENY, "no active consent",
        {"break_glass": True, "actor_specialty": "emergency-medicine"}),
    Row("break-glass only for ACCESS", [], DENY, "",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT", "action": "DISCLOSE"}),
    Row("break-glass overrides a deny for normal data", one(deny()), PERMIT, "consent alone: denied by",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT"}, break_glass=True),
    Row("break-glass inside an open window", [], PERMIT, "",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT"},
        window=(-HOUR, 3 * HOUR), break_glass=True),
    Row("break-glass window ended", [], DENY, "break-glass window of practitioner prac-1 ended",
        {"break_glass": True, "actor_specialty": "emergency-medicine", "purpose": "ETREAT"}, window=(-5 * HOUR, -HOUR)),
    Row("consent that permits ETREAT is no break-glass", one(ANY), PERMIT, "permitted by",
        {"actor_specialty": "emergency-medicine", "purpose": "ETREAT"}),

    # 42 CFR Part 2: a substance-use permit names its recipient and purpose.
    Row("Part 2: open substance-use permit refused", one(permit(labels=["ETH"])), INVALID,
        "Consent.provision.provision[0].actor"),
    Row("Part 2: a specialty is not a named recipient", one(permit(actors=[specialty("oncology")], labels=["ETH"])),
        INVALID, "Consent.provision.provision[0].actor"),
    Row("Part 2: an author is not a recipient",
        one(permit(actors=[actor("Practitioner/prac-7", "AUT")], labels=["ETH"])), INVALID,
        "Consent.provision.provision[0].actor"),
    Row("Part 2: recipient named by the parent",
        one(permit(actors=["Organization/org-a"], nested=[permit(labels=["ETH"], purposes=())])), PERMIT, "",
        {"categories": ["SUD"]}),
    Row("Part 2: purpose missing on the whole chain",
        one(deny(nested=[permit(actors=["Practitioner/prac-1"], labels=["ETH"], purposes=())])), INVALID,
        "Consent.provision.provision[0].provision[0].purpose"),
    Row("Part 2: named recipient, another practitioner asks", one(ETH_PERMIT), DENY, "",
        {"actor_id": "prac-2", "categories": ["SUD"]}),
    Row("Part 2: disclosure needs the disclose action", one(ETH_PERMIT), DENY, "",
        {"categories": ["SUD"], "action": "DISCLOSE"}),
    Row("Part 2: disclosure permitted to the named recipient",
        one(permit(actors=["Practitioner/prac-1"], labels=["ETH"], actions=["disclose"])), PERMIT, "",
        {"categories": ["SUD"], "action": "DISCLOSE"}),
    Row("Part 2: a deny may stay open", one(ANY, deny(labels=["ETH"])), PERMIT),

    # provision.code: the codes of the record's primary code element (sealed in its ledger metadata).
    Row("code: permit opens a record with that code", one(permit(code=[concept(SCT, DIABETES)])), PERMIT,
        f"codes {SCT}|{DIABETES}", {"codes": [DIABETES_CODE]}),
    Row("code: permit does not open a record with another code", one(permit(code=[concept(SCT, DIABETES)])), DENY,
        "", {"codes": [HYPERTENSION_CODE]}),
    Row("code: permit does not open a record without codes", one(permit(code=[concept(SCT, DIABETES)])), DENY,
        "", {"codes": []}),
    Row("code: one of the record's codes is enough", one(permit(code=[concept(SCT, DIABETES)])), PERMIT, "",
        {"codes": [HYPERTENSION_CODE, DIABETES_CODE]}),
    Row("code: one of several codings of a concept is enough",
        one(permit(code=[concept(SCT, HYPERTENSION, (ICD10, "E11.9")), concept(SCT, "73211009")])), PERMIT, "",
        {"codes": [f"{ICD10}|E11.9"]}),
    Row("code: the SNOMED system under its OID", one(permit(code=[concept(SCT_OID, DIABETES)])), PERMIT,
        f"codes {SCT}|{DIABETES}", {"codes": [DIABETES_CODE]}),
    Row("code: the LOINC system as a bare OID", one(permit(code=[concept("2.16.840.1.113883.6.1", "4548-4")],
                                                          classes=["Observation"])), PERMIT, "",
        {"codes": ["http://loinc.org|4548-4"], "resource_type": "Observation"}),
    Row("code: no hierarchy (a parent concept does not cover its child)",
        one(permit(code=[concept(SCT, "73211009")])), DENY, "", {"codes": [DIABETES_CODE]}),
    Row("code: deny by code nested in a broad permit", one(permit(nested=[deny(code=[concept(SCT, DIABETES)])])),
        DENY, "", {"codes": [DIABETES_CODE]}),
    Row("code: deny by code nested in a broad permit, another code", one(permit(nested=[
        deny(code=[concept(SCT, DIABETES)])])), PERMIT, "actor any actor", {"codes": [HYPERTENSION_CODE]}),
    Row("code: a top-level deny by code beats a permit", one(ANY, deny(code=[concept(SCT_OID, DIABETES)])), DENY,
        "", {"codes": [DIABETES_CODE]}),
    Row("code: a top-level deny by code leaves other records", one(ANY, deny(code=[concept(SCT, DIABETES)])),
        PERMIT, "", {"codes": [HYPERTENSION_CODE]}),
    Row("code and security label: both match", one(permit(code=[concept(SCT, DEPRESSION)], labels=["PSY"])),
        PERMIT, "categories MENTAL_HEALTH", {"codes": [DEPRESSION_CODE], "categories": ["MENTAL"]}),
    Row("code and security label: the code differs", one(permit(code=[concept(SCT, DEPRESSION)], labels=["PSY"])),
        DENY, "", {"codes": [f"{SCT}|35489007"], "categories": ["MENTAL"]}),
    Row("code and security label: the label differs", one(permit(code=[concept(SCT, DEPRESSION)],
                                                                 labels=["PSY"])), DENY, "",
        {"codes": [DEPRESSION_CODE]}),
    Row("code: a sensitive record still needs its category named", one(permit(code=[concept(SCT, DEPRESSION)])),
        DENY, NAMED_BY_NONE, {"codes": [DEPRESSION_CODE], "categories": ["MENTAL"]}),
    Row("code: a nested deny by code under a label permit", one(permit(labels=["PSY"], nested=[
        deny(code=[concept(SCT, DEPRESSION)])])), DENY, "", {"codes": [DEPRESSION_CODE], "categories": ["MENTAL"]}),

    # Elements CareChain cannot enforce are refused, by path.
    Row("provision.code: a concept without a coding refused", one(permit(code=[{"text": "diabetes"}])), INVALID,
        "Consent.provision.provision[0].code[0]"),
    Row("provision.code: the text of a concept is not a rule", one(permit(code=[
        dict(concept(SCT, DIABETES), text="diabetes")])), PERMIT, "", {"codes": [DIABETES_CODE]}),
    Row("provision.code: a coding without a code refused", one(permit(code=[{"coding": [{"system": SCT}]}])),
        INVALID, "Consent.provision.provision[0].code[0].coding[0]"),
    Row("provision extension refused", one(permit(extension=[{"url": "http://x", "valueBoolean": True}])), INVALID,
        "Consent.provision.provision[0].extension"),
    Row("modifierExtension refused", one(permit(modifierExtension=[{"url": "http://x", "valueBoolean": True}])),
        INVALID, "Consent.provision.provision[0].modifierExtension"),
    Row("narrative refused", one(ANY, extra={"text": {"status": "generated", "div": "<div>x</div>"}}), INVALID,
        "Consent.text"),
    Row("attachment content refused", one(ANY, extra={"sourceAttachment": {"data": "SGVsbG8="}}), INVALID,
        "Consent.sourceAttachment.data"),
    Row("meta.security refused", one(ANY, extra={"meta": {"security": [{"system": f.CONFIDENTIALITY,
                                                                         "code": "R"}]}}), INVALID,
        "Consent.meta.security"),
    Row("primitive extension refused", one(ANY, extra={"_status": {"extension": [{"url": "http://x",
                                                                                  "valueString": "y"}]}}),
        INVALID, "Consent._status"),
    Row("unsupported policy rule refused", one(ANY, extra={"policyRule": {"coding": [
        {"system": f.ACT_CODE, "code": "OPTINR"}]}}), INVALID, "Consent.policyRule.coding[0]"),
    Row("performer by name only refused", one(ANY, extra={"performer": [{"display": "A. Guardian"}]}), INVALID,
        "Consent.performer[0].reference"),
    Row("actor reference by identifier refused", one(permit(actors=[{
        "role": {"coding": [{"system": PT, "code": "IRCP"}]},
        "reference": {"identifier": {"system": "http://npi", "value": "1"}}}])), INVALID,
        "Consent.provision.provision[0].actor[0].reference.identifier"),
    Row("action as text refused", one(dict(permit(), action=[{"text": "read"}])), INVALID,
        "Consent.provision.provision[0].action[0].text"),
    Row("documentary elements do not change decisions", one(ANY, extra={
        "dateTime": "2025-01-02T10:00:00+01:00", "performer": [{"reference": "RelatedPerson/psn-guardian"}],
        "policyRule": {"coding": [{"system": f.ACT_CODE, "code": "OPTOUT"}]},
        "verification": [{"verified": True, "verifiedWith": {"reference": "RelatedPerson/psn-guardian"}}]}),
        PERMIT),
]

PURPOSES = {name: getattr(c, f"PURPOSE_OF_USE_{name}") for name in
            ("TREAT", "ETREAT", "BTG", "COC", "POPHLTH", "HPAYMT", "HOPERAT", "HRESCH", "PATRQT", "CLINTRCH",
             "COVAUTH", "PATADMIN", "FAMRQT", "PWATRNY")}
ACTIONS = {"ACCESS": c.CONSENT_ACTION_ACCESS, "DISCLOSE": c.CONSENT_ACTION_DISCLOSE,
           "CORRECT": c.CONSENT_ACTION_CORRECT}


def access_request(overrides: dict[str, Any]) -> AccessRequest:
    base = AccessRequest(
        actor_id="prac-1", actor_organization_id="org-a", actor_specialty="oncology", purpose=PURPOSES["TREAT"],
        action=c.CONSENT_ACTION_ACCESS, categories=(c.SENSITIVITY_CATEGORY_NORMAL,), record_id="rec-1",
        patient_id=PATIENT, now_ms=NOW, data_date_ms=fhir_time_range("2023-06-01")[0], resource_type="Condition",
        record_author_id="prac-7", record_organization_id="org-b", patient_organization_id="org-a",
    )
    values = dict(overrides)
    if "purpose" in values:
        values["purpose"] = PURPOSES[values["purpose"]]
    if "action" in values:
        values["action"] = ACTIONS[values["action"]]
    if "categories" in values:
        values["categories"] = tuple(CATEGORIES[x] for x in values["categories"])
    if "codes" in values:
        values["codes"] = tuple(values["codes"])
    return replace(base, **values)


def ledger_consents(consents: list[C]) -> list[consent_pb2.ConsentRecord]:
    """Import each FHIR consent as the consent service would hold it after a grant."""
    records = []
    for i, spec in enumerate(consents):
        imported = f.consent_from_fhir(spec.resource())
        status = consent_pb2.CONSENT_STATUS_REVOKED if spec.revoked else consent_pb2.CONSENT_STATUS_ACTIVE
        records.append(consent_pb2.ConsentRecord(consent_id=f"c-{i}", patient_id=spec.patient,
                                                 policy=imported.policy, status=status))
    return records


def test_the_table_is_large_and_names_are_unique() -> None:
    assert len(ROWS) >= 100
    assert len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_policy_row(row: Row) -> None:
    if row.expect == INVALID:
        with pytest.raises(InvalidArgument) as refused:
            ledger_consents(row.consents)
        assert refused.value.field == row.detail, refused.value.message
        return
    window = None
    if row.window is not None:
        window = BreakGlassWindow(NOW + row.window[0], NOW + row.window[1])
    decision = decide(ledger_consents(row.consents), access_request(row.request), RULES, window)
    expected = consent_pb2.DECISION_EFFECT_PERMIT if row.expect == PERMIT else consent_pb2.DECISION_EFFECT_DENY
    assert decision.effect == expected, decision.reason
    assert row.detail in decision.reason
    assert decision.break_glass == row.break_glass
    if row.expect == DENY:
        leaked = [name for name in c.SensitivityCategory.keys() if name.removeprefix("SENSITIVITY_CATEGORY_")
                  in decision.reason and name != "SENSITIVITY_CATEGORY_NORMAL"]
        assert not leaked, f"the denial names the record's category: {decision.reason}"
        request = access_request(row.request)
        assert "codes" not in decision.reason
        assert not [x for x in request.codes if x.split("|")[-1] in decision.reason], \
            f"the denial names the record's code: {decision.reason}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.expect != INVALID and r.consents], ids=lambda row: row.name)
def test_export_keeps_the_decision(row: Row) -> None:
    """Lossless export: re-importing each exported consent decides every row the same way."""
    records = ledger_consents(row.consents)
    again = []
    for record in records:
        reimported = f.consent_from_fhir(f.consent_json(record))
        assert reimported.policy == record.policy
        again.append(consent_pb2.ConsentRecord(consent_id=record.consent_id, patient_id=record.patient_id,
                                               policy=reimported.policy, status=record.status))
    request = access_request(row.request)
    window = None if row.window is None else BreakGlassWindow(NOW + row.window[0], NOW + row.window[1])
    assert decide(again, request, RULES, window) == decide(records, request, RULES, window)
