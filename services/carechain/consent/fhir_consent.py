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
  securityLabel, purpose, class, code, data or dataPeriod) is read the same way; a root
  provision with rules becomes the single top-level provision.
- ``actor``: ``Practitioner/<id>`` and ``Organization/<id>`` references (ids
  are CareChain principal ids), or a specialty as ``role`` coded in
  :data:`SPECIALTY_SYSTEM` (reference: a PractitionerRole by that identifier). A specialty actor's
  organisation scope is the actor's :data:`SPECIALTY_SCOPE_EXTENSION` (repeated): ``valueCode``
  :data:`ANY_MEMBER_ORGANIZATION`, or one ``valueReference`` ``Organization/<id>`` per organisation;
  none = the patient's registering organisation only.
- ``action``: consentaction ``access``, ``disclose``, ``correct``.
- ``purpose``: v3-ActReason ``TREAT``, ``ETREAT``, ``HPAYMT``, ``HOPERAT``,
  ``HRESCH``, ``PATRQT``.
- ``securityLabel``: :data:`CATEGORY_LABELS` (HL7 v3 ActCode sensitivity codes;
  oncology has none, so a CareChain code system).
- ``class``: FHIR resource types; ``dataPeriod`` and ``period`` as periods.
- ``data``: specific records, ``meaning: instance`` only, as
  ``<ResourceType>/<CareChain record id>``.
- ``code``: clinical codes (a list of CodeableConcept, every coding counts),
  stored with the system in canonical form (URI or OID forms of SNOMED CT,
  LOINC, RxNorm, ICD: ``urn:oid:2.16.840.1.113883.6.96`` is read as
  ``http://snomed.info/sct``) and exported one coding per CodeableConcept.
  Enforced against the codes of the record's primary code element (sealed in
  its ledger metadata), exact codes only: no hierarchy or subsumption.
- Not supported (rejected): any ``modifierExtension`` or extension other than
  :data:`SPECIALTY_SCOPE_EXTENSION` on a specialty actor.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from carechain.common.v1 import common_pb2
