"""CareChain audit events as FHIR R4 ``AuditEvent`` resources, and a ``Bundle`` of them.

The mapping (docs/audit.md has the table):

- ``type``/``subtype``: record reads and writes and consent changes are
  RESTful operations (audit-event-type ``rest`` with the restful-interaction
  ``read``/``create``/``update``); other actions use DICOM audit event ids
  (DCM 110100 Application Activity, 110101 Audit Log Used). Alert
  (break-glass) events carry the extra subtype DCM 110113 Security Alert.
- ``action``: R, C, U or E; ``recorded``: the event time (UTC instant).
- ``outcome``: 0 success, 4 minor failure (denied by policy), 8 serious
  failure; ``outcomeDesc``: the reason.
- ``purposeOfEvent`` and the requesting agent's ``purposeOfUse``: the HL7 v3
  ActReason code (TREAT, ETREAT, HPAYMT, HOPERAT, HRESCH, PATRQT).
- ``agent`` (IHE Basic Audit Log Patterns): the actor (``requestor``),
  referenced as Practitioner, Patient, Organization or Device by its
  CareChain principal id, with its ``type`` (v3-ParticipationType: IRCP
  information recipient for reads and disclosures, AUT author for writes and
  consent changes, VRF verifier for reviews) and role (v3-RoleClass PROV/PAT,
  DCM 110150 Application); then the actor's organisation, when known and
  different; then the CareChain service that served the request (type DCM
  110152 Destination Role ID).
- ``entity``: the record (``<ResourceType>/<record id>``, object-role 4
  Domain Resource, security labels from its sensitivity categories), the
  consent a grant or revocation is about (``Consent/<consent id>``), and the
  patient as a ``Patient/<pseudonym>`` reference (object-role 1 Patient).
  Identifiers only, never PHI.
- ``source``: the reporting CareChain service (``Device/svc-<service>``,
  security-source-type 4 Application Server), on site ``carechain``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.labels.security_labels import security_labels  # the one category -> HL7 label mapping

Action = audit_pb2.AuditAction
Outcome = audit_pb2.AuditOutcome
Category = common_pb2.SensitivityCategory

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PRINCIPAL_SYSTEM = "urn:carechain:principal"
PSEUDONYM_SYSTEM = "urn:carechain:patient-pseudonym"
RECORD_SYSTEM = "urn:carechain:record"
SOURCE_SITE = "carechain"

_REST = {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
_SECURITY_ALERT = {"system": DICOM, "code": "110113", "display": "Security Alert"}

# action -> (type coding, subtype coding or None, FHIR action code)
_ACTIONS: dict[int, tuple[dict[str, str], dict[str, str] | None, str]] = {
    Action.AUDIT_ACTION_READ: (_REST, {"system": RESTFUL_INTERACTION, "code": "read", "display": "read"}, "R"),
    Action.AUDIT_ACTION_WRITE: (_REST, {"system": RESTFUL_INTERACTION, "code": "create", "display": "create"}, "C"),
    Action.AUDIT_ACTION_GRANT_CONSENT: (
        _REST, {"system": RESTFUL_INTERACTION, "code": "create", "display": "create"}, "C"),
    Action.AUDIT_ACTION_REVOKE_CONSENT: (
        _REST, {"system": RESTFUL_INTERACTION, "code": "update", "display": "update"}, "U"),
    Action.AUDIT_ACTION_DECIDE: (
        _REST, {"system": RESTFUL_INTERACTION, "code": "operation", "display": "operation"}, "E"),
    Action.AUDIT_ACTION_RELEASE_KEY: ({"system": DICOM, "code": "110100", "display": "Application Activity"},
                                      None, "E"),
    Action.AUDIT_ACTION_REGISTER: (_REST, {"system": RESTFUL_INTERACTION, "code": "create", "display": "create"},
                                   "C"),
    Action.AUDIT_ACTION_REVIEW: ({"system": DICOM, "code": "110101", "display": "Audit Log Used"}, None, "E"),
    # A disclosure to a third party: data leaves CareChain (DICOM Export), read in the process.
    Action.AUDIT_ACTION_DISCLOSE: ({"system": DICOM, "code": "110106", "display": "Export"},
                                   {"system": RESTFUL_INTERACTION, "code": "read", "display": "read"}, "R"),
    # A search of a patient's records (records SearchRecords): BALP's Query, action Execute.
    Action.AUDIT_ACTION_SEARCH: (_REST, {"system": RESTFUL_INTERACTION, "code": "search", "display": "search"}, "E"),
    # An erasure of the patient's records (crypto-shredding): a delete.
    Action.AUDIT_ACTION_ERASE: (_REST, {"system": RESTFUL_INTERACTION, "code": "delete", "display": "delete"}, "D"),
}

PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_RECIPIENT = {"system": PARTICIPATION_TYPE, "code": "IRCP", "display": "information recipient"}
_AUTHOR = {"system": PARTICIPATION_TYPE, "code": "AUT", "display": "author (originator)"}
# The requesting agent's BALP agent.type, by action (information recipient unless it created something).
_AGENT_TYPES: dict[int, dict[str, str]] = {
    Action.AUDIT_ACTION_WRITE: _AUTHOR,
    Action.AUDIT_ACTION_GRANT_CONSENT: _AUTHOR,
    Action.AUDIT_ACTION_REVOKE_CONSENT: _AUTHOR,
    Action.AUDIT_ACTION_REGISTER: _AUTHOR,
    Action.AUDIT_ACTION_REVIEW: {"system": PARTICIPATION_TYPE, "code": "VRF", "display": "verifier"},
}
_SERVER_TYPE = {"system": DICOM, "code": "110152", "display": "Destination Role ID"}
_CONSENT_CHANGES = (Action.AUDIT_ACTION_GRANT_CONSENT, Action.AUDIT_ACTION_REVOKE_CONSENT)
# Consent events reported before AuditEvent.consent_id existed name the consent in their reason.
_CONSENT_IN_REASON = re.compile(r"consent ([0-9a-fA-F-]{36}) (?:granted|revoked)")

_OUTCOMES = {Outcome.AUDIT_OUTCOME_SUCCESS: "0", Outcome.AUDIT_OUTCOME_DENIED: "4", Outcome.AUDIT_OUTCOME_FAILED: "8"}

_PURPOSES = {
    common_pb2.PURPOSE_OF_USE_TREAT: ("TREAT", "treatment"),
    common_pb2.PURPOSE_OF_USE_ETREAT: ("ETREAT", "Emergency Treatment"),
    common_pb2.PURPOSE_OF_USE_HPAYMT: ("HPAYMT", "healthcare payment"),
    common_pb2.PURPOSE_OF_USE_HOPERAT: ("HOPERAT", "healthcare operations"),
    common_pb2.PURPOSE_OF_USE_HRESCH: ("HRESCH", "healthcare research"),
    common_pb2.PURPOSE_OF_USE_PATRQT: ("PATRQT", "patient requested"),
    common_pb2.PURPOSE_OF_USE_BTG: ("BTG", "break the glass"),
    common_pb2.PURPOSE_OF_USE_COC: ("COC", "coordination of care"),
    common_pb2.PURPOSE_OF_USE_POPHLTH: ("POPHLTH", "population health"),
    common_pb2.PURPOSE_OF_USE_CLINTRCH: ("CLINTRCH", "clinical trial research"),
    common_pb2.PURPOSE_OF_USE_COVAUTH: ("COVAUTH", "coverage authorization"),
    common_pb2.PURPOSE_OF_USE_PATADMIN: ("PATADMIN", "patient administration"),
    common_pb2.PURPOSE_OF_USE_FAMRQT: ("FAMRQT", "family requested"),
    common_pb2.PURPOSE_OF_USE_PWATRNY: ("PWATRNY", "power of attorney"),
}

def instant(time_ms: int) -> str:
    """A FHIR instant (UTC, millisecond precision) for Unix milliseconds."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def principal_reference(principal_id: str) -> dict[str, Any]:
    """A Reference to a CareChain principal: typed by its id prefix, with the id as identifier."""
    if principal_id.startswith("prac-"):
        resource = "Practitioner"
    elif principal_id.startswith("psn-"):
        resource = "Patient"
    elif principal_id.startswith("org-"):
        resource = "Organization"
    elif principal_id.startswith("svc-") or principal_id == "operator":
        resource = "Device"
    else:
        resource = ""
    reference: dict[str, Any] = {"identifier": {"system": PRINCIPAL_SYSTEM, "value": principal_id}}
    if resource:
        reference["reference"] = f"{resource}/{principal_id}"
        reference["type"] = resource
    return reference


