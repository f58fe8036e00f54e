"""Consent policy evaluation: a documented subset of FHIR R4 ``Consent``.

Pure and deterministic: the same consents and request always give the same
decision; time comes from the request (``now_ms``), never from the clock.

Semantics
---------
- **Default deny.** Without a matching permit, access is denied.
- **Which consents count.** Only consents of the record's patient, with status
  ACTIVE, whose ``policy.period`` contains ``now``. Revoked or out-of-period
  consents never permit; they only help explain a denial.
- **When a provision matches** (all must hold):

  * actor, by role (``ConsentActor.role``, FHIR ``actor.role``): recipient
    actors (IRCP/PRCP, the default, and every specialty) say *who asks*: none
    = any actor; otherwise one matches: a ``practitioner_id`` equal to the
    actor, an ``organization_id`` equal to the actor's organisation, or a
    ``specialty`` equal to the actor's (attested) specialty, compared
    case-insensitively, *and* the actor's organisation in the specialty's
    scope (:func:`specialty_scope_matches`): the organisations the actor lists
    in ``specialty_organization_ids``; when it lists none, the patient's
    registering organisation only; any member organisation only with
    ``any_organization``. Author (AUT) and custodian (CST) actors say *which
    data*: when present, the record must have been written by one of them
    (author: the record's author or its organisation; custodian: the record's
    organisation), whoever asks. "Withhold data authored by X" is therefore
    not "deny X access";
  * action: a PERMIT without actions covers ACCESS only; a DENY without
    actions covers every action; otherwise the requested action is listed;
  * purpose: no purposes = any purpose (only nested provisions and denies may
    leave it empty); otherwise the requested purpose is listed or is a kind of
    a listed one in the HL7 v3 ActReason hierarchy (:data:`PURPOSE_PARENTS`:
    a provision for TREAT covers ETREAT and BTG, never the reverse);
  * period: the provision's own period contains ``now`` (half-open, 0 = open);
  * data period: when set, the record's clinical date (``data_date_ms``, day
    precision) lies inside it; a record without a clinical date never matches
    a provision with a data period (permit or deny);
  * resource types: when listed, the record's FHIR resource type is one of them;
  * data (FHIR ``provision.data``, meaning instance): when listed, the record
    is one of them;
  * codes (FHIR ``provision.code``): when listed, the record's primary code
    element (Condition.code, Observation.code, Immunization.vaccineCode, ...:
    :data:`carechain.labels.sensitivity.PRIMARY_CODE_ELEMENTS`) carries one of them,
    permit or deny; systems are compared in canonical form (URI or OID), codes
    exactly (no hierarchy or subsumption). A denial never names the codes;
  * categories (FHIR ``securityLabel``): a provision naming categories matches
    only records carrying one of them, permit or deny; one without categories
    matches every record. A permit limited to MENTAL_HEALTH therefore opens
    nothing but mental-health records.

- **Categories of a PERMIT.** A matching permit *covers* the record only when
  every sensitive category of the record (every category except NORMAL) is
  named in that provision's own categories. A record with only NORMAL (or no)
  categories is covered by any matching permit without categories or naming
  NORMAL. Categories are not inherited from a parent provision: sensitive data
  needs a provision that names it.
- **42 CFR Part 2.** A permit naming SUBSTANCE_USE must name its recipient (a
  practitioner or organisation, on it or a parent provision) and its purpose
  (:func:`validate_policy` rejects an open one); a disclosed Part 2 record
  carries :data:`PART2_REDISCLOSURE_NOTICE` and :data:`PART2_SECURITY_LABELS`.
- **Nested provisions are exceptions.** They are evaluated only when their
  parent matches; when one or more nested provisions match, they decide instead
  of the parent (recursively, so the deepest matching provision's type wins).
- **Deny beats permit.** Across all provisions of all counted consents, one
  deciding DENY denies, whatever permits there are. Otherwise one deciding
  PERMIT that covers the record permits.

Break-glass (:func:`decide`)
----------------------------
Break-glass is explicit: only a request with ``break_glass`` set (and a reason,
checked by the service) can break the glass; purpose ETREAT alone never does.
When consent does not permit, a practitioner whose attested specialty (role)
is one of the configured emergency specialties, explicitly asking to ACCESS
for purpose ETREAT, gets a *break-glass* permit, limited to a window (default 4 h from the first use by
that actor for that patient), for records whose categories are all NORMAL.
Sensitive categories stay closed (denied with the reason). Break-glass also
overrides a consent's DENY for non-sensitive records: an emergency is what it
is for, and every use raises an alert (patient notification, privacy-officer
review). Once a window has ended, decisions tied to it no longer hold.

Reasons are meant for people (patients, auditors) and never contain PHI: they
name consent ids, provision paths, principal ids, purposes and categories.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.errors import InvalidArgument
from carechain.labels.security_labels import PARENT_CATEGORY
from carechain.labels.sensitivity import SENSITIVE_CATEGORIES, category_name, clinical_code

PERMIT = consent_pb2.DECISION_EFFECT_PERMIT
DENY = consent_pb2.DECISION_EFFECT_DENY

_Category = common_pb2.SensitivityCategory
_Purpose = common_pb2.PurposeOfUse
_Action = common_pb2.ConsentAction

# Deeper nesting than this is rejected: real consents are shallow, and it bounds evaluation.
MAX_PROVISION_DEPTH = 8
MAX_PROVISIONS = 256
MAX_DOCUMENT_ITEMS = 16  # per repeated element of a ConsentDocument
MAX_DOCUMENT_TEXT = 2048  # characters per string of a ConsentDocument
MAX_PROVISION_CODES = 256  # codes of one provision (FHIR provision.code)
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
# A reference to a CareChain principal or resource by id (never by name): <ResourceType>/<id>.
PRINCIPAL_REFERENCE = re.compile(r"(Patient|Practitioner|PractitionerRole|RelatedPerson|Organization)/"
                                 r"([A-Za-z0-9][A-Za-z0-9._-]{0,127})")

_Role = policy_pb2.ActorRole
_RECIPIENT_ROLES = frozenset({_Role.ACTOR_ROLE_UNSPECIFIED, _Role.ACTOR_ROLE_RECIPIENT,
                              _Role.ACTOR_ROLE_PRIMARY_RECIPIENT})

# The HL7 v3 ActReason (PurposeOfUse) hierarchy, child -> parent: a provision naming a purpose
# also covers every purpose below it (ETREAT is a kind of TREAT; BTG a kind of ETREAT).
PURPOSE_PARENTS: dict[int, int] = {
    _Purpose.PURPOSE_OF_USE_ETREAT: _Purpose.PURPOSE_OF_USE_TREAT,
    _Purpose.PURPOSE_OF_USE_BTG: _Purpose.PURPOSE_OF_USE_ETREAT,
    _Purpose.PURPOSE_OF_USE_COC: _Purpose.PURPOSE_OF_USE_TREAT,
    _Purpose.PURPOSE_OF_USE_POPHLTH: _Purpose.PURPOSE_OF_USE_TREAT,
    _Purpose.PURPOSE_OF_USE_CLINTRCH: _Purpose.PURPOSE_OF_USE_HRESCH,
    _Purpose.PURPOSE_OF_USE_COVAUTH: _Purpose.PURPOSE_OF_USE_HPAYMT,
    _Purpose.PURPOSE_OF_USE_PATADMIN: _Purpose.PURPOSE_OF_USE_HOPERAT,
    _Purpose.PURPOSE_OF_USE_FAMRQT: _Purpose.PURPOSE_OF_USE_PATRQT,
    _Purpose.PURPOSE_OF_USE_PWATRNY: _Purpose.PURPOSE_OF_USE_PATRQT,
}

# 42 CFR 2.32(a)(1): the notice that must accompany each disclosure of a Part 2 record.
PART2_REDISCLOSURE_NOTICE = (
    "This record which has been disclosed to you is protected by Federal confidentiality rules "
    "(42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony that "
    "describes the information contained in this record, in any civil, criminal, administrative, or "
    "legislative proceedings by any Federal, State, or local authority, against the patient, unless "
    "authorized by the consent of the patient, except as provided at 42 CFR 2.12(c)(5) or as authorized by "
    "a court in accordance with 42 CFR 2.64 or 2.65. In addition, the Federal rules prohibit you from making "
    "any other use or disclosure of this record unless at least one of the following applies: Further use or "
    "disclosure is expressly permitted by the written consent of the individual whose information is being "
    "disclosed in this record or as otherwise permitted by 42 CFR part 2. You are a covered entity or business "
    "associate and have received the record for treatment, payment, or health care operations, or You have "
    "received the record from a covered entity or business associate as permitted by 45 CFR part 164, "
    "subparts A and E. A general authorization for the release of medical or other information is NOT "
    "sufficient to meet the required elements of written consent to further use or redisclose the record "
    "(see 42 CFR 2.31)."
)
# Security labels a Part 2 record carries when disclosed: the privacy law and the obligation
# "no redisclosure without consent directive" (HL7 v3 ActCode), as "<system>|<code>".
PART2_SECURITY_LABELS = (
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|42CFRPart2",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|NORDSCLCD",
)


def _short_name(enum: object, prefix: str, value: int) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)


def purpose_name(value: int) -> str:
    """Short name of a purpose of use, e.g. ``TREAT``."""
    return _short_name(_Purpose, "PURPOSE_OF_USE_", value)


def action_name(value: int) -> str:
    """Short name of a consent action, e.g. ``ACCESS``."""
    return _short_name(_Action, "CONSENT_ACTION_", value)


def is_sensitive(category: int) -> bool:
    """True for categories that need explicit consent."""
    return category in SENSITIVE_CATEGORIES


def is_part2(categories: Iterable[int]) -> bool:
    """True when a record is a 42 CFR Part 2 (substance use) record."""
    return _Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE in set(categories)


def purpose_covers(named: int, requested: int) -> bool:
    """Whether a provision naming purpose named covers a request for requested (same or a descendant)."""
    seen: set[int] = set()
    while requested and requested not in seen:
        if requested == named:
            return True
        seen.add(requested)
        requested = PURPOSE_PARENTS.get(requested, 0)
    return False


# --- validation ----------------------------------------------------------------

def _validate_period(period: common_pb2.Period, field: str) -> None:
    if period.start_ms < 0:
        raise InvalidArgument(f"{field}.start_ms", "must not be negative")
    if period.end_ms < 0:
        raise InvalidArgument(f"{field}.end_ms", "must not be negative")
    if period.start_ms and period.end_ms and period.end_ms <= period.start_ms:
        raise InvalidArgument(f"{field}.end_ms", "must be after start_ms")


def _validate_enums(values: Iterable[int], enum: object, unspecified: int, field: str) -> None:
    known = set(enum.values())  # type: ignore[attr-defined]
    for value in values:
        if value == unspecified:
            raise InvalidArgument(field, "must not contain an UNSPECIFIED value")
        if value not in known:
            raise InvalidArgument(field, f"unknown value {value}")


def _validate_specialty_scope(actor: policy_pb2.ConsentActor, field: str) -> None:
    """any_organization and specialty_organization_ids scope a specialty actor, and only that."""
    scoped = actor.any_organization or actor.specialty_organization_ids
    if scoped and actor.WhichOneof("actor") != "specialty":
        raise InvalidArgument(f"{field}.any_organization", "only a specialty actor has an organisation scope")
    if actor.any_organization and actor.specialty_organization_ids:
        raise InvalidArgument(f"{field}.specialty_organization_ids", "must be empty with any_organization: the "
                              "scope is any member organisation or the ones named, not both")
    for i, organization_id in enumerate(actor.specialty_organization_ids):
        if not organization_id.strip():
            raise InvalidArgument(f"{field}.specialty_organization_ids[{i}]", "must not be empty")


def _names_recipient(provision: policy_pb2.Provision) -> bool:
    """Whether a provision names a recipient by identity (a practitioner or organisation, not a specialty)."""
    return any(
        actor.role in _RECIPIENT_ROLES and actor.WhichOneof("actor") in ("practitioner_id", "organization_id")
        for actor in provision.actors
    )


def _validate_part2(provision: policy_pb2.Provision, field: str, ancestors: tuple[policy_pb2.Provision, ...]) -> None:
    """42 CFR 2.31: a consent to disclose substance-use records names its recipient and its purpose."""
    if provision.type != policy_pb2.PROVISION_TYPE_PERMIT:
        return
    if _Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE not in provision.categories:
        return
    chain = (*ancestors, provision)  # a nested provision applies only within its parents
    if not any(_names_recipient(p) for p in chain):
        raise InvalidArgument(
            f"{field}.actors",
            "a permit for SUBSTANCE_USE (42 CFR Part 2) must name its recipient: a practitioner_id or "
            "organization_id recipient on it or a parent provision (42 CFR 2.31)",
        )
    if not any(p.purposes for p in chain):
        raise InvalidArgument(
            f"{field}.purposes",
            "a permit for SUBSTANCE_USE (42 CFR Part 2) must name its purpose of use (42 CFR 2.31)",
        )


def _validate_provision(
    provision: policy_pb2.Provision, field: str, depth: int, ancestors: tuple[policy_pb2.Provision, ...] = ()
) -> int:
    """Validate one provision and its nested ones; returns how many provisions were checked."""
    if depth > MAX_PROVISION_DEPTH:
        raise InvalidArgument(field, f"provisions nest deeper than {MAX_PROVISION_DEPTH} levels")
    if provision.type not in (policy_pb2.PROVISION_TYPE_PERMIT, policy_pb2.PROVISION_TYPE_DENY):
        raise InvalidArgument(f"{field}.type", "must be PERMIT or DENY")
    for i, actor in enumerate(provision.actors):
        which = actor.WhichOneof("actor")
        if which is None:
            raise InvalidArgument(f"{field}.actors[{i}]", "must name a practitioner_id, organization_id or specialty")
        if not getattr(actor, which).strip():
            raise InvalidArgument(f"{field}.actors[{i}].{which}", "must not be empty")
        _validate_specialty_scope(actor, f"{field}.actors[{i}]")
        if actor.role not in _Role.values():
            raise InvalidArgument(f"{field}.actors[{i}].role", f"unknown value {actor.role}")
        if which == "specialty" and actor.role not in _RECIPIENT_ROLES:
            raise InvalidArgument(f"{field}.actors[{i}].role", "a specialty can only be a recipient")
        if actor.role == _Role.ACTOR_ROLE_CUSTODIAN and which != "organization_id":
            raise InvalidArgument(f"{field}.actors[{i}].role", "a custodian must be an organization_id")
    for i, data in enumerate(provision.data):
        if not _RESOURCE_TYPE.fullmatch(data.resource_type):
            raise InvalidArgument(f"{field}.data[{i}].resource_type", "must be a FHIR resource type such as Condition")
        if not _RECORD_ID.fullmatch(data.record_id):
            raise InvalidArgument(f"{field}.data[{i}].record_id", "must be a CareChain record id")
    _validate_enums(provision.actions, _Action, _Action.CONSENT_ACTION_UNSPECIFIED, f"{field}.actions")
    _validate_enums(provision.purposes, _Purpose, _Purpose.PURPOSE_OF_USE_UNSPECIFIED, f"{field}.purposes")
    if depth == 1 and provision.type == policy_pb2.PROVISION_TYPE_PERMIT and not provision.purposes:
        raise InvalidArgument(f"{field}.purposes", "a top-level permit needs at least one purpose of use")
    _validate_enums(
        provision.categories, _Category, _Category.SENSITIVITY_CATEGORY_UNSPECIFIED, f"{field}.categories"
    )
    _validate_period(provision.period, f"{field}.period")
    _validate_period(provision.data_period, f"{field}.data_period")
    for i, resource_type in enumerate(provision.resource_types):
        if not _RESOURCE_TYPE.fullmatch(resource_type):
            raise InvalidArgument(f"{field}.resource_types[{i}]", "must be a FHIR resource type such as Condition")
    if len(provision.codes) > MAX_PROVISION_CODES:
        raise InvalidArgument(f"{field}.codes", f"at most {MAX_PROVISION_CODES} codes")
    for i, coding in enumerate(provision.codes):
        for name in ("system", "code"):
            value = getattr(coding, name)
            if not value.strip() or len(value) > MAX_DOCUMENT_TEXT:
                raise InvalidArgument(f"{field}.codes[{i}].{name}",
                                      f"must not be empty, at most {MAX_DOCUMENT_TEXT} characters")
    _validate_part2(provision, field, ancestors)
    count = 1
    for i, nested in enumerate(provision.provisions):
        count += _validate_provision(nested, f"{field}.provisions[{i}]", depth + 1, (*ancestors, provision))
    return count


def _validate_text(value: str, field: str, required: bool = False) -> None:
    if required and not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_DOCUMENT_TEXT:
        raise InvalidArgument(field, f"at most {MAX_DOCUMENT_TEXT} characters")


def _validate_count(values: Any, field: str) -> None:
    if len(values) > MAX_DOCUMENT_ITEMS:
        raise InvalidArgument(field, f"at most {MAX_DOCUMENT_ITEMS} entries")


def _validate_reference(value: str, field: str) -> None:
    if not PRINCIPAL_REFERENCE.fullmatch(value):
        raise InvalidArgument(field, "must be a reference <ResourceType>/<CareChain id> (never a name)")


def validate_document(document: policy_pb2.ConsentDocument, field: str = "policy.document") -> None:
    """Check the documentary part of a consent (bounded sizes, references by id only)."""
    _validate_text(document.date_time, f"{field}.date_time")
    for name in ("policy_rule", "categories"):
        codings = getattr(document, name)
        _validate_count(codings, f"{field}.{name}")
        for i, coding in enumerate(codings):
            _validate_text(coding.system, f"{field}.{name}[{i}].system", required=True)
            _validate_text(coding.code, f"{field}.{name}[{i}].code", required=True)
    _validate_count(document.policies, f"{field}.policies")
    for i, policy in enumerate(document.policies):
        if not policy.authority and not policy.uri:
            raise InvalidArgument(f"{field}.policies[{i}]", "needs an authority or a uri")
        _validate_text(policy.authority, f"{field}.policies[{i}].authority")
        _validate_text(policy.uri, f"{field}.policies[{i}].uri")
    for name in ("performers", "organizations"):
        references = getattr(document, name)
        _validate_count(references, f"{field}.{name}")
        for i, reference in enumerate(references):
            _validate_reference(reference, f"{field}.{name}[{i}]")
            if name == "organizations" and not reference.startswith("Organization/"):
                raise InvalidArgument(f"{field}.{name}[{i}]", "must be Organization/<id>")
    attachment = document.source_attachment
    for name in ("content_type", "url", "hash", "title", "creation", "language"):
        _validate_text(getattr(attachment, name), f"{field}.source_attachment.{name}")
    _validate_count(document.verifications, f"{field}.verifications")
    for i, verification in enumerate(document.verifications):
        if verification.verified_with:
            _validate_reference(verification.verified_with, f"{field}.verifications[{i}].verified_with")
        _validate_text(verification.verification_date, f"{field}.verifications[{i}].verification_date")


def validate_policy(policy: policy_pb2.ConsentPolicy, field: str = "policy") -> None:
    """Check a consent policy; raises InvalidArgument naming the field, e.g. ``policy.provisions[0].purposes``."""
    if not policy.provisions:
        raise InvalidArgument(f"{field}.provisions", "at least one provision is required")
    _validate_period(policy.period, f"{field}.period")
    total = 0
    for i, provision in enumerate(policy.provisions):
        total += _validate_provision(provision, f"{field}.provisions[{i}]", 1)
    if total > MAX_PROVISIONS:
        raise InvalidArgument(f"{field}.provisions", f"more than {MAX_PROVISIONS} provisions in one consent")
    validate_document(policy.document, f"{field}.document")


# --- evaluation ----------------------------------------------------------------

@dataclass(frozen=True)
class AccessRequest:
    """What is being asked: an actor acting on one record for a purpose, at a time."""

    actor_id: str
    actor_organization_id: str
    actor_specialty: str
    purpose: int  # common_pb2.PurposeOfUse
    action: int  # common_pb2.ConsentAction; UNSPECIFIED means ACCESS
    categories: tuple[int, ...]  # the record's sensitivity categories
    record_id: str
    patient_id: str
    now_ms: int
    data_date_ms: int = 0  # the record's clinical date (UTC day); 0 = none
    resource_type: str = ""  # the record's FHIR resource type
    patient_organization_id: str = ""  # the organisation that registered the patient
    break_glass: bool = False  # the clinician explicitly asked to break the glass
    record_author_id: str = ""  # who wrote the record (practitioner or organisation)
    record_organization_id: str = ""  # the organisation that wrote (holds) the record
    codes: tuple[str, ...] = ()  # the record's primary codes, "<canonical system>|<code>"
    actor_is_organization: bool = False  # an organisation itself asks (a SMART Backend Services client)

    @property
    def actor_kind(self) -> str:
        """How reasons name the actor's kind."""
        return "organization" if self.actor_is_organization else "practitioner"

    @property
    def effective_action(self) -> int:
        return self.action or _Action.CONSENT_ACTION_ACCESS

    @property
    def sensitive_categories(self) -> tuple[int, ...]:
        """The record's categories that need explicit consent, in a stable order."""
        return tuple(sorted({c for c in self.categories if is_sensitive(c)}))


