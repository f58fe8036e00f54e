"""FHIR R4 ``Consent`` <-> CareChain :class:`ConsentPolicy` (docs/consent.md, "FHIR mapping").

Import validates the resource with the ``fhir.resources`` R4B models (the R4
technical correction; Consent is unchanged from R4), then maps the supported
subset and rejects what CareChain cannot enforce (rather than silently
widening or narrowing a patient's consent). Errors are InvalidArgument naming
the FHIR element, e.g. ``Consent.provision.provision[0].purpose[1]``, and never
echo values.

The mapping keeps meaning both ways: ``import(export(import(x))) == import(x)``.

- The root ``Consent.provision`` of an exported consent is a *container*:
  ``type: deny`` (CareChain's default deny, the "opt-in" pattern) with the
  consent's period and the policy's top-level provisions nested in it. On
  import, a root provision with no rule of its own (no actor, action,
  securityLabel, purpose, class or dataPeriod) is read the same way; a root
  provision with rules becomes the single top-level provision.
- ``actor``: ``Practitioner/<id>`` and ``Organization/<id>`` references (ids
  are CareChain principal ids), or a specialty as ``role`` coded in
  :data:`SPECIALTY_SYSTEM` (reference: a PractitionerRole by that identifier).
- ``action``: consentaction ``access``, ``disclose``, ``correct``.
- ``purpose``: v3-ActReason ``TREAT``, ``ETREAT``, ``HPAYMT``, ``HOPERAT``,
  ``HRESCH``, ``PATRQT``.
- ``securityLabel``: :data:`CATEGORY_LABELS` (HL7 v3 ActCode sensitivity codes;
  oncology has none, so a CareChain code system).
- ``class``: FHIR resource types; ``dataPeriod`` and ``period`` as periods.
- Not supported (rejected): ``provision.code`` and ``provision.data`` (CareChain
  decides on labels, not on individual codes or resources, which would put
  PHI on the ledger) and any ``modifierExtension``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from carechain import security_labels
from carechain.common.v1 import common_pb2
from carechain.consent.policy import validate_policy
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.errors import InvalidArgument
from carechain.records.fhir import fhir_date_ms, fhir_time_range

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
LOINC = "http://loinc.org"
SPECIALTY_SYSTEM = "https://carechain.dev/fhir/CodeSystem/specialty"
SENSITIVITY_SYSTEM = security_labels.CARECHAIN_SENSITIVITY
PSEUDONYM_SYSTEM = "https://carechain.dev/fhir/NamingSystem/patient-pseudonym"

_Category = common_pb2.SensitivityCategory
_Purpose = common_pb2.PurposeOfUse
_Action = common_pb2.ConsentAction

PURPOSES: dict[str, int] = {
    "TREAT": _Purpose.PURPOSE_OF_USE_TREAT,
    "ETREAT": _Purpose.PURPOSE_OF_USE_ETREAT,
    "HPAYMT": _Purpose.PURPOSE_OF_USE_HPAYMT,
    "HOPERAT": _Purpose.PURPOSE_OF_USE_HOPERAT,
    "HRESCH": _Purpose.PURPOSE_OF_USE_HRESCH,
    "PATRQT": _Purpose.PURPOSE_OF_USE_PATRQT,
}
ACTIONS: dict[str, int] = {
    "access": _Action.CONSENT_ACTION_ACCESS,
    "disclose": _Action.CONSENT_ACTION_DISCLOSE,
    "correct": _Action.CONSENT_ACTION_CORRECT,
}
# The security labels of each category, written and read: one mapping for every export (carechain.security_labels).
CATEGORY_LABELS = security_labels.CATEGORY_LABELS
LABEL_CATEGORIES = security_labels.LABEL_CATEGORIES
_RULE_ELEMENTS = ("actor", "action", "securityLabel", "purpose", "class", "code", "data", "dataPeriod")
_REFERENCE = re.compile(r"(Practitioner|Organization)/([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
FIELD = "Consent"


@dataclass(frozen=True)
class ImportedConsent:
    """A FHIR Consent read into CareChain terms."""

    policy: policy_pb2.ConsentPolicy
    status: str  # FHIR Consent.status, e.g. "active"
    patient_id: str  # the CareChain pseudonym when Consent.patient names one, else ""
    consent_id: str  # Consent.id when it is a UUID, else ""


# --- import ---------------------------------------------------------------------------------------------

def consent_from_fhir(resource: dict[str, Any] | str | bytes) -> ImportedConsent:
    """Read a FHIR R4 Consent (a dict or JSON) into a validated ConsentPolicy; InvalidArgument naming the element."""
    content = _load(resource)
    _validate_model(content)
    if content.get("status") is None:
        raise InvalidArgument(f"{FIELD}.status", "required")
    if content.get("modifierExtension"):
        raise InvalidArgument(f"{FIELD}.modifierExtension", "is not supported (it could change the meaning)")
    scope_codes = {(c.get("system"), c.get("code")) for c in content["scope"].get("coding", [])}
    if (CONSENT_SCOPE, "patient-privacy") not in scope_codes:
        raise InvalidArgument(f"{FIELD}.scope", f"must be {CONSENT_SCOPE}|patient-privacy")
    root = content.get("provision")
    if not isinstance(root, dict):
        raise InvalidArgument(f"{FIELD}.provision", "required: the rules of the consent")
    policy = _root_policy(root)
    try:
        validate_policy(policy)
    except InvalidArgument as exc:
        container = not any(root.get(k) for k in _RULE_ELEMENTS) and root.get("type") in (None, "deny")
        raise InvalidArgument(_fhir_path(exc.field, container), exc.message.split(": ", 1)[-1]) from exc
    return ImportedConsent(policy, str(content["status"]), _patient_pseudonym(content), _uuid_or_empty(content))


def _load(resource: dict[str, Any] | str | bytes) -> dict[str, Any]:
    if isinstance(resource, dict):
        content = resource
    else:
        try:
            content = json.loads(resource)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(FIELD, f"is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(content, dict) or content.get("resourceType") != "Consent":
        raise InvalidArgument(f"{FIELD}.resourceType", "must be Consent")
    return content


def _validate_model(content: dict[str, Any]) -> None:
    try:
        get_fhir_model_class("Consent").model_validate(content)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        location = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in first.get("loc", ()) if part != "__root__"
        ).replace(".[", "[")
        raise InvalidArgument(f"{FIELD}.{location}" if location else FIELD, f"not a valid FHIR R4 Consent: "
                              f"{first.get('msg', 'invalid')}") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(FIELD, "not a valid FHIR R4 Consent") from exc


def _root_policy(root: dict[str, Any]) -> policy_pb2.ConsentPolicy:
    field = f"{FIELD}.provision"
    has_rules = any(root.get(key) for key in _RULE_ELEMENTS)
    if root.get("modifierExtension"):
        raise InvalidArgument(f"{field}.modifierExtension", "is not supported (it could change the meaning)")
    if has_rules or root.get("type") == "permit":
        return policy_pb2.ConsentPolicy(provisions=[_provision(root, field)])
    policy = policy_pb2.ConsentPolicy()
    if root.get("period"):
        policy.period.CopyFrom(_period(root["period"], f"{field}.period"))
    nested = root.get("provision") or []
    if nested:
        policy.provisions.extend(_provision(child, f"{field}.provision[{i}]") for i, child in enumerate(nested))
    elif root.get("type") == "deny":
        policy.provisions.append(policy_pb2.Provision(type=policy_pb2.PROVISION_TYPE_DENY))  # "deny everything"
    else:
        raise InvalidArgument(field, "has no rules (no type, actor, purpose or nested provision)")
    return policy


def _provision(node: dict[str, Any], field: str) -> policy_pb2.Provision:
    for unsupported, why in (
        ("code", "is not supported: CareChain decides on security labels, not on individual codes"),
        ("data", "is not supported: CareChain decides on security labels, not on individual resources"),
        ("modifierExtension", "is not supported (it could change the meaning)"),
    ):
        if node.get(unsupported):
            raise InvalidArgument(f"{field}.{unsupported}", why)
    kind = node.get("type")
    if kind not in ("permit", "deny"):
        raise InvalidArgument(f"{field}.type", "required: permit or deny")
    provision = policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT if kind == "permit" else policy_pb2.PROVISION_TYPE_DENY
    )
    for i, actor in enumerate(node.get("actor") or []):
        provision.actors.append(_actor(actor, f"{field}.actor[{i}]"))
    for i, action in enumerate(node.get("action") or []):
        value = _one_code(action.get("coding") or [], {CONSENT_ACTION: ACTIONS}, f"{field}.action[{i}]")
        _append_unique(provision.actions, value)
    for i, purpose in enumerate(node.get("purpose") or []):
        _append_unique(provision.purposes, _code(purpose, {ACT_REASON: PURPOSES}, f"{field}.purpose[{i}]"))
    for i, label in enumerate(node.get("securityLabel") or []):
        category = security_labels.category_of_label(label.get("system"), label.get("code"))
        if category is None:
            raise InvalidArgument(f"{field}.securityLabel[{i}]", "unsupported security label (docs/consent.md)")
        _append_unique(provision.categories, category)
    for i, coding in enumerate(node.get("class") or []):
        if coding.get("system") != RESOURCE_TYPES or not coding.get("code"):
            raise InvalidArgument(f"{field}.class[{i}]", f"must be a FHIR resource type coded in {RESOURCE_TYPES}")
        if coding["code"] not in provision.resource_types:
            provision.resource_types.append(coding["code"])
    if node.get("period"):
        provision.period.CopyFrom(_period(node["period"], f"{field}.period"))
    if node.get("dataPeriod"):
        provision.data_period.CopyFrom(_period(node["dataPeriod"], f"{field}.dataPeriod"))
    for i, child in enumerate(node.get("provision") or []):
        provision.provisions.append(_provision(child, f"{field}.provision[{i}]"))
    return provision


def _actor(actor: dict[str, Any], field: str) -> policy_pb2.ConsentActor:
    role_codings = (actor.get("role") or {}).get("coding") or []
    for coding in role_codings:
        if coding.get("system") == SPECIALTY_SYSTEM and coding.get("code"):
            return policy_pb2.ConsentActor(specialty=str(coding["code"]))
    reference = (actor.get("reference") or {}).get("reference")
    match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise InvalidArgument(
            f"{field}.reference",
            "must be Practitioner/<id> or Organization/<id>, or the role a specialty coded in " + SPECIALTY_SYSTEM,
        )
    if match.group(1) == "Practitioner":
        return policy_pb2.ConsentActor(practitioner_id=match.group(2))
    return policy_pb2.ConsentActor(organization_id=match.group(2))


def _code(coding: dict[str, Any], systems: dict[str, dict[str, int]], field: str) -> int:
    value = systems.get(str(coding.get("system")), {}).get(str(coding.get("code")))
    if value is None:
        raise InvalidArgument(field, f"unsupported code; expected one of {_expected(systems)}")
    return value


def _one_code(codings: list[dict[str, Any]], systems: dict[str, dict[str, int]], field: str) -> int:
    for coding in codings:
        value = systems.get(str(coding.get("system")), {}).get(str(coding.get("code")))
        if value is not None:
            return value
    raise InvalidArgument(field, f"no supported coding; expected one of {_expected(systems)}")


def _expected(systems: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{system}|{code}" for system, codes in systems.items() for code in codes)


def _append_unique(values: Any, value: int) -> None:
    if value not in values:
        values.append(value)


def _period(node: dict[str, Any], field: str) -> common_pb2.Period:
    period = common_pb2.Period()
    try:
        if node.get("start"):
            period.start_ms = fhir_time_range(node["start"])[0]
        if node.get("end"):
            period.end_ms = fhir_time_range(node["end"])[1]  # FHIR ends are inclusive at their precision
    except ValueError as exc:
        raise InvalidArgument(field, "start and end must be FHIR dates or dateTimes") from exc
    if period.start_ms < 0 or period.end_ms < 0:
        raise InvalidArgument(field, "must not start or end before 1970")
    return period


def _patient_pseudonym(content: dict[str, Any]) -> str:
    identifier = (content.get("patient") or {}).get("identifier") or {}
    return str(identifier.get("value", "")) if identifier.get("system") == PSEUDONYM_SYSTEM else ""


def _uuid_or_empty(content: dict[str, Any]) -> str:
    try:
        return str(uuid.UUID(str(content.get("id", ""))))
    except ValueError:
        return ""


def _fhir_path(proto_path: str, container: bool) -> str:
    """A validate_policy field (``policy.provisions[0].purposes``) as a FHIR element path."""
    path = proto_path
    if container:
        path = re.sub(r"^policy\.provisions\[(\d+)\]", rf"{FIELD}.provision.provision[\1]", path)
        path = re.sub(r"^policy\.provisions", f"{FIELD}.provision.provision", path)
    else:
        path = re.sub(r"^policy\.provisions\[0\]", f"{FIELD}.provision", path)
        path = re.sub(r"^policy\.provisions", f"{FIELD}.provision", path)
    path = re.sub(r"^policy\.period", f"{FIELD}.provision.period", path)
    for proto_name, fhir_name in (
        (".provisions[", ".provision["), (".purposes", ".purpose"), (".actions", ".action"),
        (".categories", ".securityLabel"), (".actors[", ".actor["), (".data_period", ".dataPeriod"),
        (".resource_types", ".class"), (".start_ms", ".start"), (".end_ms", ".end"),
    ):
        path = path.replace(proto_name, fhir_name)
    return path


# --- export ---------------------------------------------------------------------------------------------

def consent_to_fhir(record: consent_pb2.ConsentRecord) -> dict[str, Any]:
    """A consent as a FHIR R4 Consent resource (a dict ready for json.dumps)."""
    root: dict[str, Any] = {"type": "deny"}
    if record.policy.HasField("period") and (record.policy.period.start_ms or record.policy.period.end_ms):
        root["period"] = _fhir_period(record.policy.period)
    root["provision"] = [_fhir_provision(p) for p in record.policy.provisions]
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": record.consent_id,
        "status": "active" if record.status == consent_pb2.CONSENT_STATUS_ACTIVE else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": record.patient_id}},
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
        "provision": root,
    }
    if record.granted_at_ms:
        resource["dateTime"] = fhir_date_ms(record.granted_at_ms)
    if not resource["id"]:
        del resource["id"]
    if not record.patient_id:
        del resource["patient"]
    return resource


def consent_json(record: consent_pb2.ConsentRecord) -> str:
    """:func:`consent_to_fhir` as compact, stable JSON."""
    return json.dumps(consent_to_fhir(record), separators=(",", ":"), sort_keys=True)


def policy_to_fhir(policy: policy_pb2.ConsentPolicy, patient_id: str = "") -> dict[str, Any]:
    """An active FHIR Consent carrying just a policy (e.g. to show a policy before granting it)."""
    return consent_to_fhir(
        consent_pb2.ConsentRecord(patient_id=patient_id, policy=policy, status=consent_pb2.CONSENT_STATUS_ACTIVE)
    )


def _fhir_period(period: common_pb2.Period) -> dict[str, str]:
    result = {}
    if period.start_ms:
        result["start"] = fhir_date_ms(period.start_ms)
    if period.end_ms:
        result["end"] = fhir_date_ms(period.end_ms, end=True)
    return result


def _fhir_provision(provision: policy_pb2.Provision) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "permit" if provision.type == policy_pb2.PROVISION_TYPE_PERMIT else "deny"}
    if provision.period.start_ms or provision.period.end_ms:
        node["period"] = _fhir_period(provision.period)
    if provision.actors:
        node["actor"] = [_fhir_actor(actor) for actor in provision.actors]
    if provision.actions:
        codes = {v: k for k, v in ACTIONS.items()}
        node["action"] = [{"coding": [{"system": CONSENT_ACTION, "code": codes[a]}]} for a in provision.actions]
    if provision.categories:
        node["securityLabel"] = security_labels.security_labels(provision.categories)
    if provision.purposes:
        codes = {v: k for k, v in PURPOSES.items()}
        node["purpose"] = [{"system": ACT_REASON, "code": codes[p]} for p in provision.purposes]
    if provision.resource_types:
        node["class"] = [{"system": RESOURCE_TYPES, "code": t} for t in provision.resource_types]
    if provision.data_period.start_ms or provision.data_period.end_ms:
        node["dataPeriod"] = _fhir_period(provision.data_period)
    if provision.provisions:
        node["provision"] = [_fhir_provision(child) for child in provision.provisions]
    return node


def _fhir_actor(actor: policy_pb2.ConsentActor) -> dict[str, Any]:
    recipient = {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP", "display": "information recipient"}]}
    which = actor.WhichOneof("actor")
    if which == "practitioner_id":
        return {"role": recipient, "reference": {"reference": f"Practitioner/{actor.practitioner_id}"}}
    if which == "organization_id":
        return {"role": recipient, "reference": {"reference": f"Organization/{actor.organization_id}"}}
    return {
        "role": {"coding": [{"system": SPECIALTY_SYSTEM, "code": actor.specialty}]},
        "reference": {"type": "PractitionerRole", "display": f"any practitioner with specialty {actor.specialty}"},
    }
