"""Errors as FHIR ``OperationOutcome`` resources, with the HTTP status each gRPC status stands for.

:func:`http_error` is the one mapping from a records call's gRPC status to what the REST client gets.
Messages come from the services, which never put a value from the request (PHI) in them and never name
a consent denial's sensitive category; an internal failure gets no message at all, only a trace id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import grpc

from carechain.core.telemetry import current_trace_id

FHIR_JSON = "application/fhir+json"

# "resource_json.subject.reference: missing patient reference" -> the element path and the reason.
_FIELD_MESSAGE = re.compile(r"^(?P<path>[A-Za-z_][\w.\[\]]*): (?P<why>.+)$", re.DOTALL)
# Request fields of records' RPCs as FHIRPath roots: the resource (or Bundle) the REST client sent.
_FIELD_ROOTS = ("resource_json", "bundle_json")
#: What an erased record's read says (records: FAILED_PRECONDITION "... erased on <date>"): 410 Gone.
ERASED_MARKER = "erased on"
#: What records' UpdateRecord says of a stale if_version (FAILED_PRECONDITION "if_version: ..."): 412, If-Match.
STALE_VERSION_FIELD = "if_version"

# gRPC status -> HTTP status and OperationOutcome issue code (FHIR R4 IssueType).
_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "login"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.NOT_FOUND: (404, "not-found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "duplicate"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "business-rule"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "value"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "throttled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not-supported"),
    grpc.StatusCode.UNAVAILABLE: (503, "transient"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
#: WWW-Authenticate of every 401 (RFC 6750).
WWW_AUTHENTICATE = 'Bearer realm="carechain", error="invalid_token"'


@dataclass
class FhirError(Exception):
    """An HTTP error answered with an OperationOutcome (one issue)."""

    status: int
    code: str
    diagnostics: str
    expression: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome body."""
        return operation_outcome("error", self.code, self.diagnostics, self.expression)


def operation_outcome(severity: str, code: str, diagnostics: str, expression: str = "") -> dict[str, Any]:
    """An OperationOutcome with one issue (expression: the FHIRPath of the element at fault, if any)."""
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fhir_path(path: str, resource_type: str) -> str:
    """A records request field path as a FHIRPath on what the REST client sent.

    ``resource_json.subject.reference`` of a Condition is ``Condition.subject.reference``,
    ``bundle_json.entry[2].resource.code`` is ``Bundle.entry[2].resource.code``; other fields stay as they are.
    """
    for root in _FIELD_ROOTS:
        if path == root or path.startswith((root + ".", root + "[")):
            return (resource_type or "Resource") + path[len(root):]
    return path


def http_error(code: grpc.StatusCode, message: str, resource_type: str = "") -> FhirError:
    """The FHIR error a failed records call is: status, issue code, diagnostics and the element path.

    INVALID_ARGUMENT names the element (400 with its FHIRPath in ``expression``); UNAUTHENTICATED is 401 with
    ``WWW-Authenticate``; FAILED_PRECONDITION is 410 Gone for an erased record, else 422 (a business rule,
    e.g. a deactivated patient), except a stale ``if_version``: 412 Precondition Failed naming ``If-Match``;
    an internal failure (INTERNAL, UNKNOWN, DATA_LOSS, anything unforeseen) is
    500 with a trace id and nothing from the service.
    """
    if code == grpc.StatusCode.FAILED_PRECONDITION and ERASED_MARKER in message:
        return FhirError(410, "deleted", message)
    if code == grpc.StatusCode.FAILED_PRECONDITION and message.startswith(STALE_VERSION_FIELD + ":"):
        # Optimistic concurrency: the record was updated since the version the client's If-Match names.
        return FhirError(412, "conflict", "If-Match" + message.removeprefix(STALE_VERSION_FIELD))
    if code not in _HTTP:
        trace_id = current_trace_id()
        return FhirError(500, "exception", f"internal error (trace id {trace_id})" if trace_id else "internal error")
    status, issue = _HTTP[code]
    expression = ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        match = _FIELD_MESSAGE.match(message)
        if match:
            expression = fhir_path(match["path"], resource_type)
            message = f"{expression}: {match['why']}"
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else {}
    return FhirError(status, issue, message, expression, headers)


def rpc_error(exc: grpc.RpcError, resource_type: str = "") -> FhirError:
    """:func:`http_error` of a failed gRPC call."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    details = (exc.details() if hasattr(exc, "details") else "") or ""  # type: ignore[attr-defined]
    return http_error(code, details, resource_type)