@dataclass(frozen=True)
class PolicyDecision:
    """The outcome of :func:`evaluate`, explained."""

    effect: int  # consent_pb2.DecisionEffect
    reason: str
    consent_id: str = ""
    provision_path: str = ""
    break_glass: bool = False
    break_glass_started_at_ms: int = 0
    break_glass_expires_at_ms: int = 0

    @property
    def permitted(self) -> bool:
        return self.effect == PERMIT


@dataclass(frozen=True)
class _Match:
    """A provision that decides for its consent (a matching leaf of the matching tree)."""

    consent_id: str
    path: str
    provision: policy_pb2.Provision
    actor: str  # how the actor matched, e.g. "specialty oncology"


def _in_period(period: common_pb2.Period, now_ms: int) -> bool:
    return (not period.start_ms or now_ms >= period.start_ms) and (not period.end_ms or now_ms < period.end_ms)


def _has_period(period: common_pb2.Period) -> bool:
    return bool(period.start_ms or period.end_ms)


def _recipient_match(recipients: list[policy_pb2.ConsentActor], request: AccessRequest,
                     permit: bool = True) -> str | None:
    """How the request's actor matches the provision's recipient actors, or None.

    An organisation asking itself (a SMART Backend Services client) is permitted only by a recipient
    naming it, never by "any actor", a practitioner or a specialty (what a patient grants to people);
    a deny without recipients ("anyone") denies it too, so it never gets what its practitioners are denied.
    """
    if request.actor_is_organization:
        named = any(actor.WhichOneof("actor") == "organization_id"
                    and actor.organization_id == request.actor_organization_id for actor in recipients)
        if named:
            return f"organization {request.actor_organization_id}"
        return "any actor" if not recipients and not permit else None
    if not recipients:
        return "any actor"
    for actor in recipients:
        which = actor.WhichOneof("actor")
        if which == "practitioner_id" and actor.practitioner_id == request.actor_id:
            return f"practitioner {actor.practitioner_id}"
        if (
            which == "organization_id"
            and request.actor_organization_id
            and actor.organization_id == request.actor_organization_id
        ):
            return f"organization {actor.organization_id}"
        if (
            which == "specialty"
            and request.actor_specialty
            and actor.specialty.strip().casefold() == request.actor_specialty.strip().casefold()
            and specialty_scope_matches(actor, request)
        ):
            return f"specialty {actor.specialty}"
    return None


