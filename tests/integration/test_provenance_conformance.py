"""What a read returns about a record version is valid FHIR R4 (HAPI FHIR, offline): the Provenance of a
version (by a practitioner for an organisation, and by the organisation itself) and the resource with
meta.versionId / meta.lastUpdated set (carechain.records.provenance)."""

from __future__ import annotations

import json

import pytest
from fhir_validator import HapiValidator

from carechain.ledger.v1 import ledger_pb2
from carechain.records import provenance
from carechain.records.v1 import records_pb2

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session
pytestmark = pytest.mark.timeout(900)  # the first test also starts the JVM


def version(number: int, practitioner: str) -> records_pb2.RecordVersion:
    record = ledger_pb2.RegisterRecord(record_id="0b7f1c2e-5d6a-4b8e-9f10-2c3d4e5f6a7b", organization_id="org-a",
                                       content_sha256="ab" * 32, version=number)
    return provenance.record_version(record, ledger_pb2.RecordMetadata(author_id=practitioner), 12,
                                     1_767_225_600_123)


@pytest.mark.parametrize(("number", "author"), [(1, "org-a"), (2, "prac-1")])
def test_a_versions_provenance_is_valid_r4(hapi_validator: HapiValidator, number: int, author: str) -> None:
    outcome = hapi_validator.validate(json.loads(provenance.provenance_resource(version(number, author), "Condition")))
    assert outcome.valid, "\n".join(map(str, outcome.errors))


def test_the_versioned_resource_is_valid_r4(hapi_validator: HapiValidator) -> None:
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p-1"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}}
    versioned = json.loads(provenance.with_version_meta(json.dumps(condition).encode(), version(2, "prac-1")))
    assert versioned["meta"] == {"versionId": "2", "lastUpdated": "2026-01-01T00:00:00.123Z"}
    outcome = hapi_validator.validate(versioned)
    assert outcome.valid, "\n".join(map(str, outcome.errors))
