"""Bulk NDJSON over REST: ``POST /`` with ``Content-Type: application/fhir+ndjson`` (docs/fhir.md).

One FHIR resource per line (what a FHIR Bulk Data export writes, e.g. Synthea's), imported as a batch: each
line is its own create (records' ImportRecords stream, each resource exactly as one PutRecord: its own record,
labels, data key, ledger entry and audit event). Every line names its patient as a create does
(:func:`carechain.fhir.patients.patient_of`: a ``Patient/<pseudonym>`` reference, a Patient's id the
pseudonym). The answer is a ``batch-response`` Bundle with one entry per line, in line order: ``201 Created``
with the record's location, or the line's error status with an OperationOutcome naming ``line N`` and the
element. A bad line does not stop the others (batch semantics); a blank line or a line that is not one JSON
object is that line's 400. Diagnostics never echo a line's content.
"""

from __future__ import annotations

import http
from dataclasses import dataclass
from typing import Any

import grpc

from carechain.core.errors import InvalidArgument
from carechain.core.fhir import parse_json
from carechain.fhir.outcomes import FhirError, http_error
from carechain.fhir.patients import name_patient_element, patient_of
from carechain.records.v1 import records_pb2

#: FHIR Bulk Data's media type of NDJSON.
FHIR_NDJSON = "application/fhir+ndjson"
#: The media types of an NDJSON body (FHIR Bulk Data's, and the generic ones).
NDJSON_TYPES = frozenset({FHIR_NDJSON, "application/ndjson", "application/x-ndjson"})


@dataclass
class Line:
    """One line of the body: the resource to create, or why it cannot be (its number counts from 1)."""

    number: int
    resource_type: str = ""
    request: records_pb2.ImportRecordsRequest | None = None
    error: FhirError | None = None

    @property
    def client_ref(self) -> str:
        """What the line's ImportRecords request is called (echoed in its result)."""
        return f"line {self.number}"


def is_ndjson(content_type: str) -> bool:
    """Whether a Content-Type header says NDJSON."""
    return content_type.partition(";")[0].strip().lower() in NDJSON_TYPES


def split_lines(body: bytes, resource_types: frozenset[str]) -> list[Line]:
    """The body's lines, each parsed and checked as far as the gateway checks a create (records does the rest).

    A final newline ends the last line (it does not start an empty one); an empty body is one empty line.
    """
    raw_lines = body.split(b"\n")
    if len(raw_lines) > 1 and raw_lines[-1] == b"":
        raw_lines.pop()
    return [_line(number, raw.removesuffix(b"\r"), resource_types) for number, raw in enumerate(raw_lines, 1)]


def _line(number: int, raw: bytes, resource_types: frozenset[str]) -> Line:
    line = Line(number)
    where = f"line {number}"
    if not raw.strip():
        line.error = FhirError(400, "required", f"{where}: empty; each line is one FHIR resource (JSON object)")
        return line
    try:
        resource = parse_json(raw)
    except InvalidArgument as exc:
        # parse_json's message names the problem and its position or path, never the content.
        line.error = http_error(grpc.StatusCode.INVALID_ARGUMENT, exc.message, "Resource")
        line.error.diagnostics = f"{where}: {line.error.diagnostics}"
        return line
    if not isinstance(resource, dict):
        line.error = FhirError(400, "structure", f"{where}: must be one JSON object (a FHIR resource)")
        return line
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in resource_types:
        line.error = FhirError(400, "not-supported", f"{where}: Resource.resourceType: missing, or a type this "
                               "server does not store (see /metadata)", "Resource.resourceType")
        return line
    line.resource_type = resource_type
    try:
        patient_id = patient_of(resource)
    except FhirError as exc:
        exc.diagnostics = f"{where}: {exc.diagnostics}"
        line.error = exc
        return line
    line.request = records_pb2.ImportRecordsRequest(patient_id=patient_id, resource_json=raw,
                                                    client_ref=line.client_ref)
    return line


def batch_response(lines: list[Line], results: list[records_pb2.ImportResult], base_url: str,
                   created_version: int) -> dict[str, Any]:
    """The batch-response Bundle: one entry per line, in line order, from the lines' own errors and records'
    results (matched by client_ref, as results come in completion order); a create commits created_version."""
    by_ref = {result.client_ref: result for result in results}
    entries = []
    for line in lines:
        error = line.error
        if error is None:
            result = by_ref.get(line.client_ref)
            if result is None:  # records ended the stream without it: not written as far as we know
                error = FhirError(500, "incomplete", f"line {line.number}: no result from the import")
            elif result.code == 0:
                entries.append({"response": {
                    "status": "201 Created",
                    "location": f"{base_url}/{line.resource_type}/{result.record_id}/_history/{created_version}",
                    "etag": f'W/"{created_version}"'}})
                continue
            else:
                error = name_patient_element(http_error(_status(result.code), result.message, line.resource_type),
                                             line.resource_type)
                error.diagnostics = f"line {line.number}: {error.diagnostics}"
        entries.append({"response": {"status": f"{error.status} {http.HTTPStatus(error.status).phrase}",
                                     "outcome": error.outcome()}})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}


def _status(code: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric status (an unknown number: UNKNOWN, answered as an internal error)."""
    return next((status for status in grpc.StatusCode if status.value[0] == code), grpc.StatusCode.UNKNOWN)
