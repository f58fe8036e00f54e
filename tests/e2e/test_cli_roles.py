"""Every everyday `carechain` subcommand as a subprocess, against one embedded network.

A hospital integrator and two patients each hold their own key file (`carechain keys new`): the
operator registers the hospital, the hospital its oncologist and patients, stores a record; a patient
grants (from a FHIR Consent file), lists, exports and revokes consent, manages a delegate, reads their
history; a wrong key and another patient are refused with one-line errors and exit status 1.
"""

from __future__ import annotations

import json
import pathlib
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from helpers import start_network

from carechain.dev.demo import cancer_diagnosis
from carechain.dev.localnet import LocalNetwork


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    local = start_network(tmp_path_factory.mktemp("cli-roles"), "embedded")
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def cli(network: LocalNetwork):
    def run(*args: str, expect: int = 0) -> Run:
        network_args = [] if args[0] == "keys" else ["--data-dir", str(network.layout.root)]  # keys are offline
        done = subprocess.run([sys.executable, "-m", "carechain", *args, *network_args],
                              capture_output=True, text=True, timeout=240)
        result = Run(done.returncode, done.stdout, done.stderr)
        assert result.code == expect, f"carechain {' '.join(args)}: exit {result.code}\n{result.out}{result.err}"
        assert "Traceback" not in result.err, result.err
        return result

    return run


def fhir_consent(practitioner_id: str, patient_id: str) -> dict:
    """The patient permits the oncologist oncology data for treatment (a FHIR R4 Consent)."""
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "https://carechain.dev/fhir/NamingSystem/patient-pseudonym",
                                   "value": patient_id}},
        "provision": {"type": "deny", "provision": [{
            "type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
            "securityLabel": [{"system": "https://carechain.dev/fhir/CodeSystem/sensitivity", "code": "ONCOLOGY"}],
        }]},
    }


# gRPC's C core logs to stderr on its own (e.g. "E1201 23:31:58.105064 ..."), whatever the program does.
GRPC_CORE_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl)")


