"""The one mapping from a records call's gRPC status to the REST client's status and OperationOutcome."""

from __future__ import annotations

import grpc
import pytest

from carechain.fhir.outcomes import fhir_path, http_error, operation_outcome


@pytest.mark.parametrize(("code", "message", "status", "issue"), [
    (grpc.StatusCode.INVALID_ARGUMENT, "resource_json.code: is required", 400, "invalid"),
    (grpc.StatusCode.UNAUTHENTICATED, "token expired", 401, "login"),
    (grpc.StatusCode.PERMISSION_DENIED, "not permitted by the patient's consent", 403, "forbidden"),
    (grpc.StatusCode.NOT_FOUND, "no such record", 404, "not-found"),
    (grpc.StatusCode.ALREADY_EXISTS, "exists", 409, "duplicate"),
    (grpc.StatusCode.FAILED_PRECONDITION, "record was erased on 2026-12-01", 410, "deleted"),
    (grpc.StatusCode.FAILED_PRECONDITION, "patient deactivated", 422, "business-rule"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", 429, "throttled"),
    (grpc.StatusCode.UNIMPLEMENTED, "not configured", 501, "not-supported"),
    (grpc.StatusCode.UNAVAILABLE, "ledger down", 503, "transient"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "slow", 504, "timeout"),
    (grpc.StatusCode.INTERNAL, "detail", 500, "exception"),
    (grpc.StatusCode.UNKNOWN, "detail", 500, "exception"),
    (grpc.StatusCode.DATA_LOSS, "detail", 500, "exception"),
])
def test_status_mapping(code: grpc.StatusCode, message: str, status: int, issue: str) -> None:
    error = http_error(code, message, "Condition")
    assert (error.status, error.code) == (status, issue)
    assert ("detail" in error.diagnostics) == (status != 500 and "detail" in message)
    assert ("WWW-Authenticate" in error.headers) == (status == 401)


def test_invalid_names_the_element_as_fhirpath() -> None:
    error = http_error(grpc.StatusCode.INVALID_ARGUMENT, "resource_json.code.coding[0]: bad system", "Condition")
    assert error.expression == "Condition.code.coding[0]"
    assert error.outcome() == operation_outcome("error", "invalid", "Condition.code.coding[0]: bad system",
                                                "Condition.code.coding[0]")
    assert fhir_path("bundle_json.entry[2].resource", "Bundle") == "Bundle.entry[2].resource"
    assert fhir_path("purpose", "Condition") == "purpose"
    assert http_error(grpc.StatusCode.INVALID_ARGUMENT, "no path here", "Condition").expression == ""
