"""`carechain records import` as a user runs it: Synthea NDJSON files and a Bundle, a summary, a safe rerun."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from helpers import ledger_records, operator_client, start_network

from carechain.client.sdk import CareChainClient, Kind, load_key_file, name_key_file, new_key_file
from carechain.dev.localnet import LocalNetwork


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    local = start_network(tmp_path_factory.mktemp("cli-import"), "embedded")
    try:
        yield local
    finally:
        local.stop()


def _carechain(network: LocalNetwork, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "carechain", *args, "--data-dir", str(network.layout.root)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_import_synthea_ndjson_and_a_bundle_then_resume(network: LocalNetwork, tmp_path: pathlib.Path,
                                                         synthea_dir: pathlib.Path) -> None:
    key = tmp_path / "hospital.key"
    new_key_file(key)
    with operator_client(network) as operator:
        hospital_id = operator.register(Kind.PRINCIPAL_KIND_ORGANIZATION, "Import Hospital",
                                        load_key_file(key, "-").public_key_bytes()).principal_id
    name_key_file(key, hospital_id)
    import gzip

    with gzip.open(synthea_dir / "Patient.000.ndjson.gz", "rt") as lines:
        fhir_ids = [json.loads(line)["id"] for line in lines if line.strip()]
    patients = {}
    with CareChainClient.from_key_file(network.endpoints, key) as hospital:
        for fhir_id in fhir_ids:
            patients[fhir_id] = hospital.register(Kind.PRINCIPAL_KIND_PATIENT, "Patient",
                                                  new_key_file(tmp_path / f"{fhir_id}.key").public_key_bytes(),
                                                  fhir_patient_id=fhir_id).principal_id
    (tmp_path / "patients.json").write_text(json.dumps(patients))
    export = tmp_path / "export"
    export.mkdir()
    for name in ("Patient", "AllergyIntolerance", "Device", "Organization"):  # Organization: not patient data
        shutil.copy(synthea_dir / f"{name}.000.ndjson.gz", export)
    first = fhir_ids[0]
    (export / "visit.json").write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Encounter"},
         "resource": {"resourceType": "Encounter", "status": "finished", "subject": {"reference": f"Patient/{first}"},
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}}]}))
    log = tmp_path / "import.log"
    before = set(ledger_records(network))

    done = _carechain(network, "records", "import", "--key-file", str(key), "--patients",
                      str(tmp_path / "patients.json"), "--log", str(log), "--json", str(export))

    summary = json.loads(done.stdout)
    assert summary["committed"] == 13 + 11 + 16 + 1 and summary["failed"] == {}
    assert summary["skipped"] == {"not patient data": 43}
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    new = set(ledger_records(network)) - before
    assert {entry["record_id"] for entry in logged if "record_id" in entry} == new and len(new) == 41

    # A rerun with --resume sends nothing the log holds: nothing is stored twice.
    again = _carechain(network, "records", "import", "--key-file", str(key), "--patients",
                       str(tmp_path / "patients.json"), "--log", str(log), "--resume", str(export))
    assert again.stdout.startswith("imported 0 records")
    assert set(ledger_records(network)) - before == new
    # A usage mistake is one line and exit status 2.
    wrong = _carechain(network, "records", "import", "--key-file", str(key), str(export), expect=2)
    assert "--patient" in wrong.stderr