def specialty_scope_matches(actor: policy_pb2.ConsentActor, request: AccessRequest) -> bool:
    """Whether the actor's organisation is in a specialty actor's organisation scope.

    Listed organisations when there are any; any member organisation only with
    any_organization; otherwise the patient's registering organisation alone.
    """
    if not request.actor_organization_id:
        return False
    if actor.any_organization:
        return True
    if actor.specialty_organization_ids:
        return request.actor_organization_id in actor.specialty_organization_ids
    return request.actor_organization_id == request.patient_organization_id


def _data_actor_match(data_actors: list[policy_pb2.ConsentActor], request: AccessRequest) -> str | None:
    """How the record matches the provision's author/custodian actors ("" when there are none), or None."""
    if not data_actors:
        return ""
    for actor in data_actors:
        which = actor.WhichOneof("actor")
        value = getattr(actor, which or "practitioner_id")
        if actor.role == _Role.ACTOR_ROLE_AUTHOR:
            if which == "practitioner_id" and value == request.record_author_id:
                return f"records authored by practitioner {value}"
            if which == "organization_id" and value in (request.record_author_id, request.record_organization_id):
                return f"records authored by organization {value}"
        elif actor.role == _Role.ACTOR_ROLE_CUSTODIAN and value == request.record_organization_id:
            return f"records held by organization {value}"
    return None


