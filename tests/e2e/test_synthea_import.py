"""Importing the Synthea sample: every Patient and Condition reads back byte-identical for a consented reader."""

from __future__ import annotations

import gzip

from helpers import new_hospital, new_patient, new_practitioner

from carechain.client.sdk import Purpose, permit
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES


def _lines(synthea_dir, name: str) -> list[bytes]:
    with gzip.open(synthea_dir / f"{name}.000.ndjson.gz", "rb") as handle:
        return [line.rstrip(b"\n") for line in handle if line.strip()]


def test_synthea_patients_and_conditions_round_trip(network, synthea_dir) -> None:
    import json

    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patients = {}
    written: list[tuple[str, bytes]] = []
    for raw in _lines(synthea_dir, "Patient"):
        fhir_id = json.loads(raw)["id"]
        patient, _ = new_patient(network, hospital, fhir_id)
        patient.client.grant_consent(
            permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                   categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)])
        )
        patients[fhir_id] = patient
        written.append((hospital.client.put_record(patient.principal_id, raw).record_id, raw))
    for raw in _lines(synthea_dir, "Condition"):
        fhir_id = json.loads(raw)["subject"]["reference"].removeprefix("Patient/")
        written.append((hospital.client.put_record(patients[fhir_id].principal_id, raw).record_id, raw))

    assert len(written) == 13 + 555
    mismatched = [record_id for record_id, raw in written
                  if reader.client.get_record(record_id, Purpose.PURPOSE_OF_USE_TREAT).resource_json != raw]
    assert not mismatched, f"{len(mismatched)} records did not read back identical"
    for patient in patients.values():
        patient.client.close()
