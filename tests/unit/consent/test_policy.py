"""Consent policy evaluation and validation (FHIR R4 Consent subset)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.consent import policy
from carechain.consent.policy import AccessRequest, evaluate, validate_policy
from carechain.consent.v1 import consent_pb2
from carechain.consent.v1 import policy_pb2 as p
from carechain.core.errors import InvalidArgument

PATIENT = "pat-1"
NOW = 1_700_000_000_000
HOUR = 3_600_000

TREAT = c.PURPOSE_OF_USE_TREAT
ETREAT = c.PURPOSE_OF_USE_ETREAT
HRESCH = c.PURPOSE_OF_USE_HRESCH
NORMAL = c.SENSITIVITY_CATEGORY_NORMAL
MENTAL = c.SENSITIVITY_CATEGORY_MENTAL_HEALTH
HIV = c.SENSITIVITY_CATEGORY_HIV_STI
ONCOLOGY = c.SENSITIVITY_CATEGORY_ONCOLOGY
GENETIC = c.SENSITIVITY_CATEGORY_GENETIC
PERMIT = p.PROVISION_TYPE_PERMIT
DENY = p.PROVISION_TYPE_DENY


def prac(pid: str) -> p.ConsentActor:
    return p.ConsentActor(practitioner_id=pid)


def org(oid: str) -> p.ConsentActor:
    return p.ConsentActor(organization_id=oid)


def spec(name: str) -> p.ConsentActor:
    return p.ConsentActor(specialty=name)


def prov(type_=PERMIT, actors=(), purposes=(TREAT,), categories=(), actions=(), period=None, nested=()):
    provision = p.Provision(
        type=type_, actors=list(actors), purposes=list(purposes), categories=list(categories),
        actions=list(actions), provisions=list(nested),
    )
    if period is not None:
        provision.period.CopyFrom(c.Period(start_ms=period[0], end_ms=period[1]))
    return provision


def consent(*provisions, cid="c-1", patient=PATIENT, status=consent_pb2.CONSENT_STATUS_ACTIVE, period=None):
    record = consent_pb2.ConsentRecord(
        consent_id=cid, patient_id=patient, status=status, policy=p.ConsentPolicy(provisions=list(provisions))
    )
    if period is not None:
        record.policy.period.CopyFrom(c.Period(start_ms=period[0], end_ms=period[1]))
    return record


def request(**overrides) -> AccessRequest:
    base = AccessRequest(
        actor_id="prac-1", actor_organization_id="org-a", actor_specialty="oncology", purpose=TREAT,
        action=c.CONSENT_ACTION_ACCESS, categories=(NORMAL,), record_id="rec-1", patient_id=PATIENT, now_ms=NOW,
        patient_organization_id="org-a",
    )
    return replace(base, **overrides)


@dataclass
class Case:
    name: str
    consents: list
    effect: int
    request: dict = field(default_factory=dict)
    reason_has: str = ""
    path: str = ""


PERMIT_E = consent_pb2.DECISION_EFFECT_PERMIT
DENY_E = consent_pb2.DECISION_EFFECT_DENY

CASES = [
    Case("no consents: default deny", [], DENY_E, reason_has="no active consent permits practitioner prac-1 for TREAT"),
    Case("practitioner named", [consent(prov(actors=[prac("prac-1")]))], PERMIT_E,
         reason_has="actor practitioner prac-1", path="provision[0]"),
    Case("other practitioner named", [consent(prov(actors=[prac("prac-2")]))], DENY_E),
    Case("organisation of the actor", [consent(prov(actors=[org("org-a")]))], PERMIT_E,
         reason_has="actor organization org-a"),
    Case("other organisation", [consent(prov(actors=[org("org-b")]))], DENY_E),
    Case("actor without organisation never matches an organisation", [consent(prov(actors=[org("org-a")]))],
         DENY_E, request={"actor_organization_id": ""}),
    Case("specialty of the actor (case-insensitive)", [consent(prov(actors=[spec("Oncology")]))], PERMIT_E,
         reason_has="actor specialty Oncology"),
    Case("other specialty", [consent(prov(actors=[spec("cardiology")]))], DENY_E),
    Case("one of several actors", [consent(prov(actors=[prac("x"), spec("cardiology"), org("org-a")]))], PERMIT_E),
    Case("no actors means anyone", [consent(prov())], PERMIT_E, reason_has="any actor"),
    Case("purpose listed", [consent(prov(purposes=[HRESCH, TREAT]))], PERMIT_E, reason_has="purpose TREAT"),
    Case("purpose not listed", [consent(prov(purposes=[HRESCH]))], DENY_E,
         reason_has="no active consent permits practitioner prac-1 for TREAT"),
    # ETREAT is a kind of TREAT (HL7 v3 ActReason): a TREAT permit covers it, not the reverse.
    Case("treatment permit covers emergency treatment", [consent(prov(purposes=[TREAT]))], PERMIT_E,
         request={"purpose": ETREAT}),
    Case("emergency permit does not cover treatment", [consent(prov(purposes=[ETREAT]))], DENY_E),
    Case("sensitive category not named", [consent(prov())], DENY_E, request={"categories": (NORMAL, MENTAL)},
         reason_has="denied: a sensitive category of the record is named by no consent"),
    Case("sensitive category named", [consent(prov(categories=[ONCOLOGY]))], PERMIT_E,
         request={"categories": (ONCOLOGY,)}, reason_has="categories ONCOLOGY"),
    Case("every sensitive category must be named by one provision", [consent(prov(categories=[ONCOLOGY]))],
         DENY_E, request={"categories": (ONCOLOGY, GENETIC)}, reason_has="a sensitive category of the record"),
    Case("categories split across provisions do not add up",
         [consent(prov(categories=[ONCOLOGY]), prov(categories=[GENETIC]))], DENY_E,
         request={"categories": (ONCOLOGY, GENETIC)}, reason_has="no single provision names all"),
    # securityLabel limits what a provision covers: an ONCOLOGY-limited permit opens oncology data only.
    Case("a category-limited permit does not open normal data", [consent(prov(categories=[ONCOLOGY]))], DENY_E,
         request={"categories": (NORMAL,)}),
    Case("NORMAL never needs naming", [consent(prov())], PERMIT_E, request={"categories": (NORMAL,)}),
    Case("record without categories is normal", [consent(prov())], PERMIT_E, request={"categories": ()}),
    Case("deny beats permit within a consent",
         [consent(prov(), prov(type_=DENY, actors=[prac("prac-1")], purposes=()))], DENY_E,
         reason_has="denied by consent c-1 provision[1]", path="provision[1]"),
    Case("deny beats permit across consents",
         [consent(prov(), cid="c-1"), consent(prov(type_=DENY, purposes=()), cid="c-2")], DENY_E,
         reason_has="consent c-2"),
    Case("deny with categories spares other records",
         [consent(prov(), prov(type_=DENY, purposes=(), categories=[HIV]))], PERMIT_E),
    Case("deny with categories hits records carrying one",
         [consent(prov(categories=[HIV]), prov(type_=DENY, purposes=(), categories=[HIV, MENTAL]))], DENY_E,
         request={"categories": (HIV,)}),
    Case("nested deny is an exception to a permit",
         [consent(prov(actors=[org("org-a")], nested=[prov(type_=DENY, actors=[prac("prac-1")], purposes=())]))],
         DENY_E, path="provision[0].provision[0]"),
    Case("nested deny for someone else leaves the permit",
         [consent(prov(actors=[org("org-a")], nested=[prov(type_=DENY, actors=[prac("prac-9")], purposes=())]))],
         PERMIT_E, path="provision[0]"),
    Case("nested permit is an exception to a deny",
         [consent(prov(type_=DENY, purposes=(), nested=[prov(actors=[spec("oncology")], purposes=())]))],
         PERMIT_E, path="provision[0].provision[0]"),
    Case("nested permit naming a category opens sensitive data to one practitioner",
         [consent(prov(actors=[org("org-a")], nested=[prov(actors=[prac("prac-1")], purposes=(),
                                                           categories=[MENTAL])]))],
         PERMIT_E, request={"categories": (MENTAL,)}, path="provision[0].provision[0]"),
    Case("nested provisions are not evaluated when the parent does not match",
         [consent(prov(actors=[org("org-b")], nested=[prov(actors=[prac("prac-1")], purposes=())]))], DENY_E),
    Case("provision period in force", [consent(prov(period=(NOW - HOUR, NOW + HOUR)))], PERMIT_E),
    Case("provision period ended (end exclusive)", [consent(prov(period=(NOW - HOUR, NOW)))], DENY_E),
    Case("provision period not started", [consent(prov(period=(NOW + 1, 0)))], DENY_E),
    Case("consent period ended", [consent(prov(), period=(0, NOW - 1))], DENY_E,
         reason_has="denied: consent c-1 is not in force at this time"),
    Case("revoked consent", [consent(prov(), status=consent_pb2.CONSENT_STATUS_REVOKED)], DENY_E,
         reason_has="denied: consent c-1 was revoked"),
    Case("revoked deny no longer applies",
         [consent(prov(), cid="c-1"),
          consent(prov(type_=DENY, purposes=()), cid="c-2", status=consent_pb2.CONSENT_STATUS_REVOKED)], PERMIT_E),
    Case("another patient's consent never applies", [consent(prov(), patient="pat-2")], DENY_E),
    Case("empty actions mean ACCESS only", [consent(prov())], DENY_E,
         request={"action": c.CONSENT_ACTION_DISCLOSE}, reason_has="to DISCLOSE"),
    Case("action listed", [consent(prov(actions=[c.CONSENT_ACTION_DISCLOSE]))], PERMIT_E,
         request={"action": c.CONSENT_ACTION_DISCLOSE}, reason_has="action DISCLOSE"),
    Case("action mismatch", [consent(prov(actions=[c.CONSENT_ACTION_CORRECT]))], DENY_E),
    Case("unspecified action is ACCESS", [consent(prov())], PERMIT_E,
         request={"action": c.CONSENT_ACTION_UNSPECIFIED}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_decision(case: Case) -> None:
    decision = evaluate(case.consents, request(**case.request))
    assert decision.effect == case.effect, decision.reason
    assert case.reason_has in decision.reason
    if case.path:
        assert decision.provision_path == case.path
    if case.effect == PERMIT_E:
        assert decision.reason.startswith("permitted by consent ")
        assert decision.consent_id
    else:
        assert decision.reason.startswith("denied")


def test_reasons_never_mention_the_patient() -> None:
    consents = [consent(prov(), prov(type_=DENY, purposes=(), categories=[HIV]))]
    for categories in [(NORMAL,), (HIV,), (MENTAL,)]:
        assert PATIENT not in evaluate(consents, request(categories=categories)).reason


@pytest.mark.parametrize("category", [v for v in c.SensitivityCategory.values()
                                      if v not in (c.SENSITIVITY_CATEGORY_UNSPECIFIED, NORMAL)])
def test_denial_reasons_never_name_the_records_category(category: int) -> None:
    # 42 CFR 2.13(c): even that a record is, say, substance-use is a disclosure; the audit event carries it.
    name = c.SensitivityCategory.Name(category).removeprefix("SENSITIVITY_CATEGORY_")
    denying = [
        [consent(prov())],                                          # permit without the category
        [consent(prov(type_=DENY, purposes=(), categories=[category]))],  # a deny naming it
        [consent(prov(categories=[category]), prov(categories=[ONCOLOGY if category != ONCOLOGY else GENETIC]))],
    ]
    for consents in denying:
        for categories in [(category,), (category, ONCOLOGY if category != ONCOLOGY else GENETIC)]:
            decision = evaluate(consents, request(categories=categories))
            if decision.permitted:
                continue
            assert name not in decision.reason and name.lower() not in decision.reason.lower()
    rules = policy.BreakGlassRules(frozenset({"emergency-medicine"}), 4 * HOUR)
    glass = policy.decide([], request(**{**EMERGENCY, "categories": (category,)}), rules)
    assert not glass.permitted and name not in glass.reason


def test_evaluation_is_deterministic() -> None:
    consents = [consent(prov(actors=[org("org-a")]), cid="c-1"), consent(prov(actors=[spec("oncology")]), cid="c-2")]
    decisions = {evaluate(consents, request()) for _ in range(5)}
    assert len(decisions) == 1
    assert next(iter(decisions)).consent_id == "c-1"


def test_sensitive_categories_are_all_but_normal() -> None:
    assert c.SENSITIVITY_CATEGORY_NORMAL not in policy.SENSITIVE_CATEGORIES
    assert c.SENSITIVITY_CATEGORY_UNSPECIFIED not in policy.SENSITIVE_CATEGORIES
    assert len(policy.SENSITIVE_CATEGORIES) == len(c.SensitivityCategory.values()) - 2


# --- validation ---------------------------------------------------------------

def _policy(*provisions, period=None) -> p.ConsentPolicy:
    result = p.ConsentPolicy(provisions=list(provisions))
    if period is not None:
        result.period.CopyFrom(c.Period(start_ms=period[0], end_ms=period[1]))
    return result


INVALID = [
    ("no provisions", _policy(), "policy.provisions"),
    ("top-level permit without purpose", _policy(prov(purposes=())), "policy.provisions[0].purposes"),
    ("type missing", _policy(prov(), prov(type_=p.PROVISION_TYPE_UNSPECIFIED)), "policy.provisions[1].type"),
    ("unknown type", _policy(prov(type_=7)), "policy.provisions[0].type"),
    ("unspecified purpose", _policy(prov(purposes=[TREAT, c.PURPOSE_OF_USE_UNSPECIFIED])),
     "policy.provisions[0].purposes"),
    ("unknown purpose", _policy(prov(purposes=[99])), "policy.provisions[0].purposes"),
    ("unspecified action", _policy(prov(actions=[c.CONSENT_ACTION_UNSPECIFIED])), "policy.provisions[0].actions"),
    ("unspecified category", _policy(prov(categories=[c.SENSITIVITY_CATEGORY_UNSPECIFIED])),
     "policy.provisions[0].categories"),
    ("unknown category", _policy(prov(categories=[42])), "policy.provisions[0].categories"),
    ("actor with nothing set", _policy(prov(actors=[p.ConsentActor()])), "policy.provisions[0].actors[0]"),
    ("actor with blank specialty", _policy(prov(actors=[prac("a"), spec("  ")])),
     "policy.provisions[0].actors[1].specialty"),
    ("empty practitioner id", _policy(prov(actors=[p.ConsentActor(practitioner_id="")])),
     "policy.provisions[0].actors[0].practitioner_id"),
    ("provision period backwards", _policy(prov(period=(NOW, NOW - 1))), "policy.provisions[0].period.end_ms"),
    ("provision period empty", _policy(prov(period=(NOW, NOW))), "policy.provisions[0].period.end_ms"),
    ("policy period backwards", _policy(prov(), period=(NOW, 1)), "policy.period.end_ms"),
    ("negative start", _policy(prov(), period=(-5, 0)), "policy.period.start_ms"),
    ("nested error named by path",
     _policy(prov(nested=[prov(purposes=()), prov(type_=DENY, categories=[c.SENSITIVITY_CATEGORY_UNSPECIFIED])])),
     "policy.provisions[0].provisions[1].categories"),
]


@pytest.mark.parametrize(("policy_", "field_"), [(pol, f) for _, pol, f in INVALID], ids=[n for n, _, _ in INVALID])
def test_invalid_policy_names_the_field(policy_: p.ConsentPolicy, field_: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_policy(policy_)
    assert raised.value.field == field_
    assert str(raised.value).startswith(f"{field_}: ")


def test_too_deep_nesting_is_rejected() -> None:
    provision = prov(purposes=())
    for _ in range(policy.MAX_PROVISION_DEPTH):
        provision = prov(purposes=(), nested=[provision])
    with pytest.raises(InvalidArgument, match="deeper"):
        validate_policy(_policy(prov(nested=[provision])))


VALID = [
    _policy(prov()),
    _policy(prov(type_=DENY, purposes=())),  # a top-level deny may cover every purpose
    _policy(prov(actors=[prac("p"), org("o"), spec("s")], categories=[NORMAL, MENTAL],
                 actions=[c.CONSENT_ACTION_ACCESS, c.CONSENT_ACTION_DISCLOSE], period=(NOW, 0),
                 nested=[prov(type_=DENY, purposes=())]), period=(0, NOW)),
]


@pytest.mark.parametrize("policy_", VALID)
def test_valid_policies_pass(policy_: p.ConsentPolicy) -> None:
    validate_policy(policy_)


# --- data period, resource types, delegate-granted consents -------------------------------

DAY = 86_400_000
Y2023 = (1_672_531_200_000, 1_704_067_200_000)  # [2023-01-01, 2024-01-01) UTC
IN_2023 = 1_684_108_800_000  # 2023-05-15
IN_2022 = 1_652_572_800_000  # 2022-05-15


def dated(provision: p.Provision, start: int, end: int) -> p.Provision:
    provision.data_period.CopyFrom(c.Period(start_ms=start, end_ms=end))
    return provision


def typed(provision: p.Provision, *types: str) -> p.Provision:
    provision.resource_types.extend(types)
    return provision


MORE_CASES = [
    Case("specialty of another organisation: not by default", [consent(prov(actors=[spec("oncology")]))], DENY_E,
         request={"actor_organization_id": "org-b"}),
    Case("specialty of any member organisation when the consent says so",
         [consent(prov(actors=[p.ConsentActor(specialty="oncology", any_organization=True)]))], PERMIT_E,
         request={"actor_organization_id": "org-b"}, reason_has="actor specialty oncology"),
    Case("specialty of an organisation the consent names",
         [consent(prov(actors=[p.ConsentActor(specialty="oncology", specialty_organization_ids=["org-b"])]))],
         PERMIT_E, request={"actor_organization_id": "org-b"}),
    Case("specialty scoped to named organisations excludes the patient's own",
         [consent(prov(actors=[p.ConsentActor(specialty="oncology", specialty_organization_ids=["org-b"])]))],
         DENY_E),
    Case("data period: record dated inside", [consent(dated(prov(), *Y2023))], PERMIT_E,
         request={"data_date_ms": IN_2023}, reason_has="records dated [2023-01-01, 2024-01-01)"),
    Case("data period: record dated before", [consent(dated(prov(), *Y2023))], DENY_E,
         request={"data_date_ms": IN_2022}),
    Case("data period: end is exclusive", [consent(dated(prov(), *Y2023))], DENY_E,
         request={"data_date_ms": Y2023[1]}),
    Case("data period: a record without a date never matches", [consent(dated(prov(), *Y2023))], DENY_E,
         request={"data_date_ms": 0}),
    Case("data period: open start", [consent(dated(prov(), 0, Y2023[1]))], PERMIT_E,
         request={"data_date_ms": IN_2022}),
    Case("data period on a deny spares other years",
         [consent(prov(), dated(prov(type_=DENY, purposes=()), *Y2023))], PERMIT_E,
         request={"data_date_ms": IN_2022}),
    Case("data period on a deny hits that year",
         [consent(prov(), dated(prov(type_=DENY, purposes=()), *Y2023))], DENY_E,
         request={"data_date_ms": IN_2023}, path="provision[1]"),
    Case("data period on a nested deny: exception for one year",
         [consent(prov(nested=[dated(prov(type_=DENY, purposes=()), *Y2023)]))], DENY_E,
         request={"data_date_ms": IN_2023}, path="provision[0].provision[0]"),
    Case("data period with a sensitive category named",
         [consent(dated(prov(categories=[MENTAL]), *Y2023))], PERMIT_E,
         request={"data_date_ms": IN_2023, "categories": (MENTAL,)}),
    Case("resource type listed", [consent(typed(prov(), "Condition", "Observation"))], PERMIT_E,
         request={"resource_type": "Condition"}, reason_has="types Condition, Observation"),
    Case("resource type not listed", [consent(typed(prov(), "Immunization"))], DENY_E,
         request={"resource_type": "Condition"}),
    Case("purpose HPAYMT", [consent(prov(purposes=[c.PURPOSE_OF_USE_HPAYMT]))], PERMIT_E,
         request={"purpose": c.PURPOSE_OF_USE_HPAYMT}, reason_has="purpose HPAYMT"),
    Case("purpose HOPERAT", [consent(prov(purposes=[c.PURPOSE_OF_USE_HOPERAT]))], PERMIT_E,
         request={"purpose": c.PURPOSE_OF_USE_HOPERAT}),
    Case("purpose PATRQT", [consent(prov(purposes=[c.PURPOSE_OF_USE_PATRQT]))], PERMIT_E,
         request={"purpose": c.PURPOSE_OF_USE_PATRQT}),
    Case("purpose HRESCH for research", [consent(prov(purposes=[HRESCH]))], PERMIT_E,
         request={"purpose": HRESCH}),
    Case("CORRECT needs a provision listing it", [consent(prov(actions=[c.CONSENT_ACTION_CORRECT]))], PERMIT_E,
         request={"action": c.CONSENT_ACTION_CORRECT}, reason_has="action CORRECT"),
    Case("deny of DISCLOSE leaves ACCESS",
         [consent(prov(), prov(type_=DENY, purposes=(), actions=[c.CONSENT_ACTION_DISCLOSE]))], PERMIT_E),
    Case("a consent granted by a delegate counts like the patient's",
         [consent_pb2.ConsentRecord(consent_id="c-9", patient_id=PATIENT, granted_by="guardian-1",
                                    status=consent_pb2.CONSENT_STATUS_ACTIVE,
                                    policy=p.ConsentPolicy(provisions=[prov()]))], PERMIT_E,
         reason_has="consent c-9"),
    Case("sensitive category named on a nested permit under a deny-by-org",
         [consent(prov(type_=DENY, purposes=(), actors=[org("org-a")],
                       nested=[prov(actors=[prac("prac-1")], purposes=(), categories=[HIV])]))], PERMIT_E,
         request={"categories": (HIV, NORMAL)}, path="provision[0].provision[0]"),
]


@pytest.mark.parametrize("case", MORE_CASES, ids=lambda case: case.name)
def test_decision_more(case: Case) -> None:
    test_decision(case)


# --- break-glass ------------------------------------------------------------------------------

RULES = policy.BreakGlassRules(frozenset({"emergency-medicine"}), 4 * HOUR)
EMERGENCY = {"actor_specialty": "Emergency-Medicine", "purpose": ETREAT, "break_glass": True}


@dataclass
class GlassCase:
    name: str
    consents: list
    request: dict
    effect: int
    break_glass: bool = False
    window: policy.BreakGlassWindow | None = None
    reason_has: str = ""


GLASS_CASES = [
    GlassCase("emergency physician, ETREAT, normal record, no consent", [], EMERGENCY, PERMIT_E, True,
              reason_has="break-glass: emergency access by practitioner prac-1"),
    GlassCase("record without categories counts as normal", [], {**EMERGENCY, "categories": ()}, PERMIT_E, True),
    GlassCase("sensitive record stays closed", [], {**EMERGENCY, "categories": (NORMAL, MENTAL)}, DENY_E,
              reason_has="break-glass never opens sensitive categories and consent does not permit"),
    GlassCase("every sensitive category stays closed", [], {**EMERGENCY, "categories": (ONCOLOGY,)}, DENY_E,
              reason_has="break-glass never opens sensitive categories"),
    GlassCase("ETREAT by an emergency physician without the explicit flag is not break-glass", [],
              {**EMERGENCY, "break_glass": False}, DENY_E, reason_has="no active consent permits"),
    GlassCase("not an emergency specialty", [], {"purpose": ETREAT, "break_glass": True}, DENY_E,
              reason_has="break-glass needs purpose ETREAT, action ACCESS and an emergency specialty"),
    GlassCase("emergency specialty but purpose TREAT", [], {**EMERGENCY, "purpose": TREAT}, DENY_E,
              reason_has="no active consent permits"),
    GlassCase("emergency specialty, ETREAT, but DISCLOSE", [], {**EMERGENCY, "action": c.CONSENT_ACTION_DISCLOSE},
              DENY_E),
    GlassCase("inside a recorded window", [], {**EMERGENCY}, PERMIT_E, True,
              window=policy.BreakGlassWindow(NOW - HOUR, NOW + 3 * HOUR)),
    GlassCase("window ended (end exclusive)", [], EMERGENCY, DENY_E,
              window=policy.BreakGlassWindow(NOW - 4 * HOUR, NOW), reason_has="break-glass window"),
    GlassCase("consent that permits wins: no break-glass", [consent(prov(purposes=[ETREAT]))], EMERGENCY, PERMIT_E,
              False, reason_has="permitted by consent c-1"),
    GlassCase("consent permitting a sensitive category is not break-glass",
              [consent(prov(purposes=[ETREAT], categories=[MENTAL]))], {**EMERGENCY, "categories": (MENTAL,)},
              PERMIT_E, False),
    GlassCase("break-glass overrides a consent's deny for normal data",
              [consent(prov(type_=DENY, purposes=()))], EMERGENCY, PERMIT_E, True, reason_has="denied by consent c-1"),
    GlassCase("a revoked consent does not stop break-glass",
              [consent(prov(purposes=[ETREAT]), status=consent_pb2.CONSENT_STATUS_REVOKED)], EMERGENCY, PERMIT_E,
              True),
]


@pytest.mark.parametrize("case", GLASS_CASES, ids=lambda case: case.name)
def test_break_glass(case: GlassCase) -> None:
    decision = policy.decide(case.consents, request(**case.request), RULES, case.window)
    assert decision.effect == case.effect, decision.reason
    assert decision.break_glass == case.break_glass
    assert case.reason_has in decision.reason
    if case.break_glass:
        window = case.window or policy.BreakGlassWindow(NOW, NOW + 4 * HOUR)
        assert (decision.break_glass_started_at_ms, decision.break_glass_expires_at_ms) == (
            window.started_at_ms, window.expires_at_ms)
    assert PATIENT not in decision.reason


def test_break_glass_is_off_without_rules() -> None:
    assert policy.decide([], request(**EMERGENCY)).effect == DENY_E
    no_one = policy.BreakGlassRules(frozenset(), 4 * HOUR)
    assert policy.decide([], request(**EMERGENCY), no_one).effect == DENY_E


def test_policy_suite_has_at_least_forty_table_cases() -> None:
    assert len(CASES) + len(MORE_CASES) + len(GLASS_CASES) >= 40


INVALID_MORE = [
    ("data period backwards", _policy(dated(prov(), NOW, NOW - 1)), "policy.provisions[0].data_period.end_ms"),
    ("resource type not a type", _policy(typed(prov(), "condition")), "policy.provisions[0].resource_types[0]"),
    ("organisation scope on a practitioner actor",
     _policy(prov(actors=[p.ConsentActor(practitioner_id="x", any_organization=True)])),
     "policy.provisions[0].actors[0].any_organization"),
    ("any organisation and named organisations",
     _policy(prov(actors=[p.ConsentActor(specialty="x", any_organization=True, specialty_organization_ids=["o"])])),
     "policy.provisions[0].actors[0].specialty_organization_ids"),
]


@pytest.mark.parametrize(("policy_", "field_"), [(pol, f) for _, pol, f in INVALID_MORE],
                         ids=[n for n, _, _ in INVALID_MORE])
def test_invalid_data_period_and_types_name_the_field(policy_: p.ConsentPolicy, field_: str) -> None:
    test_invalid_policy_names_the_field(policy_, field_)


# --- an organisation itself asks (a SMART Backend Services client) -------------------------------------------

def _as_org(**overrides) -> AccessRequest:
    return request(actor_id="org-a", actor_organization_id="org-a", actor_specialty="", actor_is_organization=True,
                   **overrides)


@pytest.mark.parametrize(("consents", "effect"), [
    ([consent(prov(actors=[org("org-a")]))], consent_pb2.DECISION_EFFECT_PERMIT),
    ([consent(prov(actors=[org("org-b")]))], consent_pb2.DECISION_EFFECT_DENY),
    # What a patient grants to people never admits the organisation's backend.
    ([consent(prov(actors=[prac("prac-1")]))], consent_pb2.DECISION_EFFECT_DENY),
    ([consent(prov(actors=[spec("oncology")]))], consent_pb2.DECISION_EFFECT_DENY),
    ([consent(prov(actors=[prac("prac-1")], nested=[prov()]))], consent_pb2.DECISION_EFFECT_DENY),
    # A deny for "anyone" denies it as it denies its practitioners.
    ([consent(prov(actors=[org("org-a")], nested=[prov(DENY, purposes=())]))], consent_pb2.DECISION_EFFECT_DENY),
    ([consent(prov(actors=[org("org-a")]), cid="c-1"), consent(prov(DENY, actors=[org("org-a")]), cid="c-2")],
     consent_pb2.DECISION_EFFECT_DENY),
    # A deny naming a practitioner is about that person, not the organisation.
    ([consent(prov(actors=[org("org-a")], nested=[prov(DENY, actors=[prac("prac-1")])]))],
     consent_pb2.DECISION_EFFECT_PERMIT),
])
def test_an_organisation_is_permitted_only_by_recipients_naming_it(consents: list, effect: int) -> None:
    assert evaluate(consents, _as_org()).effect == effect