def _actor_match(provision: policy_pb2.Provision, request: AccessRequest) -> str | None:
    """How the request (its actor, and the record's author or custodian) matches the provision's actors, or None."""
    recipients = [a for a in provision.actors if a.role in _RECIPIENT_ROLES]
    data_actors = [a for a in provision.actors if a.role not in _RECIPIENT_ROLES]
    recipient = _recipient_match(recipients, request, provision.type == policy_pb2.PROVISION_TYPE_PERMIT)
    if recipient is None:
        return None
    data = _data_actor_match(data_actors, request)
    if data is None:
        return None
    return f"{recipient}; {data}" if data else recipient


def _labels_match(provision: policy_pb2.Provision, request: AccessRequest) -> bool:
    """A provision naming categories applies only to records carrying one of them (no categories = NORMAL)."""
    if not provision.categories:
        return True
    carried = set(request.categories) or {_Category.SENSITIVITY_CATEGORY_NORMAL}
    return bool(set(provision.categories) & carried)


def provision_codes(provision: policy_pb2.Provision) -> frozenset[str]:
    """A provision's codes as records carry them: ``<canonical system>|<code>``."""
    return frozenset(clinical_code(c.system, c.code) for c in provision.codes)


def _codes_match(provision: policy_pb2.Provision, request: AccessRequest) -> bool:
    """A provision naming codes applies only to records whose primary code element carries one of them."""
    if not provision.codes:
        return True
    return bool(provision_codes(provision) & set(request.codes))


