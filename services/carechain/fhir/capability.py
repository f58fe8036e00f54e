"""The CapabilityStatement of ``GET /metadata``: exactly what this server implements now.

Every resource type CareChain stores (the Patient and every type of the R4 Patient compartment,
:data:`carechain.core.fhir.PATIENT_REFERENCE_FIELDS`) with the interactions the gateway serves, batch and
transaction Bundles (and NDJSON as a batch), JSON only, and SMART-on-FHIR as the security service.
"""

from __future__ import annotations

import datetime
from typing import Any

import carechain
from carechain.core.fhir import PATIENT_REFERENCE_FIELDS
from carechain.fhir.outcomes import FHIR_JSON
from carechain.fhir.provenance import TARGET
from carechain.fhir.search import REVINCLUDE_PROVENANCE, SEARCH_PARAMETERS, search_parameters

FHIR_VERSION = "4.0.1"
#: Interactions served for every resource type (docs/fhir.md).
TYPE_INTERACTIONS = ("create", "read", "vread", "update", "history-instance", "search-type")
#: What each type-level interaction's entry documents (CapabilityStatement.rest.resource.interaction.documentation).
TYPE_DOCUMENTATION = {
    "update": "PUT {type}/{id} with the body's id the URL's (the record id, a Patient's too): the next version, "
              "by the authoring organisation only. If-Match: W/\"<versionId>\" is honoured (stale: 412). Record "
              "ids are assigned here (no update-as-create), and an id that does not exist answers 403 like one "
              "the client may not update, not 405, so that ids cannot be probed.",
}
#: System-level interactions: POST / with a Bundle (or NDJSON: a batch), GET / with _type.
SYSTEM_INTERACTIONS = ("batch", "transaction", "search-system")
#: What each system interaction's entry documents (CapabilityStatement.rest.interaction.documentation).
SYSTEM_DOCUMENTATION = {
    "batch": "POST / with a batch Bundle of creates, or with Content-Type: application/fhir+ndjson (a FHIR Bulk "
             "Data file, one resource a line, at most CARECHAIN_MAX_BUNDLE_BYTES): each line one create, the "
             "answer a batch-response with one entry per line (201 and its location, or an OperationOutcome "
             "naming line N). Patients are named Patient/<pseudonym> as in a create.",
    "transaction": "POST / with a transaction Bundle of creates (urn:uuid references resolved; the Patient as "
                   "PUT Patient/<pseudonym>); every entry is checked before any is written.",
}
#: The operation served on Patient instances.
EVERYTHING = {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
              "documentation": "every record of the patient the client may read (_type, _since, _count, "
                               f"_revinclude={REVINCLUDE_PROVENANCE}); a searchset Bundle with the withheld count"}
#: Provenance's own search parameter besides the record search's: the ledger's Provenance of a record.
PROVENANCE_TARGET = (TARGET, "reference", "a record, <type>/<id> or <type>/<id>/_history/<n>: the ledger's "
                     "Provenance of each of its versions (ids <record id>.<version>); not combined with patient, "
                     "which searches stored Provenance records")
RESTFUL_SECURITY = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def _search_param(name: str, kind: str, documentation: str) -> dict[str, str]:
    return {"name": name, "type": kind, "documentation": documentation}


_PATIENT = _search_param("patient", "reference", "Patient/<pseudonym>; a patient may leave it out (themselves)")
#: Consent is a patient's signed grant, AuditEvent the patient's accounting of disclosures, not stored records
#: (fhir.consent_routes, fhir.audit_routes; docs/fhir.md).
PATIENT_FACING: dict[str, dict[str, Any]] = {
    "Consent": {
        "type": "Consent",
        "documentation": "POST a Consent with X-Consent-Signature: a compact JWS by the patient's (or an active "
                         "delegate's) key over the exact body; it becomes a ledger grant. PUT {resourceType, id, "
                         "status: inactive}, signed the same way, revokes it. Read and search the patient's own "
                         "consents.",
        "interaction": [{"code": code} for code in ("create", "read", "update", "search-type")],
        "versioning": "no-version", "readHistory": False, "updateCreate": False,
        "searchParam": [_PATIENT],
    },
    "AuditEvent": {
        "type": "AuditEvent",
        "documentation": "The patient's own accounting of disclosures (the patient, or an active guardian).",
        "interaction": [{"code": "search-type"}],
        "versioning": "no-version", "readHistory": False, "updateCreate": False,
        "searchParam": [_PATIENT, _search_param("date", "date", "when the event was recorded (ge, gt, le, lt, eq)"),
                        _search_param("_count", "number", "events per page (1-1000); follow the next link")],
    },
}


def resource_types() -> list[str]:
    """The FHIR resource types CareChain accepts as records, sorted."""
    return sorted({"Patient", *PATIENT_REFERENCE_FIELDS})


def _search_parameters(resource_type: str) -> tuple[tuple[str, str, str], ...]:
    own = search_parameters(resource_type)
    return (*own, PROVENANCE_TARGET) if resource_type == "Provenance" else own


def capability_statement(base_url: str, published: datetime.datetime) -> dict[str, Any]:
    """The server's CapabilityStatement (kind instance), its implementation at base_url, dated published."""
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code, **({"documentation": TYPE_DOCUMENTATION[code]}
                                               if code in TYPE_DOCUMENTATION else {})}
                            for code in TYPE_INTERACTIONS],
            # Every version is kept and read by its id; records assigns ids (no update-as-create); If-Match
            # is honoured but not required (versioned-update would require it).
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": False,
            "searchRevInclude": [REVINCLUDE_PROVENANCE],
            "searchParam": [{"name": name, "type": kind, "documentation": what}
                            for name, kind, what in _search_parameters(resource_type)],
            **({"operation": [EVERYTHING]} if resource_type == "Patient" else {}),
            "conditionalUpdate": False,
        }
        for resource_type in resource_types() if resource_type not in PATIENT_FACING
    ]
    resources = sorted([*resources, *PATIENT_FACING.values()], key=lambda r: r["type"])
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "publisher": "CareChain",
        "kind": "instance",
        "software": {"name": "CareChain FHIR gateway", "version": carechain.__version__},
        "implementation": {"description": "CareChain FHIR R4 REST gateway (consented, audited records)",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Patients are referenced as Patient/<pseudonym>: the pseudonym is a patient's logical "
                             "id on this server. Reads and searches need a purpose of use (the SMART token's, or "
                             "X-Purpose-Of-Use). Searches cover one patient (patient=Patient/<pseudonym>).",
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": RESTFUL_SECURITY, "code": "SMART-on-FHIR"}]}],
                "description": "SMART Backend Services: Authorization: Bearer <CareChain access token>; see "
                               ".well-known/smart-configuration",
            },
            "resource": resources,
            "interaction": [{"code": code, **({"documentation": SYSTEM_DOCUMENTATION[code]}
                                               if code in SYSTEM_DOCUMENTATION else {})}
                            for code in SYSTEM_INTERACTIONS],
            "searchParam": [{"name": "_type", "type": "token", "documentation": "resource types (commas)"},
                            *({"name": name, "type": kind, "documentation": what}
                              for name, kind, what in SEARCH_PARAMETERS)],
        }],
    }
