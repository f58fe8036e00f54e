"""Network patient identity end to end on the six real processes (docs/network-identity.md).

A patient registered at hospitals A and B links B's pseudonym to their network identity (A's): the
record B wrote before the link is then the patient's own on the ledger, governed by the consent the
patient grants as the network identity; hospital C resolves neither hospital's ids; B can unlink.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, operator_client, records_of

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Category, Purpose, permit
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.dev.demo import cancer_diagnosis
from carechain.ledger.v1 import ledger_pb2


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


@pytest.fixture(scope="module")
def people(network):
    hospital_a, hospital_b, hospital_c = (new_hospital(network) for _ in range(3))
    oncologist_c = new_practitioner(network, hospital_c, "oncology")
    doctor_b = new_practitioner(network, hospital_b, "general-practice")
    network_patient, fhir_a = new_patient(network, hospital_a)
    local_patient, fhir_b = new_patient(network, hospital_b)
    actors = (hospital_a, hospital_b, hospital_c, oncologist_c, doctor_b, network_patient, local_patient)
    yield actors + (fhir_a, fhir_b)
    for actor in actors:
        actor.client.close()


def test_a_linked_record_written_before_the_link_is_the_network_patients_under_their_consent(network, people):
    hospital_a, hospital_b, hospital_c, oncologist_c, _, patient, local, fhir_a, fhir_b = people
    written = hospital_b.client.put_record(local.principal_id, cancer_diagnosis(fhir_b))
    consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                  practitioner_id=oncologist_c.principal_id,
                                                  categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
    # Before the link: B's record is not the network patient's, and their consent does not reach it.
    code, _ = _status(lambda: patient.client.ledger.GetRecordEntry(
        ledger_pb2.GetRecordEntryRequest(record_id=written.record_id), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = _status(lambda: oncologist_c.client.get_record(written.record_id))
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, DENIAL_MESSAGE)

    # Both sides prove: B attests its local patient, the patient signs the link with their own key.
    attestation = hospital_b.client.attest_patient_link(patient.principal_id, local.principal_id)
    linked = patient.client.link_patient(local.principal_id, attestation)
    assert linked.rewrapped >= 1  # B's data key now wrapped under the network patient's key-encryption key

    # The patient (as the network identity) reads the record's ledger entry and proves its inclusion.
    entry = patient.client.ledger.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id=written.record_id),
                                                 timeout=30)
    assert entry.record.patient_id == local.principal_id
    assert patient.client.verify_record_inclusion(written.record_id).checkpoint.tree_size > 0
    # The network patient's consent now governs it: C's oncologist reads the exact bytes B stored.
    read = oncologist_c.client.get_record(written.record_id)
    assert read.patient_id == local.principal_id and b"Condition" in read.resource_json
    # ...and the read is in the network patient's own accounting of disclosures.
    assert any(e.event.record_id == written.record_id and e.event.actor_id == oncologist_c.principal_id
               and e.event.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS for e in patient.client.access_history())
    # A record B writes after the link is covered as well (its data key made under the network key).
    later = hospital_b.client.put_record(local.principal_id, cancer_diagnosis(fhir_b))
    assert oncologist_c.client.get_record(later.record_id).resource_json
    # And the network patient's revocation stops both.
    patient.client.revoke_consent(consent.consent_id)
    for record_id in (written.record_id, later.record_id):
        code, details = _status(lambda rid=record_id: oncologist_c.client.get_record(rid))
        assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, DENIAL_MESSAGE)

    # The attestation links once: submitting it again is refused by the ledger.
    code, _ = _status(lambda: patient.client.link_patient(local.principal_id, attestation))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    # Resolution, in the spirit of IHE PIXm: each hospital its own ids only.
    by_b = hospital_b.client.resolve_patient(fhir_b)
    assert by_b.network_patient_id == patient.principal_id
    assert list(by_b.organization_patient_ids) == [local.principal_id]
    by_a = hospital_a.client.resolve_patient(fhir_a)
    assert (by_a.network_patient_id, list(by_a.organization_patient_ids)) == (patient.principal_id,
                                                                             [patient.principal_id])
    unknown = _status(lambda: hospital_c.client.resolve_patient("no-such-patient"))
    assert unknown[0] == grpc.StatusCode.NOT_FOUND
    for fhir_id in (fhir_a, fhir_b):  # C learns nothing about A's or B's patients: the unknown-id answer
        assert _status(lambda f=fhir_id: hospital_c.client.resolve_patient(f)) == unknown
        assert _status(lambda f=fhir_id: oncologist_c.client.resolve_patient(f)) == unknown

    with operator_client(network) as operator:
        assert operator.verify_chain().ok


def test_the_linked_patients_organization_unlinks_and_only_the_attesting_one(network, people):
    hospital_a, hospital_b, hospital_c, _, doctor_b, patient, local, _, fhir_b = people
    if hospital_b.client.resolve_patient(fhir_b).network_patient_id != patient.principal_id:
        patient.client.link_patient(local.principal_id,
                                    hospital_b.client.attest_patient_link(patient.principal_id, local.principal_id))
    # Another organisation cannot attest B's patient (the ledger refuses it as not permitted).
    forged = hospital_c.client.attest_patient_link(patient.principal_id, local.principal_id)
    code, _ = _status(lambda: patient.client.link_patient(local.principal_id, forged))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A's hospital did not register the linked patient: it may not unlink it.
    code, _ = _status(lambda: hospital_a.client.unlink_patient(local.principal_id, patient.principal_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    unlinked = hospital_b.client.unlink_patient(local.principal_id, patient.principal_id)
    assert unlinked.ledger_log_index > 0
    assert doctor_b.client.resolve_patient(fhir_b).network_patient_id == local.principal_id
    code, _ = _status(lambda: patient.client.ledger.GetRecordEntry(
        ledger_pb2.GetRecordEntryRequest(record_id=sorted(records_of(network, local.principal_id))[0]), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND


def _carechain(network, *args: str) -> str:
    """Run `carechain ARGS` against the network as a user would; its stdout (exit status 0 asserted)."""
    offline = args[0] == "keys"
    done = subprocess.run([sys.executable, "-m", "carechain", *args,
                           *([] if offline else ["--data-dir", str(network.layout.root)])],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"carechain {args}: {done.stdout}{done.stderr}"
    return done.stdout


def test_the_patient_links_and_the_hospital_resolves_from_the_command_line(network, tmp_path):
    keys = {role: tmp_path / f"{role}.key" for role in ("hospital-a", "hospital-b", "patient", "patient-b")}
    for path in keys.values():
        _carechain(network, "keys", "new", "--out", str(path))
    ids = {}
    for role in ("hospital-a", "hospital-b"):
        ids[role] = json.loads(_carechain(network, "principals", "register-hospital", "--name", role,
                                          "--new-key", str(keys[role]), "--json"))["principalId"]
    fhir = {"patient": str(uuid.uuid4()), "patient-b": str(uuid.uuid4())}
    for role, hospital in (("patient", "hospital-a"), ("patient-b", "hospital-b")):
        registered = _carechain(network, "principals", "register-patient", "--key-file", str(keys[hospital]),
                                "--name", "Pat", "--fhir-id", fhir[role], "--new-key", f"{keys[role]}.pub")
        ids[role] = registered.split()[2]
        _carechain(network, "keys", "set-id", "--key-file", str(keys[role]), ids[role])

    attestation = tmp_path / "link.att"
    _carechain(network, "patient", "attest-link", "--key-file", str(keys["hospital-b"]),
               "--network-patient", ids["patient"], ids["patient-b"], "--out", str(attestation))
    linked = json.loads(_carechain(network, "patient", "link", "--key-file", str(keys["patient"]), ids["patient-b"],
                                   str(attestation), "--json"))
    assert int(linked["ledgerLogIndex"]) > 0
    resolved = json.loads(_carechain(network, "patient", "resolve", "--key-file", str(keys["hospital-b"]),
                                     fhir["patient-b"], "--json"))
    assert resolved == {"networkPatientId": ids["patient"], "organizationPatientIds": [ids["patient-b"]]}
    _carechain(network, "patient", "unlink", "--key-file", str(keys["patient"]), ids["patient-b"])
    resolved = json.loads(_carechain(network, "patient", "resolve", "--key-file", str(keys["hospital-b"]),
                                     fhir["patient-b"], "--json"))
    assert resolved["networkPatientId"] == ids["patient-b"]