def _matches(provision: policy_pb2.Provision, request: AccessRequest, labels: bool = True) -> str | None:
    """The actor description when the provision matches the request, else None (labels=False: ignore labels)."""
    actor = _actor_match(provision, request)
    if actor is None:
        return None
    if provision.actions:
        if request.effective_action not in provision.actions:
            return None
    elif provision.type == policy_pb2.PROVISION_TYPE_PERMIT:
        # A permit without actions permits ACCESS only; a deny without actions denies every action.
        if request.effective_action != _Action.CONSENT_ACTION_ACCESS:
            return None
    if provision.purposes and not any(purpose_covers(p, request.purpose) for p in provision.purposes):
        return None
    if not _in_period(provision.period, request.now_ms):
        return None
    if _has_period(provision.data_period) and not (
        request.data_date_ms and _in_period(provision.data_period, request.data_date_ms)
    ):
        return None
    if provision.resource_types and request.resource_type not in provision.resource_types:
        return None
    if provision.data and not any(
        d.record_id == request.record_id and d.resource_type == request.resource_type for d in provision.data
    ):
        return None
    if not _codes_match(provision, request):
        return None
    if labels and not _labels_match(provision, request):
        return None
    return actor


def _deciding(
    consent_id: str, provision: policy_pb2.Provision, path: str, request: AccessRequest, labels: bool = True
) -> Iterator[_Match]:
    """Deciding provisions under provision: the deepest matching ones (exceptions override their parent)."""
    actor = _matches(provision, request, labels)
    if actor is None:
        return
    nested = [
        match
        for i, child in enumerate(provision.provisions)
        for match in _deciding(consent_id, child, f"{path}.provision[{i}]", request, labels)
    ]
    if nested:
        yield from nested
    else:
        yield _Match(consent_id, path, provision, actor)


