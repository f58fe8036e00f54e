"""How the REST gateway names patients: ``Patient/<pseudonym>``.

A patient's logical id on this server is its pseudonym (the principal id identity assigned when the
hospital registered the patient, ``psn-...``): a create names its patient with a ``Patient/<pseudonym>``
reference (records accepts it as the record's own patient), and a read answers every Patient reference of
the record as ``Patient/<pseudonym>``, whichever local FHIR id the writer used (records guarantees that every
Patient reference in a record is to the record's own patient). A Bundle names its registered patients with
``Patient/<pseudonym>`` references or with a Patient entry ``request: {method: PUT, url: Patient/<pseudonym>}``
(an update-as-create of the Patient with its logical id here), whose resource keeps the hospital's FHIR id.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from carechain.core.fhir import PATIENT_REFERENCE_FIELDS
from carechain.fhir.outcomes import FhirError
from carechain.records.v1 import records_pb2

PATIENT_PREFIX = "Patient/"


def patient_reference_path(resource_type: str) -> str:
    """FHIRPath of the element naming a resource's patient, e.g. ``Condition.subject.reference``."""
    if resource_type == "Patient":
        return "Patient.id"
    return f"{resource_type}.{PATIENT_REFERENCE_FIELDS[resource_type].removesuffix('[]')}.reference"


def name_patient_element(error: FhirError, resource_type: str) -> FhirError:
    """error, a records refusal of a create's ``patient_id``, as naming where the resource names its patient."""
    if error.expression == "patient_id":
        error.expression = patient_reference_path(resource_type)
        error.diagnostics = error.diagnostics.replace("patient_id", error.expression, 1)
    return error


def references(node: Any) -> Iterator[dict[str, Any]]:
    """Every object holding a string ``reference`` in node, depth first."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def patient_of(resource: dict[str, Any]) -> str:
    """The pseudonym a resource to create is about: its ``id`` for a Patient, else its one Patient reference."""
    resource_type = resource["resourceType"]
    if resource_type == "Patient":
        patient = resource.get("id")
        if not isinstance(patient, str) or not patient:
            raise FhirError(400, "required", "Patient.id: a Patient is created under its logical id here, the "
                            "patient's pseudonym", "Patient.id")
        return patient
    named = {ref["reference"].removeprefix(PATIENT_PREFIX) for ref in references(resource)
             if ref["reference"].startswith(PATIENT_PREFIX)}
    path = patient_reference_path(resource_type)
    if not named:
        raise FhirError(400, "required", f"{path}: missing patient reference (Patient/<pseudonym>)", path)
    if len(named) > 1:
        raise FhirError(400, "invalid", f"{path}: refers to more than one patient", path)
    return named.pop()


def as_served(resource: dict[str, Any], record_id: str, patient_id: str, version: int) -> dict[str, Any]:
    """A stored resource as the gateway serves it: its record id and version, Patient references by pseudonym
    (kept as written when patient_id is not known)."""
    served = copy.deepcopy(resource)
    served["id"] = record_id
    served["meta"] = {**served.get("meta", {}), "versionId": str(version)}
    for ref in references(served) if patient_id else ():
        if ref["reference"].startswith(PATIENT_PREFIX):
            ref["reference"] = PATIENT_PREFIX + patient_id
    return served


def bundle_patients(bundle: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Bundle as records imports it (Patient PUT entries as creates) and the pseudonyms it names, in order."""
    imported = copy.deepcopy(bundle)
    entries = imported.get("entry") if isinstance(imported.get("entry"), list) else []
    patients: dict[str, None] = {}
    own_ids = set()
    for entry in entries:
        request = entry.get("request") if isinstance(entry, dict) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or not isinstance(resource, dict):
            continue  # records says what is wrong with the entry
        url = request.get("url")
        if resource.get("resourceType") == "Patient" and request.get("method") == "PUT" and isinstance(url, str) \
                and url.startswith(PATIENT_PREFIX):
            patients[url.removeprefix(PATIENT_PREFIX)] = None
            request["method"], request["url"] = "POST", "Patient"
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            own_ids.add(resource["id"])
    for entry in entries:
        for ref in references(entry.get("resource") if isinstance(entry, dict) else None):
            target = ref["reference"].removeprefix(PATIENT_PREFIX)
            if ref["reference"].startswith(PATIENT_PREFIX) and target not in own_ids:
                patients[target] = None
    return imported, list(patients)


def record_version_number(record: records_pb2.GetRecordResponse) -> int:
    """The version a read answered (records' record_version; a record written before versions is version 1)."""
    return max(record.record_version.version, 1)


def served_version(record: records_pb2.GetRecordResponse) -> dict[str, Any]:
    """The resource of a read as this server serves it: the ledger's versionId and lastUpdated, a Part 2
    record's handling labels, the server's id and Patient references by pseudonym."""
    stored = json.loads(record.labelled_resource_json or record.versioned_resource_json or record.resource_json)
    return as_served(stored, record.record_id, record.patient_id, record_version_number(record))