def error_line(run: Run) -> str:
    """The one line a refusal prints."""
    lines = [line for line in run.err.strip().splitlines() if not GRPC_CORE_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    return lines[0]


def test_integrator_and_patient_with_their_own_key_files(cli, network: LocalNetwork, tmp_path: pathlib.Path) -> None:
    keys = {role: tmp_path / f"{role}.key" for role in ("hospital", "oncologist", "patient", "other", "proxy")}

    # Every principal creates its own key; the private key never reaches the output.
    for path in keys.values():
        made = cli("keys", "new", "--out", str(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert pathlib.Path(f"{path}.pub").exists() and "PRIVATE" not in made.out
    assert "exists" in error_line(cli("keys", "new", "--out", str(keys["hospital"]), expect=2))
    # A key file naming no principal yet cannot act.
    assert "names no principal" in error_line(
        cli("consent", "list", "--key-file", str(keys["patient"]), expect=2))

    # The operator registers the hospital from its public key; the hospital records the assigned id.
    hospital = cli("principals", "register-hospital", "--name", "CLI Hospital",
                   "--new-key", f"{keys['hospital']}.pub", "--json").json()
    hospital_id = hospital["principalId"]
    assert hospital_id.startswith("org-") and hospital["keyFileNamed"] == ""
    cli("keys", "set-id", "--key-file", str(keys["hospital"]), hospital_id)
    assert cli("keys", "show", "--key-file", str(keys["hospital"]), "--json").json()["principal_id"] == hospital_id

    # The hospital registers its oncologist (holding the key file: it is named) and two patients (from .pub).
    oncologist = cli("principals", "register-practitioner", "--key-file", str(keys["hospital"]), "--name",
                     "Dr. CLI", "--specialty", "oncology", "--new-key", str(keys["oncologist"]), "--json").json()
    assert oncologist["keyFileNamed"] == str(keys["oncologist"])
    fhir_id = str(uuid.uuid4())
    patients = {}
    for role, fhir in (("patient", fhir_id), ("other", str(uuid.uuid4())), ("proxy", str(uuid.uuid4()))):
        registered = cli("principals", "register-patient", "--key-file", str(keys["hospital"]), "--name", "Pat",
                         "--fhir-id", fhir, "--new-key", f"{keys[role]}.pub")
        patients[role] = registered.out.split()[2]
        assert patients[role].startswith("psn-"), registered.out
        cli("keys", "set-id", "--key-file", str(keys[role]), patients[role])
    patient_id = patients["patient"]

    # The hospital stores a cancer diagnosis.
    record_file = tmp_path / "cancer.json"
    record_file.write_text(json.dumps(cancer_diagnosis(fhir_id)))
    stored = cli("records", "put", "--key-file", str(keys["hospital"]), "--patient", patient_id, str(record_file),
                 "--json").json()
    record_id = stored["record_id"]
    assert stored["categories"] == ["ONCOLOGY"] and stored["ledger_log_index"] > 0

    # Without consent the oncologist is refused, and the refusal does not name the record's category.
    denied = error_line(cli("records", "get", "--key-file", str(keys["oncologist"]), record_id, expect=1))
    assert denied.startswith("error: PERMISSION_DENIED: ") and "oncology" not in denied.lower()

    # The patient grants from a FHIR Consent file, signed with their own key.
    consent_file = tmp_path / "consent.json"
    consent_file.write_text(json.dumps(fhir_consent(oncologist["principalId"], patient_id)))
    granted = cli("consent", "grant", "--key-file", str(keys["patient"]), str(consent_file), "--json").json()
    consent_id = granted["consentId"]
    assert granted["grantedBy"] == patient_id and granted["status"] == "CONSENT_STATUS_ACTIVE"
    # The network can also be named by an endpoints file (a copy of network.json, wherever it is kept).
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text((network.layout.root / "network.json").read_text())
    listed = cli("consent", "list", "--key-file", str(keys["patient"]), "--endpoints", str(endpoints))
    assert consent_id in listed.out and "active" in listed.out
    exported = cli("consent", "export", "--key-file", str(keys["patient"]), consent_id).json()
    assert exported["resourceType"] == "Consent" and exported["id"] == consent_id

    # Now the oncologist reads the exact bytes stored, to stdout and to a 0600 file.
    read = cli("records", "get", "--key-file", str(keys["oncologist"]), record_id, "--purpose", "treat")
    assert read.out.rstrip("\n") == record_file.read_text()
    out = tmp_path / "read.json"
    cli("records", "get", "--key-file", str(keys["oncologist"]), record_id, "--out", str(out))
    assert out.read_bytes() == record_file.read_bytes() and stat.S_IMODE(out.stat().st_mode) == 0o600

    # A delegate: added, listed (by the delegate too), removed.
    proxy_id = patients["proxy"]
    cli("delegates", "add", "--key-file", str(keys["patient"]), proxy_id, "--relationship", "proxy")
    mine = cli("delegates", "list", "--key-file", str(keys["patient"]), "--json").json()
    assert [(d["delegateId"], d["status"]) for d in mine] == [(proxy_id, "DELEGATION_STATUS_ACTIVE")]
    assert proxy_id in cli("delegates", "list", "--key-file", str(keys["proxy"]), "--patient", patient_id).out
    removed = cli("delegates", "remove", "--key-file", str(keys["patient"]), proxy_id, "--json").json()
    assert removed["status"] == "DELEGATION_STATUS_REVOKED"

    # Revocation closes the record again; the history shows the permitted and the refused reads.
    revoked = cli("consent", "revoke", "--key-file", str(keys["patient"]), consent_id, "--json").json()
    assert revoked["status"] == "CONSENT_STATUS_REVOKED"
    assert error_line(cli("records", "get", "--key-file", str(keys["oncologist"]), record_id, expect=1)) \
        .startswith("error: PERMISSION_DENIED: ")
    history = cli("history", "--key-file", str(keys["patient"]), "--json").json()
    reads = [(d["recipientId"], d["outcome"]) for d in history if d.get("action") == "AUDIT_ACTION_READ"]
    assert (oncologist["principalId"], "AUDIT_OUTCOME_SUCCESS") in reads
    assert (oncologist["principalId"], "AUDIT_OUTCOME_DENIED") in reads
    assert "Dr. CLI" in cli("history", "--key-file", str(keys["patient"])).out

    # Refused: a wrong key for the patient's id, another patient's consents and history, a patient storing.
    other = str(keys["other"])
    assert error_line(cli("consent", "list", "--key-file", other, "--principal-id", patient_id, expect=1)) == \
        "error: UNAUTHENTICATED: unknown principal or invalid signature"
    for command in (("consent", "list"), ("history",), ("delegates", "list")):
        refused = error_line(cli(*command, "--key-file", other, "--patient", patient_id, expect=1))
        assert refused.startswith("error: PERMISSION_DENIED: "), refused
        assert "Pat" not in refused and fhir_id not in refused
    assert error_line(cli("consent", "revoke", "--key-file", other, "--patient", patient_id, consent_id,
                          expect=1)).startswith("error: PERMISSION_DENIED: ")
    assert error_line(cli("records", "put", "--key-file", str(keys["patient"]), "--patient", patient_id,
                          str(record_file), expect=1)).startswith("error: PERMISSION_DENIED: ")
    # Bad input is named: a file that is not a Consent, an unknown purpose (usage: exit 2).
    assert error_line(cli("consent", "grant", "--key-file", str(keys["patient"]), str(record_file), expect=1)) == \
        "error: INVALID_ARGUMENT: Consent.resourceType: must be Consent"
    assert "--purpose" in cli("records", "get", "--key-file", str(keys["oncologist"]), record_id, "--purpose",
                              "bogus", expect=2).err
    assert "cannot read" in error_line(cli("records", "put", "--key-file", str(keys["hospital"]), "--patient",
                                           patient_id, str(tmp_path / "missing.json"), expect=2))