def _consent_matches(
    consent: consent_pb2.ConsentRecord, request: AccessRequest, labels: bool = True
) -> list[_Match]:
    return [
        match
        for i, provision in enumerate(consent.policy.provisions)
        for match in _deciding(consent.consent_id, provision, f"provision[{i}]", request, labels)
    ]


def names_category(named: Iterable[int], category: int) -> bool:
    """True when a provision's categories cover category: named itself, or its parent (HL7 ETH covers ETHUD)."""
    named = set(named)
    return category in named or PARENT_CATEGORY.get(category) in named


def _uncovered(match: _Match, request: AccessRequest) -> list[int]:
    """Sensitive categories of the record that the permit does not name."""
    return [c for c in request.sensitive_categories if not names_category(match.provision.categories, c)]


def _describe(match: _Match, request: AccessRequest) -> str:
    parts = [f"actor {match.actor}", f"purpose {purpose_name(request.purpose)}"]
    if request.effective_action != _Action.CONSENT_ACTION_ACCESS:
        parts.append(f"action {action_name(request.effective_action)}")
    if match.provision.categories and match.provision.type != policy_pb2.PROVISION_TYPE_DENY:
        # A deny that matched would tell which sensitive category the record carries: never named.
        parts.append("categories " + ", ".join(category_name(c) for c in match.provision.categories))
    if _has_period(match.provision.data_period):
        parts.append("records dated " + _describe_period(match.provision.data_period))
    if match.provision.resource_types:
        parts.append("types " + ", ".join(match.provision.resource_types))
    if match.provision.data:
        parts.append(f"record {request.record_id} named")
    if match.provision.codes and match.provision.type != policy_pb2.PROVISION_TYPE_DENY:
        # Like categories: a deny that matched by code would tell what the record is about.
        parts.append("codes " + ", ".join(f"{c.system}|{c.code}" for c in match.provision.codes))
    return f"consent {match.consent_id} {match.path} ({'; '.join(parts)})"


