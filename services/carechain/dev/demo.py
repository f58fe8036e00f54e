"""The CareChain story, run against a live network (``carechain demo``).

A hospital onboards an oncologist, a psychiatrist and a patient; stores a
cancer diagnosis and a psychiatric diagnosis; the patient grants the oncologist
oncology access; reads are permitted and denied as consent says; the patient
revokes, sees who accessed what, and the chain verifies.

Given a key directory (``carechain demo`` uses ``<data-dir>/demo-keys/``), the demo principals' key
files stay there (0600, each naming its principal), with the patient's oncology consent as a FHIR
Consent file, and the demo ends with the commands to continue from where it stopped.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from carechain.audit.v1 import audit_pb2
from carechain.client.endpoints import Endpoints
from carechain.client.sdk import CareChainClient, Category, Kind, Purpose, name_key_file, new_key_file, permit
from carechain.core.crypto import Ed25519Signer, write_private_file
from carechain.labels.sensitivity import category_name


def cancer_diagnosis(fhir_patient_id: str) -> dict:
    """A Condition coded as breast cancer (SNOMED CT 254837009)."""
    return {
        "resourceType": "Condition",
        "id": str(uuid.uuid4()),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254837009",
                             "display": "Malignant neoplasm of breast (disorder)"}]},
        "subject": {"reference": f"Patient/{fhir_patient_id}"},
        "onsetDateTime": "2026-03-02",
    }


def psychiatric_diagnosis(fhir_patient_id: str) -> dict:
    """A Condition coded as major depressive disorder (SNOMED CT 370143000, ICD-10 F32.9)."""
    return {
        "resourceType": "Condition",
        "id": str(uuid.uuid4()),
        "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "370143000", "display": "Major depressive disorder"},
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.9"},
        ]},
        "subject": {"reference": f"Patient/{fhir_patient_id}"},
        "note": [{"text": "Psychiatric assessment: low mood for six months."}],
    }


@dataclass
class DemoOutcome:
    """What happened, for tests and for the printout."""

    hospital_id: str = ""
    oncologist_id: str = ""
    psychiatrist_id: str = ""
    patient_id: str = ""
    cancer_record_id: str = ""
    psychiatric_record_id: str = ""
    cancer_read_identical: bool = False
    psychiatric_denial: str = ""
    after_revoke_denial: str = ""
    history: list[audit_pb2.StoredAuditEvent] = field(default_factory=list)
    inclusion_verified: bool = False
    chain_ok: bool = False
    blocks_checked: int = 0
    #: The demo principals' key files by role, when the demo kept them.
    key_files: dict[str, pathlib.Path] = field(default_factory=dict)


def _denial(read: Callable[[], object]) -> str:
    """Run a read that must be denied; return the reason."""
    try:
        read()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # type: ignore[attr-defined]
            return str(exc.details())  # type: ignore[attr-defined]
        raise
    raise AssertionError("the read was permitted but consent should have denied it")


class DemoKeys:
    """New keys for the demo principals: kept as key files in key_dir (0600), or in memory only."""

    def __init__(self, key_dir: pathlib.Path | None) -> None:
        self.key_dir = key_dir
        self.files: dict[str, pathlib.Path] = {}

    def new(self, role: str) -> Ed25519Signer:
        """A new key for role (its file, when kept, is <key_dir>/<role>.key)."""
        if self.key_dir is None:
            return Ed25519Signer.generate("pending")
        self.files[role] = self.key_dir / f"{role}.key"
        return new_key_file(self.files[role])

    def registered(self, role: str, principal_id: str) -> None:
        """Record the id registration assigned in the role's key file."""
        if role in self.files:
            name_key_file(self.files[role], principal_id)


