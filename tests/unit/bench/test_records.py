"""Pure parts of the records benchmark: the workload's resources, the large record, the skipped figures."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from bench import records
from bench.figures import Result


def test_payloads_are_one_2_kib_resource_per_patient() -> None:
    payload, patients, payloads = records.synthea_payloads(3)
    resource = json.loads(payload)
    assert resource["resourceType"] == records.RESOURCE_TYPE
    assert 1536 <= len(payload) <= 2560
    assert len(patients) == len(payloads) == 3
    for patient, own in zip(patients, payloads, strict=True):
        assert json.loads(own)["subject"]["reference"].endswith(str(patient["id"]))


def test_large_binary_is_valid_fhir_json_of_the_requested_size(tmp_path: pathlib.Path) -> None:
    size = 3 * 1024 * 1024 + 5  # more than one chunk, and not a multiple of 3
    path = records.write_large_binary(tmp_path / "binary.json", "Patient/psn-1", size)
    resource = json.loads(path.read_bytes())
    assert resource["resourceType"] == "Binary"
    assert resource["securityContext"] == {"reference": "Patient/psn-1"}
    assert len(base64.b64decode(resource["data"], validate=True)) == size


def test_missing_sdk_calls_skip_the_figure_with_the_rpc_named(capsys: pytest.CaptureFixture[str]) -> None:
    class Hospital:
        pass

    call, why = records.sdk_call(Hospital(), records.BULK_IMPORT_METHOD, records.BULK_IMPORT_RPC)  # type: ignore[arg-type]
    assert call is None
    bulk = Result()
    records.bulk_import_figure(call, why, ["psn-1"], [b"{}"], 10, 3, bulk)
    assert bulk.skipped == why and not bulk.values
    assert f"RPC {records.BULK_IMPORT_RPC} missing" in capsys.readouterr().out


def test_bulk_import_figure_counts_resources_per_second_through_the_given_call() -> None:
    calls: list[tuple[str, int]] = []

    def import_resources(patient_id: str, resources: list[bytes]) -> None:
        calls.append((patient_id, len(resources)))

    result = Result()
    records.bulk_import_figure(import_resources, "", ["psn-1", "psn-2"], [b"{1}", b"{2}"], 50, 3, result)
    assert calls == [("psn-1", 50), ("psn-2", 50), ("psn-1", 50)]
    assert len(result.values) == 3 and all(value > 0 for value in result.values)