def _day(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d")


def _describe_period(period: common_pb2.Period) -> str:
    start = _day(period.start_ms) if period.start_ms else "any time"
    end = _day(period.end_ms) if period.end_ms else "open end"
    return f"[{start}, {end})"


def _would_permit(consent: consent_pb2.ConsentRecord, request: AccessRequest) -> bool:
    """Whether a consent, were it in force, would permit: used only to explain a denial."""
    matches = _consent_matches(consent, request)
    if any(m.provision.type == policy_pb2.PROVISION_TYPE_DENY for m in matches):
        return False
    return any(not _uncovered(m, request) for m in matches)


def evaluate(consents: Iterable[consent_pb2.ConsentRecord], request: AccessRequest) -> PolicyDecision:
    """Decide request against a patient's consents (see the module docstring for the rules)."""
    in_force: list[consent_pb2.ConsentRecord] = []
    not_in_force: list[tuple[consent_pb2.ConsentRecord, str]] = []
    for consent in consents:
        if consent.patient_id != request.patient_id:
            continue  # another patient's consent never applies
        if consent.status != consent_pb2.CONSENT_STATUS_ACTIVE:
            not_in_force.append((consent, "was revoked"))
        elif not _in_period(consent.policy.period, request.now_ms):
            not_in_force.append((consent, "is not in force at this time"))
        else:
            in_force.append(consent)

    matches = [match for consent in in_force for match in _consent_matches(consent, request)]
    denies = [m for m in matches if m.provision.type == policy_pb2.PROVISION_TYPE_DENY]
    if denies:
        first = denies[0]
        return PolicyDecision(DENY, f"denied by {_describe(first, request)}", first.consent_id, first.path)

    permits = [m for m in matches if m.provision.type == policy_pb2.PROVISION_TYPE_PERMIT]
    for match in permits:
        if not _uncovered(match, request):
            return PolicyDecision(PERMIT, f"permitted by {_describe(match, request)}", match.consent_id, match.path)

    if permits:
        # Some provision permits this actor and purpose, but not the record's sensitive data.
        missing_everywhere = [
            c for c in request.sensitive_categories if all(c in _uncovered(m, request) for m in permits)
        ]
        # Reasons never name the record's categories (42 CFR 2.13(c)): the audit event carries them.
        if missing_everywhere:
            return PolicyDecision(DENY, "denied: a sensitive category of the record is named by no consent")
        return PolicyDecision(DENY, "denied: no single provision names all sensitive categories of the record")

    # Explain a permit that would apply but for its labels (it covers other data than this record's).
    label_limited = [
        m for consent in in_force for m in _consent_matches(consent, request, labels=False)
        if m.provision.type == policy_pb2.PROVISION_TYPE_PERMIT
    ]
    if label_limited:
        unnamed = [c for c in request.sensitive_categories
                   if all(not names_category(m.provision.categories, c) for m in label_limited)]
        if unnamed:
            return PolicyDecision(DENY, "denied: a sensitive category of the record is named by no consent")
        # The labels are not named: the reason reaches the practitioner, and a consent's labels say
        # which sensitive data the patient has.
        first = label_limited[0]
        return PolicyDecision(
            DENY, f"denied: consent {first.consent_id} {first.path} is limited to security labels this record "
            "does not carry", first.consent_id, first.path,
        )

    for consent, why in not_in_force:
        if _would_permit(consent, request):
            return PolicyDecision(DENY, f"denied: consent {consent.consent_id} {why}", consent.consent_id)

    action = ""
    if request.effective_action != _Action.CONSENT_ACTION_ACCESS:
        action = f" to {action_name(request.effective_action)}"
    return PolicyDecision(
        DENY,
        f"denied: no active consent permits {request.actor_kind} {request.actor_id}{action} "
        f"for {purpose_name(request.purpose)}",
    )


# What a denied caller is told, whatever the reason: the reason itself (which may say that the
# record is sensitive) goes only to the audit trail, which the patient reads.
DENIAL_MESSAGE = "not permitted by the patient's consent"


# --- break-glass -----------------------------------------------------------------

@dataclass(frozen=True)
class BreakGlassRules:
    """Who may break the glass, and for how long (from ConsentSettings)."""

    specialties: frozenset[str]  # normalised: trimmed, lower case
    window_ms: int


@dataclass(frozen=True)
class BreakGlassWindow:
    """A recorded break-glass window of one actor for one patient: [started_at_ms, expires_at_ms)."""

    started_at_ms: int
    expires_at_ms: int


def break_glass_applies(request: AccessRequest, rules: BreakGlassRules) -> bool:
    """Whether the request is a break-glass request: explicitly asked for, ETREAT, ACCESS, by an emergency role."""
    return (
        request.break_glass
        and request.purpose == _Purpose.PURPOSE_OF_USE_ETREAT
        and request.effective_action == _Action.CONSENT_ACTION_ACCESS
        and request.actor_specialty.strip().casefold() in rules.specialties
    )


def decide(
    consents: Iterable[consent_pb2.ConsentRecord],
    request: AccessRequest,
    rules: BreakGlassRules | None = None,
    window: BreakGlassWindow | None = None,
) -> PolicyDecision:
    """Consent first (:func:`evaluate`); when it does not permit, break-glass if the request qualifies.

    window is the actor's current break-glass window for the patient; None means
    a new window would start now (the caller records it when the result is a
    break-glass permit). A window that has ended denies.
    """
    decision = evaluate(consents, request)
    if decision.permitted or rules is None:
        return decision
    if not break_glass_applies(request, rules):
        if request.break_glass and rules.specialties:
            return replace(
                decision,
                reason=f"{decision.reason} (break-glass needs purpose ETREAT, action ACCESS and an emergency "
                f"specialty; actor specialty is {request.actor_specialty or 'none'})",
            )
        return decision
    sensitive = request.sensitive_categories
    if sensitive:
        return PolicyDecision(
            DENY,
            f"denied: break-glass never opens sensitive categories and consent does not permit ({decision.reason})",
            decision.consent_id,
            decision.provision_path,
        )
    if window is None:
        window = BreakGlassWindow(request.now_ms, request.now_ms + rules.window_ms)
    if request.now_ms >= window.expires_at_ms:
        return PolicyDecision(
            DENY,
            f"denied: break-glass window of practitioner {request.actor_id} ended at "
            f"{_instant(window.expires_at_ms)} and consent does not permit ({decision.reason})",
        )
    return PolicyDecision(
        PERMIT,
        f"break-glass: emergency access by practitioner {request.actor_id} "
        f"(specialty {request.actor_specialty}) for ETREAT to non-sensitive data, window until "
        f"{_instant(window.expires_at_ms)}; consent alone: {decision.reason}",
        break_glass=True,
        break_glass_started_at_ms=window.started_at_ms,
        break_glass_expires_at_ms=window.expires_at_ms,
    )


def _instant(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