def purpose_coding(purpose: int) -> dict[str, str] | None:
    """The v3-ActReason coding of a PurposeOfUse, or None when unset."""
    found = _PURPOSES.get(purpose)
    return None if found is None else {"system": ACT_REASON, "code": found[0], "display": found[1]}


def _role(principal_id: str) -> list[dict[str, Any]]:
    if principal_id.startswith("prac-"):
        return [{"coding": [{"system": ROLE_CLASS, "code": "PROV", "display": "healthcare provider"}]}]
    if principal_id.startswith("psn-"):
        return [{"coding": [{"system": ROLE_CLASS, "code": "PAT", "display": "patient"}]}]
    if principal_id.startswith("svc-") or principal_id == "operator":
        return [{"coding": [{"system": DICOM, "code": "110150", "display": "Application"}]}]
    if principal_id.startswith("org-"):
        return [{"text": "organization"}]
    return []


def to_fhir(stored: audit_pb2.StoredAuditEvent) -> dict[str, Any]:
    """One stored event as a FHIR R4 AuditEvent (a JSON-ready dict); identifiers only, never PHI."""
    event = stored.event
    event_type, subtype, action = _ACTIONS.get(event.action, (_REST, None, "E"))
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event.event_id,
        "meta": {"versionId": str(stored.sequence)} if stored.sequence else {},
        "type": dict(event_type),
        "action": action,
        "recorded": instant(event.time_ms),
        "outcome": _OUTCOMES.get(event.outcome, "8"),
    }
    if not resource["meta"]:
        del resource["meta"]
    subtypes = [dict(subtype)] if subtype else []
    if event.alert:
        subtypes.append(dict(_SECURITY_ALERT))
    if subtypes:
        resource["subtype"] = subtypes
    if event.reason:
        resource["outcomeDesc"] = event.reason
    purpose = purpose_coding(event.purpose)
    if purpose:
        resource["purposeOfEvent"] = [{"coding": [purpose]}]

    actor: dict[str, Any] = {"type": {"coding": [dict(_AGENT_TYPES.get(event.action, _RECIPIENT))]},
                             "who": principal_reference(event.actor_id), "requestor": True}
    role = _role(event.actor_id)
    if role:
        actor["role"] = role
    if purpose:
        actor["purposeOfUse"] = [{"coding": [purpose]}]
    agents = [actor]
    if event.organization_id and event.organization_id != event.actor_id:
        agents.append({"who": principal_reference(event.organization_id), "requestor": False,
                       "role": [{"text": "organization of the requestor"}]})
    agents.append({"type": {"coding": [dict(_SERVER_TYPE)]}, "who": principal_reference(f"svc-{event.service}"),
                   "requestor": False})
    resource["agent"] = agents

    resource["source"] = {
        "site": SOURCE_SITE,
        "observer": {**principal_reference(f"svc-{event.service}"), "display": f"CareChain {event.service} service"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }

    entities: list[dict[str, Any]] = []
    if event.record_id:
        what: dict[str, Any] = {"identifier": {"system": RECORD_SYSTEM, "value": event.record_id}}
        if event.resource_type:
            what["reference"] = f"{event.resource_type}/{event.record_id}"
            what["type"] = event.resource_type
        record: dict[str, Any] = {
            "what": what,
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        }
        labels = security_labels(event.categories)
        if labels:
            record["securityLabel"] = labels
        entities.append(record)
    consent_id = consent_of(event)
    if consent_id:
        entities.append({
            "what": {"reference": f"Consent/{consent_id}", "type": "Consent"},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        })
    if event.patient_id:
        entities.append({
            # The patient by pseudonym: the Patient resource id CareChain exposes is the pseudonym.
            "what": {"reference": f"Patient/{event.patient_id}", "type": "Patient",
                     "identifier": {"system": PSEUDONYM_SYSTEM, "value": event.patient_id}},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })
    if entities:
        resource["entity"] = entities
    return resource


def consent_of(event: audit_pb2.AuditEvent) -> str:
    """The consent a grant or revocation event is about ("" for other events)."""
    if event.action not in _CONSENT_CHANGES:
        return ""
    if event.consent_id:
        return event.consent_id
    found = _CONSENT_IN_REASON.search(event.reason)
    return found.group(1) if found else ""


def bundle(events: Iterable[audit_pb2.StoredAuditEvent], bundle_id: str, timestamp_ms: int) -> dict[str, Any]:
    """A FHIR R4 Bundle (type "collection") of AuditEvent resources."""
    entries = [{"fullUrl": f"urn:uuid:{stored.event.event_id}", "resource": to_fhir(stored)} for stored in events]
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "timestamp": instant(timestamp_ms),
        "entry": entries,
    }


def bundle_json(events: Iterable[audit_pb2.StoredAuditEvent], bundle_id: str, timestamp_ms: int) -> bytes:
    """:func:`bundle` as compact UTF-8 JSON."""
    return json.dumps(bundle(events, bundle_id, timestamp_ms), separators=(",", ":"), sort_keys=True).encode()