from carechain.consent.policy import PRINCIPAL_REFERENCE, validate_policy
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.errors import InvalidArgument
from carechain.core.fhir import fhir_date_ms, fhir_time_range
from carechain.labels import security_labels
from carechain.labels.sensitivity import canonical_system

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
LOINC = "http://loinc.org"
SPECIALTY_SYSTEM = "https://carechain.dev/fhir/CodeSystem/specialty"
# A specialty actor's organisation scope (ConsentActor.any_organization / specialty_organization_ids).
SPECIALTY_SCOPE_EXTENSION = "https://carechain.dev/fhir/StructureDefinition/specialty-organization-scope"
ANY_MEMBER_ORGANIZATION = "any-member-organization"  # its valueCode for any_organization
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
    # More specific ActReason purposes (consent/policy.py PURPOSE_PARENTS places each under its parent).
    "BTG": _Purpose.PURPOSE_OF_USE_BTG,
    "COC": _Purpose.PURPOSE_OF_USE_COC,
    "POPHLTH": _Purpose.PURPOSE_OF_USE_POPHLTH,
    "CLINTRCH": _Purpose.PURPOSE_OF_USE_CLINTRCH,
    "COVAUTH": _Purpose.PURPOSE_OF_USE_COVAUTH,
    "PATADMIN": _Purpose.PURPOSE_OF_USE_PATADMIN,
    "FAMRQT": _Purpose.PURPOSE_OF_USE_FAMRQT,
    "PWATRNY": _Purpose.PURPOSE_OF_USE_PWATRNY,
}
ACTIONS: dict[str, int] = {
    "access": _Action.CONSENT_ACTION_ACCESS,
    "disclose": _Action.CONSENT_ACTION_DISCLOSE,
    "correct": _Action.CONSENT_ACTION_CORRECT,
}
# The security labels of each category, written and read: one mapping for every export (labels.security_labels).
CATEGORY_LABELS = security_labels.CATEGORY_LABELS
LABEL_CATEGORIES = security_labels.LABEL_CATEGORIES
_RULE_ELEMENTS = ("actor", "action", "securityLabel", "purpose", "class", "code", "data", "dataPeriod")
_REFERENCE = re.compile(r"(Practitioner|Organization)/([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_ORGANIZATION_REFERENCE = re.compile(r"Organization/([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_DATA_REFERENCE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9][A-Za-z0-9.-]{0,63})")
FIELD = "Consent"


@dataclass(frozen=True)
class ImportedConsent:
    """A FHIR Consent read into CareChain terms."""

    policy: policy_pb2.ConsentPolicy
    status: str  # FHIR Consent.status, e.g. "active"
    patient_id: str  # the CareChain pseudonym when Consent.patient names one, else ""
    consent_id: str  # Consent.id when it is a UUID, else ""


# --- the elements CareChain reads ------------------------------------------------------------------------
# Every element of an incoming Consent must be listed here (a nested dict is a complex element, LEAF a
# primitive): anything else is refused with INVALID_ARGUMENT naming it, never silently dropped, because
# CareChain could not enforce it. Display texts (Coding.display, Reference.display) are accepted and not
# stored: they carry no meaning of their own and may carry names, which never go on the ledger.
LEAF: dict[str, Any] = {}
_CODING = {"system": LEAF, "code": LEAF, "display": LEAF}
_CONCEPT = {"coding": _CODING}
_CLINICAL_CONCEPT = {"coding": _CODING, "text": LEAF}  # provision.code: its text, like a display, is not stored
_PERIOD = {"start": LEAF, "end": LEAF}
_REFERENCE_BY_ID = {"reference": LEAF, "display": LEAF}
_PROVISION: dict[str, Any] = {
    "type": LEAF, "period": _PERIOD,
    "actor": {"role": _CONCEPT, "reference": {"reference": LEAF, "type": LEAF, "display": LEAF},
              # Only SPECIALTY_SCOPE_EXTENSION (check_elements refuses every other url).
              "extension": {"url": LEAF, "valueCode": LEAF, "valueReference": {"reference": LEAF}}},
    "action": _CONCEPT, "securityLabel": _CODING, "purpose": _CODING, "class": _CODING,
    "dataPeriod": _PERIOD, "data": {"meaning": LEAF, "reference": _REFERENCE_BY_ID},
    "code": _CLINICAL_CONCEPT,
}
_PROVISION["provision"] = _PROVISION
_CONSENT: dict[str, Any] = {
    "resourceType": LEAF, "id": LEAF,
    # Server-managed metadata, not consent meaning (meta.security and meta.tag are refused).
    "meta": {"versionId": LEAF, "lastUpdated": LEAF, "profile": LEAF, "source": LEAF},
    "status": LEAF, "scope": _CONCEPT, "category": _CONCEPT,
    # The consent's patient is the signed GrantConsent's patient; a pseudonym given here is reported back.
    "patient": {"reference": LEAF, "type": LEAF, "identifier": {"system": LEAF, "value": LEAF}, "display": LEAF},
    "dateTime": LEAF, "performer": _REFERENCE_BY_ID, "organization": _REFERENCE_BY_ID,
    "sourceAttachment": {"contentType": LEAF, "language": LEAF, "url": LEAF, "size": LEAF, "hash": LEAF,
                         "title": LEAF, "creation": LEAF},
    "policy": {"authority": LEAF, "uri": LEAF},
    "policyRule": _CONCEPT,
    "verification": {"verified": LEAF, "verifiedWith": _REFERENCE_BY_ID, "verificationDate": LEAF},
    "provision": _PROVISION,
}
# Why some well-known elements are refused (the default: CareChain cannot enforce it).
_REFUSED_BECAUSE = {
    "modifierExtension": "is not supported (it could change the meaning)",
    "extension": "is not supported: CareChain cannot enforce an extension it does not know",
    "data": "the signed document's content never goes on the ledger; give its url and hash",
    "text": "is not supported: CareChain cannot check that a narrative says what the provisions say",
    "sourceReference": "is not supported; use sourceAttachment (url and hash)",
    "identifier": "is not supported: CareChain identifies a consent by its id",
    "security": "is not supported: CareChain cannot enforce labels on the consent itself",
    "tag": "is not supported: CareChain cannot enforce tags on the consent itself",
}
_EXTENSION_URLS = frozenset({SPECIALTY_SCOPE_EXTENSION})  # the only extensions an allowlisted `extension` may be
DEFAULT_CATEGORY = (LOINC, "59284-0")  # "Patient Consent", exported when the consent gave no category
DEFAULT_POLICY_RULE = (ACT_CODE, "OPTIN")  # CareChain's default deny, exported when the consent gave no rule
POLICY_RULES = ("OPTIN", "OPTOUT")  # v3-ActCode; CareChain enforces the provisions either way (docs/consent.md)
ACTOR_ROLES: dict[str, int] = {
    "IRCP": policy_pb2.ACTOR_ROLE_UNSPECIFIED,  # the default: the recipient
    "PRCP": policy_pb2.ACTOR_ROLE_PRIMARY_RECIPIENT,
    "AUT": policy_pb2.ACTOR_ROLE_AUTHOR,
    "CST": policy_pb2.ACTOR_ROLE_CUSTODIAN,
}
_ROLE_CODES = {**{v: k for k, v in ACTOR_ROLES.items()}, policy_pb2.ACTOR_ROLE_RECIPIENT: "IRCP"}
_ROLE_DISPLAYS = {"IRCP": "information recipient", "PRCP": "primary information recipient", "AUT": "author",
                  "CST": "custodian"}


def check_elements(node: Any, spec: dict[str, Any], path: str) -> None:
    """Refuse every element of node (a FHIR JSON object or array of them) that spec does not list."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_elements(item, spec, f"{path}[{i}]")
        return
    if not isinstance(node, dict) or spec is LEAF:
        return
    for key, value in node.items():
        if key not in spec:
            base = key.removeprefix("_")
            why = _REFUSED_BECAUSE.get(base, "is not supported by CareChain: it cannot be enforced, so it is "
                                             "refused rather than dropped (docs/consent.md)")
            if key.startswith("_"):
                why = "primitive extensions are not supported: CareChain cannot enforce them"
            raise InvalidArgument(f"{path}.{key}", why)
        if key == "extension":
            for i, extension in enumerate(value if isinstance(value, list) else [value]):
                if not isinstance(extension, dict) or extension.get("url") not in _EXTENSION_URLS:
                    raise InvalidArgument(f"{path}.extension[{i}]", _REFUSED_BECAUSE["extension"])
        check_elements(value, spec[key], f"{path}.{key}")


# --- import ---------------------------------------------------------------------------------------------

def consent_from_fhir(resource: dict[str, Any] | str | bytes) -> ImportedConsent:
    """Read a FHIR R4 Consent (a dict or JSON) into a validated ConsentPolicy; InvalidArgument naming the element."""
    content = _load(resource)
    _validate_model(content)
    check_elements(content, _CONSENT, FIELD)
    if content.get("status") is None:
        raise InvalidArgument(f"{FIELD}.status", "required")
    scope_codes = {(c.get("system"), c.get("code")) for c in content["scope"].get("coding", [])}
    if (CONSENT_SCOPE, "patient-privacy") not in scope_codes:
        raise InvalidArgument(f"{FIELD}.scope", f"must be {CONSENT_SCOPE}|patient-privacy")
    root = content.get("provision")
    if not isinstance(root, dict):
        raise InvalidArgument(f"{FIELD}.provision", "required: the rules of the consent")
    policy = _root_policy(root)
    document = _document(content)
    if document.ByteSize():
        policy.document.CopyFrom(document)
    try:
        validate_policy(policy)
    except InvalidArgument as exc:
        container = not any(root.get(k) for k in _RULE_ELEMENTS) and root.get("type") in (None, "deny")
        raise InvalidArgument(_fhir_path(exc.field, container), exc.message.split(": ", 1)[-1]) from exc
    return ImportedConsent(policy, str(content["status"]), _patient_pseudonym(content), _uuid_or_empty(content))


def _document(content: dict[str, Any]) -> policy_pb2.ConsentDocument:
    """The documentary elements of a Consent, kept as given so that export loses nothing."""
    document = policy_pb2.ConsentDocument(date_time=str(content.get("dateTime") or ""))
    for i, concept in enumerate(content.get("category") or []):
        for j, coding in enumerate(concept.get("coding") or []):
            document.categories.append(_kept_coding(coding, f"{FIELD}.category[{i}].coding[{j}]"))
    rule = content.get("policyRule")
    if rule:
        for j, coding in enumerate(rule.get("coding") or []):
            if coding.get("system") != ACT_CODE or coding.get("code") not in POLICY_RULES:
                raise InvalidArgument(f"{FIELD}.policyRule.coding[{j}]",
                                      f"unsupported policy rule; expected {ACT_CODE}|OPTIN or |OPTOUT")
            document.policy_rule.append(_kept_coding(coding, f"{FIELD}.policyRule.coding[{j}]"))
        if not document.policy_rule:
            raise InvalidArgument(f"{FIELD}.policyRule", f"needs a coding {ACT_CODE}|OPTIN or |OPTOUT")
    for policy in content.get("policy") or []:
        document.policies.append(policy_pb2.ConsentPolicyReference(
            authority=str(policy.get("authority") or ""), uri=str(policy.get("uri") or "")))
    for name, target in (("performer", document.performers), ("organization", document.organizations)):
        for i, reference in enumerate(content.get(name) or []):
            target.append(_id_reference(reference, f"{FIELD}.{name}[{i}]"))
    attachment = content.get("sourceAttachment")
    if attachment:
        document.source_attachment.CopyFrom(policy_pb2.ConsentSourceAttachment(
            content_type=str(attachment.get("contentType") or ""), url=str(attachment.get("url") or ""),
            hash=str(attachment.get("hash") or ""), title=str(attachment.get("title") or ""),
            creation=str(attachment.get("creation") or ""), size=int(attachment.get("size") or 0),
            language=str(attachment.get("language") or ""),
        ))
    # What export writes when nothing was given is not stored, so that a round trip is exact.
    if [(c.system, c.code) for c in document.categories] == [DEFAULT_CATEGORY]:
        del document.categories[:]
    if [(c.system, c.code) for c in document.policy_rule] == [DEFAULT_POLICY_RULE]:
        del document.policy_rule[:]
    for i, verification in enumerate(content.get("verification") or []):
        checked = policy_pb2.ConsentVerification(
            verified=bool(verification.get("verified")),
            verification_date=str(verification.get("verificationDate") or ""))
        if verification.get("verifiedWith"):
            checked.verified_with = _id_reference(verification["verifiedWith"], f"{FIELD}.verification[{i}]"
                                                                                 ".verifiedWith")
        document.verifications.append(checked)
    return document


def _kept_coding(coding: dict[str, Any], field: str) -> policy_pb2.FhirCoding:
    if not coding.get("system") or not coding.get("code"):
        raise InvalidArgument(field, "needs a system and a code")
    return policy_pb2.FhirCoding(system=str(coding["system"]), code=str(coding["code"]))


def _id_reference(reference: dict[str, Any], field: str) -> str:
    value = reference.get("reference")
    if not isinstance(value, str) or not PRINCIPAL_REFERENCE.fullmatch(value):
        raise InvalidArgument(f"{field}.reference", "must be <ResourceType>/<CareChain id>, e.g. "
                                                    "RelatedPerson/<guardian id> (ids, never names)")
    return value


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
    for i, data in enumerate(node.get("data") or []):
        provision.data.append(_data(data, f"{field}.data[{i}]"))
    for i, concept in enumerate(node.get("code") or []):
        codings = concept.get("coding") or []
        if not codings:
            raise InvalidArgument(f"{field}.code[{i}]", "needs a coding with a system and a code")
        for j, coding in enumerate(codings):
            kept = _kept_coding(coding, f"{field}.code[{i}].coding[{j}]")
            kept = policy_pb2.FhirCoding(system=canonical_system(kept.system), code=kept.code.strip())
            if kept not in provision.codes:
                provision.codes.append(kept)
    if node.get("period"):
        provision.period.CopyFrom(_period(node["period"], f"{field}.period"))
    if node.get("dataPeriod"):
        provision.data_period.CopyFrom(_period(node["dataPeriod"], f"{field}.dataPeriod"))
    for i, child in enumerate(node.get("provision") or []):
        provision.provisions.append(_provision(child, f"{field}.provision[{i}]"))
    return provision


def _data(data: dict[str, Any], field: str) -> policy_pb2.DataReference:
    if data.get("meaning") != "instance":
        raise InvalidArgument(f"{field}.meaning", "only instance is supported: CareChain cannot follow related "
                                                  "or dependent resources, nor authoredby (use actor role AUT)")
    reference = (data.get("reference") or {}).get("reference")
    match = _DATA_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise InvalidArgument(f"{field}.reference", "must be <ResourceType>/<CareChain record id>")
    return policy_pb2.DataReference(resource_type=match.group(1), record_id=match.group(2))


def _actor(actor: dict[str, Any], field: str) -> policy_pb2.ConsentActor:
    """An actor with its organisation scope, if any (validate_policy refuses a scope on a non-specialty actor)."""
    result = _actor_identity(actor, field)
    _specialty_scope(actor.get("extension") or [], field, result)
    return result


def _specialty_scope(extensions: list[dict[str, Any]], field: str, actor: policy_pb2.ConsentActor) -> None:
    """SPECIALTY_SCOPE_EXTENSION: valueCode any-member-organization (once) or valueReference Organization/<id>."""
    for i, extension in enumerate(extensions):
        path = f"{field}.extension[{i}]"
        has_code, has_reference = "valueCode" in extension, "valueReference" in extension
        if has_code == has_reference:
            raise InvalidArgument(path, f"needs exactly one of valueCode {ANY_MEMBER_ORGANIZATION} or valueReference "
                                        "Organization/<id>")
        if has_code:
            if extension["valueCode"] != ANY_MEMBER_ORGANIZATION:
                raise InvalidArgument(f"{path}.valueCode", f"must be {ANY_MEMBER_ORGANIZATION}")
            if actor.any_organization:
                raise InvalidArgument(path, f"{ANY_MEMBER_ORGANIZATION} must be given once")
            actor.any_organization = True
            continue
        reference = (extension["valueReference"] or {}).get("reference")
        match = _ORGANIZATION_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
        if match is None:
            raise InvalidArgument(f"{path}.valueReference.reference", "must be Organization/<CareChain id>")
        actor.specialty_organization_ids.append(match.group(1))


def _actor_identity(actor: dict[str, Any], field: str) -> policy_pb2.ConsentActor:
    role_codings = (actor.get("role") or {}).get("coding") or []
    reference_node = actor.get("reference") or {}
    specialties = [c for c in role_codings if c.get("system") == SPECIALTY_SYSTEM and c.get("code")]
    if specialties:
        if reference_node.get("reference"):
            raise InvalidArgument(f"{field}.reference.reference", "a specialty actor names no single reference")
        return policy_pb2.ConsentActor(specialty=str(specialties[0]["code"]))
    roles = {ACTOR_ROLES[c["code"]] for c in role_codings
             if c.get("system") == PARTICIPATION_TYPE and c.get("code") in ACTOR_ROLES}
    if len(roles) != 1:
        raise InvalidArgument(
            f"{field}.role",
            f"must be one of {PARTICIPATION_TYPE}|{'/'.join(ACTOR_ROLES)} (recipient, primary recipient, author, "
            f"custodian) or a specialty coded in {SPECIALTY_SYSTEM}",
        )
    reference = reference_node.get("reference")
    match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise InvalidArgument(
            f"{field}.reference",
            "must be Practitioner/<id> or Organization/<id>, or the role a specialty coded in " + SPECIALTY_SYSTEM,
        )
    if reference_node.get("type") and reference_node["type"] != match.group(1):
        raise InvalidArgument(f"{field}.reference.type", "must agree with the reference")
    role = roles.pop()
    if match.group(1) == "Practitioner":
        return policy_pb2.ConsentActor(practitioner_id=match.group(2), role=role)
    return policy_pb2.ConsentActor(organization_id=match.group(2), role=role)


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
    # A specialty actor's scope is its SPECIALTY_SCOPE_EXTENSION (all of it, whichever form is wrong).
    path = re.sub(r"\.(any_organization|specialty_organization_ids)(\[\d+\])?$", ".extension", path)
    if path.startswith("policy.document"):
        path = path.replace("policy.document", FIELD, 1)
        for proto_name, fhir_name in (
            (".date_time", ".dateTime"), (".policy_rule", ".policyRule.coding"), (".policies", ".policy"),
            (".performers", ".performer"), (".organizations", ".organization"),
            (".source_attachment", ".sourceAttachment"), (".content_type", ".contentType"),
            (".verifications", ".verification"), (".verified_with", ".verifiedWith"),
            (".verification_date", ".verificationDate"), (".categories", ".category.coding"),
        ):
            path = path.replace(proto_name, fhir_name)
        return path
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
        (".resource_types", ".class"), (".start_ms", ".start"), (".end_ms", ".end"), (".actors", ".actor"),
        (".record_id", ".reference"), (".resource_type", ".reference"), (".codes", ".code"),
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
    document = record.policy.document
    categories = [{"coding": [{"system": c.system, "code": c.code}]} for c in document.categories] or \
        [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}]
    # Older consents carry no policy rule: CareChain's default deny is the opt-in pattern.
    rule = [{"system": c.system, "code": c.code} for c in document.policy_rule] or \
        [{"system": ACT_CODE, "code": "OPTIN"}]
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": record.consent_id,
        "status": "active" if record.status == consent_pb2.CONSENT_STATUS_ACTIVE else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": categories,
        "patient": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": record.patient_id}},
        "policyRule": {"coding": rule},
        "provision": root,
    }
    if document.date_time:
        resource["dateTime"] = document.date_time  # as the patient's document gave it
    if record.granted_at_ms:
        # When the grant was signed: server-managed metadata, so a re-import does not store it.
        resource["meta"] = {"lastUpdated": fhir_date_ms(record.granted_at_ms)}
    resource.update(_fhir_document(document))
    if not resource["id"]:
        del resource["id"]
    if not record.patient_id:
        del resource["patient"]
    return resource


def _fhir_document(document: policy_pb2.ConsentDocument) -> dict[str, Any]:
    """performer, organization, sourceAttachment, policy and verification, as they were imported."""
    elements: dict[str, Any] = {}
    if document.performers:
        elements["performer"] = [{"reference": r} for r in document.performers]
    if document.organizations:
        elements["organization"] = [{"reference": r} for r in document.organizations]
    attachment = document.source_attachment
    source = {key: value for key, value in (
        ("contentType", attachment.content_type), ("language", attachment.language), ("url", attachment.url),
        ("size", attachment.size), ("hash", attachment.hash), ("title", attachment.title),
        ("creation", attachment.creation)) if value}
    if source:
        elements["sourceAttachment"] = source
    if document.policies:
        elements["policy"] = [{k: v for k, v in (("authority", x.authority), ("uri", x.uri)) if v}
                              for x in document.policies]
    if document.verifications:
        verifications = []
        for v in document.verifications:
            node: dict[str, Any] = {"verified": v.verified}
            if v.verified_with:
                node["verifiedWith"] = {"reference": v.verified_with}
            if v.verification_date:
                node["verificationDate"] = v.verification_date
            verifications.append(node)
        elements["verification"] = verifications
    return elements


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
        # In the provision's order (security_labels sorts), so the export reads back to the same policy.
        node["securityLabel"] = [label for category in provision.categories
                                 for label in security_labels.security_labels([category])]
    if provision.purposes:
        codes = {v: k for k, v in PURPOSES.items()}
        node["purpose"] = [{"system": ACT_REASON, "code": codes[p]} for p in provision.purposes]
    if provision.resource_types:
        node["class"] = [{"system": RESOURCE_TYPES, "code": t} for t in provision.resource_types]
    if provision.data_period.start_ms or provision.data_period.end_ms:
        node["dataPeriod"] = _fhir_period(provision.data_period)
    if provision.data:
        node["data"] = [{"meaning": "instance", "reference": {"reference": f"{d.resource_type}/{d.record_id}"}}
                        for d in provision.data]
    if provision.codes:
        node["code"] = [{"coding": [{"system": c.system, "code": c.code}]} for c in provision.codes]
    if provision.provisions:
        node["provision"] = [_fhir_provision(child) for child in provision.provisions]
    return node


def _fhir_actor(actor: policy_pb2.ConsentActor) -> dict[str, Any]:
    code = _ROLE_CODES[actor.role]
    recipient = {"coding": [{"system": PARTICIPATION_TYPE, "code": code, "display": _ROLE_DISPLAYS[code]}]}
    which = actor.WhichOneof("actor")
    if which == "practitioner_id":
        return {"role": recipient, "reference": {"reference": f"Practitioner/{actor.practitioner_id}"}}
    if which == "organization_id":
        return {"role": recipient, "reference": {"reference": f"Organization/{actor.organization_id}"}}
    node: dict[str, Any] = {
        "role": {"coding": [{"system": SPECIALTY_SYSTEM, "code": actor.specialty}]},
        "reference": {"type": "PractitionerRole", "display": f"any practitioner with specialty {actor.specialty}"},
    }
    scope = [{"url": SPECIALTY_SCOPE_EXTENSION, "valueCode": ANY_MEMBER_ORGANIZATION}] if actor.any_organization else []
    scope += [{"url": SPECIALTY_SCOPE_EXTENSION, "valueReference": {"reference": f"Organization/{organization_id}"}}
              for organization_id in actor.specialty_organization_ids]
    if scope:
        node["extension"] = scope
    return node
