"""Pure parts of the records benchmark: the workload's resources, the large record, the skipped figures."""

from __future__ import annotations

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


def test_large_attachment_file_has_the_requested_size(tmp_path: pathlib.Path) -> None:
    path = records.write_random_file(tmp_path / "attachment.bin", 3 * 1024 + 5, chunk=1024)
    assert path.stat().st_size == 3 * 1024 + 5


def test_large_record_adapter_sends_a_document_reference_envelope_and_the_file(tmp_path: pathlib.Path) -> None:
    sent: list[tuple[str, dict[str, object], bytes, int]] = []

    class Hospital:
        def put_large_record(self, patient_id: str, envelope: dict[str, object], data: object, size: int) -> str:
            sent.append((patient_id, envelope, data.read(), size))  # type: ignore[attr-defined]
            return "stored"

    path = records.write_random_file(tmp_path / "attachment.bin", 4096)
    assert records.large_record_adapter(Hospital(), "fhir-7")("psn-7", path) == "stored"
    [(patient_id, envelope, data, size)] = sent
    assert (patient_id, size, data) == ("psn-7", 4096, path.read_bytes())
    assert envelope["resourceType"] == "DocumentReference"
    assert envelope["subject"] == {"reference": "Patient/fhir-7"}
    assert envelope["content"] == [{"attachment": {"contentType": "application/octet-stream", "size": 4096}}]


def test_bulk_import_adapter_streams_the_resources_and_counts_committed_ones() -> None:
    class Result:
        def __init__(self, code: int) -> None:
            self.code = code

    streamed: list[tuple[str, bytes, str]] = []

    class Hospital:
        def import_records(self, resources: object) -> object:
            streamed.extend(resources)  # type: ignore[call-overload]
            return iter([Result(0), Result(14), Result(0)])

    assert records.bulk_import_adapter(Hospital())("psn-1", [b"a", b"b", b"c"]) == 2
    assert streamed == [("psn-1", b"a", "0"), ("psn-1", b"b", "1"), ("psn-1", b"c", "2")]


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


def test_tail_settings_let_one_caller_hold_every_tail_beside_the_services_streams(monkeypatch) -> None:
    from bench.records import tail_stream_settings
    from carechain.runtime.config import AuditSettings

    for name, value in tail_stream_settings(64).items():
        monkeypatch.setenv(name, value)
    settings = AuditSettings()
    assert settings.max_streams_per_caller == 64 and settings.max_streams >= 64 + 16
