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

  * actor: no actors = any actor; otherwise one of them matches: a
    ``practitioner_id`` equal to the actor, an ``organization_id`` equal to the
    actor's organisation, or a ``specialty`` equal to the actor's (attested)
    specialty, compared case-insensitively, *and* the actor's organisation in
    the specialty's scope (:func:`specialty_scope_matches`): the organisations
    the actor lists in ``specialty_organization_ids``; when it lists none, the
    patient's registering organisation only; any member organisation only
    with ``any_organization``;
  * action: no actions = ACCESS only; otherwise the requested action is listed;
  * purpose: no purposes = any purpose (only nested provisions and denies may
    leave it empty); otherwise the requested purpose is listed;
  * period: the provision's own period contains ``now`` (half-open, 0 = open);
  * data period: when set, the record's clinical date (``data_date_ms``, day
    precision) lies inside it; a record without a clinical date never matches
    a provision with a data period (permit or deny);
  * resource types: when listed, the record's FHIR resource type is one of them;
  * categories, for a DENY only: a deny naming categories matches only records
    carrying one of them; a deny without categories matches every record.

- **Categories of a PERMIT.** A matching permit *covers* the record only when
  every sensitive category of the record (every category except NORMAL) is
  named in that provision's own categories. A record with only NORMAL (or no)
  categories is covered by any matching permit. Categories are not inherited
  from a parent provision: sensitive data needs a provision that names it.
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

from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.errors import InvalidArgument
from carechain.sensitivity import SENSITIVE_CATEGORIES, category_name

PERMIT = consent_pb2.DECISION_EFFECT_PERMIT
DENY = consent_pb2.DECISION_EFFECT_DENY

_Category = common_pb2.SensitivityCategory
_Purpose = common_pb2.PurposeOfUse
_Action = common_pb2.ConsentAction

# Deeper nesting than this is rejected: real consents are shallow, and it bounds evaluation.
MAX_PROVISION_DEPTH = 8
MAX_PROVISIONS = 256
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


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
        raise InvalidArgument(f"{field}.specialty_organization_ids", "must be empty with any_organization")
    for i, organization_id in enumerate(actor.specialty_organization_ids):
        if not organization_id.strip():
            raise InvalidArgument(f"{field}.specialty_organization_ids[{i}]", "must not be empty")


def _validate_provision(provision: policy_pb2.Provision, field: str, depth: int) -> int:
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
    count = 1
    for i, nested in enumerate(provision.provisions):
        count += _validate_provision(nested, f"{field}.provisions[{i}]", depth + 1)
    return count


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


def _actor_match(provision: policy_pb2.Provision, request: AccessRequest) -> str | None:
    """How the request's actor matches the provision's actors, or None."""
    if not provision.actors:
        return "any actor"
    for actor in provision.actors:
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


def _matches(provision: policy_pb2.Provision, request: AccessRequest) -> str | None:
    """The actor description when the provision matches the request, else None."""
    actor = _actor_match(provision, request)
    if actor is None:
        return None
    actions = provision.actions or (_Action.CONSENT_ACTION_ACCESS,)
    if request.effective_action not in actions:
        return None
    if provision.purposes and request.purpose not in provision.purposes:
        return None
    if not _in_period(provision.period, request.now_ms):
        return None
    if _has_period(provision.data_period) and not (
        request.data_date_ms and _in_period(provision.data_period, request.data_date_ms)
    ):
        return None
    if provision.resource_types and request.resource_type not in provision.resource_types:
        return None
    if provision.type == policy_pb2.PROVISION_TYPE_DENY and provision.categories:
        if not set(provision.categories) & set(request.categories):
            return None
    return actor


def _deciding(
    consent_id: str, provision: policy_pb2.Provision, path: str, request: AccessRequest
) -> Iterator[_Match]:
    """Deciding provisions under provision: the deepest matching ones (exceptions override their parent)."""
    actor = _matches(provision, request)
    if actor is None:
        return
    nested = [
        match
        for i, child in enumerate(provision.provisions)
        for match in _deciding(consent_id, child, f"{path}.provision[{i}]", request)
    ]
    if nested:
        yield from nested
    else:
        yield _Match(consent_id, path, provision, actor)


def _consent_matches(consent: consent_pb2.ConsentRecord, request: AccessRequest) -> list[_Match]:
    return [
        match
        for i, provision in enumerate(consent.policy.provisions)
        for match in _deciding(consent.consent_id, provision, f"provision[{i}]", request)
    ]


def _uncovered(match: _Match, request: AccessRequest) -> list[int]:
    """Sensitive categories of the record that the permit does not name."""
    named = set(match.provision.categories)
    return [c for c in request.sensitive_categories if c not in named]


def _describe(match: _Match, request: AccessRequest) -> str:
    parts = [f"actor {match.actor}", f"purpose {purpose_name(request.purpose)}"]
    if request.effective_action != _Action.CONSENT_ACTION_ACCESS:
        parts.append(f"action {action_name(request.effective_action)}")
    if match.provision.categories:
        parts.append("categories " + ", ".join(category_name(c) for c in match.provision.categories))
    if _has_period(match.provision.data_period):
        parts.append("records dated " + _describe_period(match.provision.data_period))
    if match.provision.resource_types:
        parts.append("types " + ", ".join(match.provision.resource_types))
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
        if missing_everywhere:
            return PolicyDecision(
                DENY,
                f"denied: record category {category_name(missing_everywhere[0])} is sensitive "
                "and no consent names it",
            )
        names = ", ".join(category_name(c) for c in request.sensitive_categories)
        return PolicyDecision(
            DENY, f"denied: no single provision names all sensitive categories of the record ({names})"
        )

    for consent, why in not_in_force:
        if _would_permit(consent, request):
            return PolicyDecision(DENY, f"denied: consent {consent.consent_id} {why}", consent.consent_id)

    action = ""
    if request.effective_action != _Action.CONSENT_ACTION_ACCESS:
        action = f" to {action_name(request.effective_action)}"
    return PolicyDecision(
        DENY,
        f"denied: no active consent permits practitioner {request.actor_id}{action} "
        f"for {purpose_name(request.purpose)}",
    )


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
        names = ", ".join(category_name(c) for c in sensitive)
        return PolicyDecision(
            DENY,
            f"denied: break-glass never opens sensitive categories (record carries {names}) "
            f"and consent does not permit ({decision.reason})",
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