def say_history(say: Callable[[str], None], history: Iterable[audit_pb2.StoredAuditEvent]) -> None:
    """Narrate a patient's access history, one line per event: when, what, how it ended, who, which record."""
    for stored_event in history:
        event = stored_event.event
        when = datetime.datetime.fromtimestamp(event.time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        say(f"   {when}  {audit_pb2.AuditAction.Name(event.action).removeprefix('AUDIT_ACTION_'):15}"
            f" {audit_pb2.AuditOutcome.Name(event.outcome).removeprefix('AUDIT_OUTCOME_'):8}"
            f" by {event.actor_id:40} record {event.record_id or '-'}")


def run_demo(endpoints: Endpoints, operator: Ed25519Signer, say: Callable[[str], None] = print,
             key_dir: pathlib.Path | None = None, command: str = "carechain ", data_dir: str = "") -> DemoOutcome:
    """Run the story against a running network, narrating each step.

    key_dir: keep the demo principals' key files there and end with the commands to try next
    (written as ``<command>records get ... --data-dir <data_dir>``).
    """
    outcome = DemoOutcome()
    keys = DemoKeys(key_dir)
    with CareChainClient(endpoints, operator) as operator_client:
        hospital_key = keys.new("hospital")
        hospital = operator_client.register(Kind.PRINCIPAL_KIND_ORGANIZATION, "St. Example Hospital",
                                            hospital_key.public_key_bytes())
    outcome.hospital_id = hospital.principal_id
    keys.registered("hospital", hospital.principal_id)
    say(f"1. operator registered hospital {hospital.principal_id} (ledger log index {hospital.ledger_log_index})")

    fhir_patient_id = str(uuid.uuid4())
    with CareChainClient(endpoints, hospital_key.with_key_id(hospital.principal_id)) as hospital_client:
        oncologist_key, psychiatrist_key, patient_key = (keys.new(r) for r in ("oncologist", "psychiatrist", "patient"))
        oncologist = hospital_client.register(Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Ana Oncologist",
                                              oncologist_key.public_key_bytes(), specialty="oncology")
        psychiatrist = hospital_client.register(Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Sam Psychiatrist",
                                                psychiatrist_key.public_key_bytes(), specialty="psychiatry")
        patient = hospital_client.register(Kind.PRINCIPAL_KIND_PATIENT, "Pat Example", patient_key.public_key_bytes(),
                                           fhir_patient_id=fhir_patient_id)
        outcome.oncologist_id, outcome.psychiatrist_id = oncologist.principal_id, psychiatrist.principal_id
        outcome.patient_id = patient.principal_id
        for role, principal in (("oncologist", oncologist), ("psychiatrist", psychiatrist), ("patient", patient)):
            keys.registered(role, principal.principal_id)
        say(f"2. hospital registered oncologist {oncologist.principal_id}, psychiatrist {psychiatrist.principal_id}"
            f" and patient {patient.principal_id} (a pseudonym: the ledger never sees the FHIR id)")

        cancer_bytes = json.dumps(cancer_diagnosis(fhir_patient_id)).encode()
        cancer = hospital_client.put_record(patient.principal_id, cancer_bytes)
        psychiatric = hospital_client.put_record(patient.principal_id, psychiatric_diagnosis(fhir_patient_id))
        outcome.cancer_record_id, outcome.psychiatric_record_id = cancer.record_id, psychiatric.record_id
        for name, stored in (("cancer diagnosis", cancer), ("psychiatric diagnosis", psychiatric)):
            labels = ", ".join(category_name(c) for c in stored.categories)
            say(f"3. stored {name} as record {stored.record_id}: labels [{labels}],"
                f" ciphertext sha256 {stored.content_sha256[:16]}..., ledger log index {stored.ledger_log_index}")

    patient_signer = patient_key.with_key_id(patient.principal_id)
    oncologist_signer = oncologist_key.with_key_id(oncologist.principal_id)
    with CareChainClient(endpoints, patient_signer) as patient_client, \
            CareChainClient(endpoints, oncologist_signer) as oncologist_client:
        consent = patient_client.grant_consent(
            permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=oncologist.principal_id,
                   categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY])
        )
        say(f"4. patient granted the oncologist ONCOLOGY access for TREAT (consent {consent.consent_id},"
            f" signed by the patient's own key)")
        if key_dir is not None:
            # The same consent as a FHIR Consent file, for `carechain consent grant` after the revocation below.
            write_private_file(key_dir / "oncology-consent.json",
                               json.dumps(patient_client.export_consent(consent.consent_id), indent=2).encode())

        read = oncologist_client.get_record(cancer.record_id, Purpose.PURPOSE_OF_USE_TREAT)
        outcome.cancer_read_identical = read.resource_json == cancer_bytes
        say(f"5. oncologist read the cancer diagnosis: PERMITTED ({len(read.resource_json)} bytes, identical to"
            f" what was stored: {outcome.cancer_read_identical}, decision {read.decision_id})")

        outcome.psychiatric_denial = _denial(
            lambda: oncologist_client.get_record(psychiatric.record_id, Purpose.PURPOSE_OF_USE_TREAT))
        say(f"6. oncologist read the psychiatric diagnosis: DENIED ({outcome.psychiatric_denial})")

        patient_client.revoke_consent(consent.consent_id)
        say(f"7. patient revoked consent {consent.consent_id}")
        outcome.after_revoke_denial = _denial(
            lambda: oncologist_client.get_record(cancer.record_id, Purpose.PURPOSE_OF_USE_TREAT))
        say(f"8. oncologist read the cancer diagnosis again: DENIED ({outcome.after_revoke_denial})")

        outcome.history = patient_client.access_history()
        say("9. patient's access history (newest first):")
        say_history(say, outcome.history)

        # A patient proves their own record is on the ledger; whole-ledger reads are not theirs to make.
        inclusion = patient_client.verify_record_inclusion(cancer.record_id)
        outcome.inclusion_verified = inclusion.log_index == cancer.ledger_log_index
        say(f"10. patient verified that record {cancer.record_id} is in the co-signed ledger log"
            f" (log index {inclusion.log_index}, tree size {inclusion.checkpoint.tree_size})")

    with CareChainClient(endpoints, operator) as operator_client:
        verification = operator_client.verify_chain()
    outcome.chain_ok, outcome.blocks_checked = verification.ok, verification.blocks_checked
    say(f"11. operator's ledger chain verification: {'OK' if verification.ok else 'FAILED: ' + verification.problem}"
        f" ({verification.blocks_checked} blocks, every hash, signature and proof re-checked)")
    outcome.key_files = dict(keys.files)
    if key_dir is not None:
        _say_next_commands(say, key_dir, outcome, command, data_dir)
    return outcome


def _say_next_commands(say: Callable[[str], None], key_dir: pathlib.Path, outcome: DemoOutcome, command: str,
                       data_dir: str) -> None:
    """The commands that continue the story with the demo principals' own key files."""
    net = f" --data-dir {data_dir}" if data_dir else ""

    def key(role: str) -> str:
        return str(key_dir / f"{role}.key")

    say(f"\nThe demo principals' key files are in {key_dir}/ (0600). Continue with them:")
    for line in (
        f"consent grant{net} --key-file {key('patient')} {key_dir / 'oncology-consent.json'}"
        "   # the patient grants the oncology consent again",
        f"records get{net} --key-file {key('oncologist')} {outcome.cancer_record_id}"
        "   # permitted again",
        f"records get{net} --key-file {key('psychiatrist')} {outcome.cancer_record_id}"
        "   # denied: no consent names the psychiatrist",
        f"consent list{net} --key-file {key('patient')}",
        f"history{net} --key-file {key('patient')}   # who read what, when and why",
        f"delegates add{net} --key-file {key('patient')} --relationship proxy {outcome.psychiatrist_id}",
        f"records put{net} --key-file {key('hospital')} --patient {outcome.patient_id} OBSERVATION.json",
    ):
        say(f"  {command}{line}")
