"""One patient, one health record across the network: issue 14's story (``carechain demo --story network``).

Hospital A registers a patient and stores a cancer diagnosis, a medication, an allergy and a
psychiatric note; hospital B registers the same person (its own local id) and stores a lab result.
The patient links B's identity to their network identity (B attests, the patient signs). An
emergency physician at hospital C breaks the glass, with a reason, and gets the patient summary:
everything from A and B except the psychiatric note, and is told that some records were withheld.
The patient sees every access and the break-glass notification; A amends the diagnosis (version 2)
and C's next read shows it; the patient erases the lab result, reads say it was erased, and the
chain still verifies.

Each step is a method of :class:`NetworkStory`, so the end-to-end test checks what happened after
each one; :func:`run_network_story` runs them all, narrating in plain words.
"""

from __future__ import annotations

import copy
import datetime
import pathlib
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from carechain.audit.v1 import audit_pb2
from carechain.client.endpoints import Endpoints
from carechain.client.sdk import CareChainClient, Category, Kind, Purpose, permit
from carechain.core.crypto import Signer
from carechain.dev.demo import DemoKeys, cancer_diagnosis, psychiatric_diagnosis, say_history
from carechain.labels.sensitivity import category_name
from carechain.records.v1 import records_pb2

#: The practitioner specialty that may break the glass by default (ConsentSettings.break_glass_specialties).
EMERGENCY_SPECIALTY = "emergency-medicine"
#: Why the emergency physician breaks the glass: words for the patient and the privacy officer, no PHI.
BREAK_GLASS_REASON = "unconscious patient in the emergency department, history needed for treatment"

# The story's records: which hospital writes each, in the order they are written.
DIAGNOSIS, MEDICATION, ALLERGY, PSYCHIATRIC_NOTE, LAB_RESULT = (
    "cancer diagnosis", "medication", "allergy", "psychiatric note", "lab result")
RECORDS_AT_A = (DIAGNOSIS, MEDICATION, ALLERGY, PSYCHIATRIC_NOTE)
RECORDS_AT_B = (LAB_RESULT,)
#: What the emergency physician's summary holds: all but the psychiatric note (a sensitive category no
#: consent opens to them, and break-glass never opens).
SUMMARY_RECORDS = (DIAGNOSIS, MEDICATION, ALLERGY, LAB_RESULT)


def medication_request(fhir_patient_id: str) -> dict[str, Any]:
    """An active MedicationRequest for simvastatin 40 mg (RxNorm 198211)."""
    return {
        "resourceType": "MedicationRequest",
        "id": str(uuid.uuid4()),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "198211", "display": "Simvastatin 40 MG Oral Tablet"}]},
        "subject": {"reference": f"Patient/{fhir_patient_id}"},
        "authoredOn": "2026-03-05",
    }


def penicillin_allergy(fhir_patient_id: str) -> dict[str, Any]:
    """A confirmed, high-criticality allergy to penicillin (SNOMED CT 91936005)."""
    return {
        "resourceType": "AllergyIntolerance",
        "id": str(uuid.uuid4()),
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "criticality": "high",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005",
                             "display": "Allergy to penicillin"}]},
        "patient": {"reference": f"Patient/{fhir_patient_id}"},
        "recordedDate": "2026-01-10",
    }


def hemoglobin_result(fhir_patient_id: str) -> dict[str, Any]:
    """A final laboratory Observation: haemoglobin 10.9 g/dL (LOINC 718-7)."""
    return {
        "resourceType": "Observation",
        "id": str(uuid.uuid4()),
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7",
                             "display": "Hemoglobin [Mass/volume] in Blood"}]},
        "subject": {"reference": f"Patient/{fhir_patient_id}"},
        "effectiveDateTime": "2026-04-01",
        "valueQuantity": {"value": 10.9, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
    }


def amended_diagnosis(diagnosis: dict[str, Any]) -> dict[str, Any]:
    """The diagnosis as amended after staging: the same Condition with its stage and a confirmed status."""
    amended = copy.deepcopy(diagnosis)
    amended["verificationStatus"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]}
    amended["stage"] = [{"summary": {"text": "Stage IIA (T2 N0 M0)"}}]
    return amended


_WRITERS: dict[str, Callable[[str], dict[str, Any]]] = {
    DIAGNOSIS: cancer_diagnosis,
    MEDICATION: medication_request,
    ALLERGY: penicillin_allergy,
    PSYCHIATRIC_NOTE: psychiatric_diagnosis,
    LAB_RESULT: hemoglobin_result,
}


@dataclass
class NetworkStoryOutcome:
    """What happened at each step, for the narration and for the end-to-end test."""

    #: Organisation ids of hospitals "A", "B" and "C".
    hospital_ids: dict[str, str] = field(default_factory=dict)
    #: The patient's network identity (their registration at hospital A).
    patient_id: str = ""
    #: Hospital B's local pseudonym for the same person, linked to patient_id.
    linked_patient_id: str = ""
    #: The patient's local FHIR Patient id at hospitals "A" and "B" (never on the ledger).
    fhir_ids: dict[str, str] = field(default_factory=dict)
    #: The emergency physician at hospital C.
    physician_id: str = ""
    #: Record id by story name (DIAGNOSIS, MEDICATION, ...).
    record_ids: dict[str, str] = field(default_factory=dict)
    #: The FHIR resources as stored, by story name (the diagnosis as first written).
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The sensitivity categories the gateway derived for each record when it was stored.
    categories: dict[str, list[int]] = field(default_factory=dict)
    #: The network id hospital B resolved its own local FHIR id to, after the link.
    resolved_network_id: str = ""
    #: The physician's search of Conditions (without break-glass: what consent alone permits).
    condition_search: records_pb2.SearchRecordsResponse | None = None
    #: The physician's break-glass patient summary.
    summary: Any = None
    history: list[audit_pb2.StoredAuditEvent] = field(default_factory=list)
    notifications: list[audit_pb2.Notification] = field(default_factory=list)
    #: Hospital A's amendment of the diagnosis and the physician's read after it.
    amendment: records_pb2.PutRecordResponse | None = None
    amended_read: records_pb2.GetRecordResponse | None = None
    diagnosis_versions: list[Any] = field(default_factory=list)
    #: The patient's erasure of the lab result, and what a read says afterwards.
    erasure: Any = None
    #: Whether the patient's SDK proved the receipt's tombstone is in the co-signed log.
    erasure_proven: bool = False
    erased_read_code: grpc.StatusCode | None = None
    erased_read_details: str = ""
    chain_ok: bool = False
    blocks_checked: int = 0
    audit_ok: bool = False
    #: The story's principals' key files by role, when kept.
    key_files: dict[str, pathlib.Path] = field(default_factory=dict)


class NetworkStory:
    """The story against a running network, one method per step (call them in order), narrated through say."""

    #: The steps in story order.
    STEPS = ("register", "link", "consent", "emergency_summary", "patient_review", "amend", "erase", "verify")

    def __init__(self, endpoints: Endpoints, operator: Signer, say: Callable[[str], None] = print,
                 key_dir: pathlib.Path | None = None) -> None:
        """key_dir: keep the story's principals' key files there (0600); None keeps keys in memory only."""
        self.endpoints = endpoints
        self.operator = operator
        self.say = say
        self.keys = DemoKeys(key_dir)
        self.outcome = NetworkStoryOutcome()
        self._clients: dict[str, CareChainClient] = {}
        self._step = 0

    def __enter__(self) -> NetworkStory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every client the story opened."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(self, role: str) -> CareChainClient:
        """The client acting as the story's principal in role (hospital-a, patient, er-physician, ...)."""
        return self._clients[role]

    def _narrate(self, text: str) -> None:
        self._step += 1
        self.say(f"{self._step}. {text}")

    def _register(self, registrar: CareChainClient, role: str, kind: int, name: str, **fields: str) -> str:
        key = self.keys.new(role)
        principal = registrar.register(kind, name, key.public_key_bytes(), **fields)
        self.keys.registered(role, principal.principal_id)
        self._clients[role] = CareChainClient(self.endpoints, key.with_key_id(principal.principal_id))
        return principal.principal_id

    # --- the steps -------------------------------------------------------------------------------

    def register(self) -> None:
        """Three hospitals, the patient at A and at B (two local ids), A's four records and B's lab result."""
        out = self.outcome
        with CareChainClient(self.endpoints, self.operator) as operator:
            for letter, city in (("A", "Northtown"), ("B", "Easton"), ("C", "Southport")):
                out.hospital_ids[letter] = self._register(operator, f"hospital-{letter.lower()}",
                                                          Kind.PRINCIPAL_KIND_ORGANIZATION, f"{city} Hospital {letter}")
        self._narrate("operator registered hospitals A {A}, B {B} and C {C}".format(**out.hospital_ids))

        fhir_ids = out.fhir_ids = {"A": str(uuid.uuid4()), "B": str(uuid.uuid4())}
        out.patient_id = self._register(self.client("hospital-a"), "patient", Kind.PRINCIPAL_KIND_PATIENT,
                                        "Pat Example", fhir_patient_id=fhir_ids["A"])
        out.linked_patient_id = self._register(self.client("hospital-b"), "patient-at-b", Kind.PRINCIPAL_KIND_PATIENT,
                                               "Pat Example", fhir_patient_id=fhir_ids["B"])
        self._narrate(f"the patient registered at hospital A as {out.patient_id} and at hospital B as"
                      f" {out.linked_patient_id}: two hospitals, two local ids, not yet known to be one person")

        writes = (("A", RECORDS_AT_A, out.patient_id), ("B", RECORDS_AT_B, out.linked_patient_id))
        for hospital, names, patient in writes:
            writer = self.client(f"hospital-{hospital.lower()}")
            stored_names = []
            for name in names:
                resource = _WRITERS[name](fhir_ids[hospital])
                stored = writer.put_record(patient, resource)
                out.record_ids[name], out.resources[name] = stored.record_id, resource
                out.categories[name] = list(stored.categories)
                labels = ", ".join(category_name(c) for c in stored.categories)
                stored_names.append(f"{name} {stored.record_id} [{labels}]")
            self._narrate(f"hospital {hospital} stored " + "; ".join(stored_names))

    def link(self) -> None:
        """Hospital B attests that its patient is the network patient; the patient signs the link."""
        out = self.outcome
        attestation = self.client("hospital-b").attest_patient_link(out.patient_id, out.linked_patient_id)
        self.client("patient").link_patient(out.linked_patient_id, attestation)
        resolved = self.client("hospital-b").resolve_patient(out.fhir_ids["B"])
        out.resolved_network_id = resolved.network_patient_id
        self._narrate(f"hospital B attested that its patient {out.linked_patient_id} is network patient"
                      f" {out.patient_id}; the patient signed the link with their own key; hospital B now resolves"
                      f" its local id to network patient {out.resolved_network_id} (and only its own ids)")

    def consent(self) -> None:
        """The patient lets emergency physicians see their cancer history; nothing else is granted."""
        physician = self._register(self.client("hospital-c"), "er-physician", Kind.PRINCIPAL_KIND_PRACTITIONER,
                                   "Dr. Kim Emergency", specialty=EMERGENCY_SPECIALTY)
        self.outcome.physician_id = physician
        provision = permit([Purpose.PURPOSE_OF_USE_ETREAT], specialty=EMERGENCY_SPECIALTY,
                           categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY])
        # A specialty is scoped to the patient's registering organisation unless the patient says otherwise:
        # the emergency department of a hospital they have never been to is the point.
        provision.actors[0].any_organization = True
        consent = self.client("patient").grant_consent(provision)
        self._narrate(f"the patient granted emergency physicians of any member hospital ONCOLOGY access for"
                      f" emergency treatment (consent {consent.consent_id}); hospital C registered emergency"
                      f" physician {physician}")

    def emergency_summary(self) -> None:
        """At hospital C the physician searches the patient's conditions, then breaks the glass for the summary."""
        out = self.outcome
        physician = self.client("er-physician")
        out.condition_search = physician.search_records(out.patient_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT,
                                                        resource_types=["Condition"])
        found = ", ".join(self._name_of(r.record_id) for r in out.condition_search.records) or "none"
        self._narrate(f"the emergency physician at hospital C searched the network patient's Conditions:"
                      f" found {found}; {out.condition_search.withheld} withheld by consent (not named)")

        out.summary = physician.patient_summary(out.patient_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT,
                                                break_glass=True, break_glass_reason=BREAK_GLASS_REASON)
        self._narrate(f"the physician broke the glass (\"{BREAK_GLASS_REASON}\") and got the patient summary:"
                      f" {len(out.summary.records)} records from hospitals A and B, {out.summary.withheld} withheld")
        for read in out.summary.records:
            how = "break-glass" if read.break_glass else "consent"
            self.say(f"   {read.resource_type:20} {self._name_of(read.record_id):17} {read.record_id}  ({how})")
        if out.summary.withheld:
            self.say(f"   the physician is told that {out.summary.withheld} record(s) were withheld, not which")

    def patient_review(self) -> None:
        """The patient reads their access history and their break-glass notification."""
        out = self.outcome
        patient = self.client("patient")
        out.history = patient.access_history()
        out.notifications = patient.notifications()
        by_physician = [e for e in out.history if e.event.actor_id == out.physician_id]
        self._narrate(f"the patient's access history shows {len(by_physician)} accesses by the emergency"
                      f" physician ({len(out.history)} events in all, newest first):")
        say_history(self.say, by_physician)
        for notification in out.notifications:
            self.say(f"   notification: {notification.message}")

    def amend(self) -> None:
        """Hospital A amends the diagnosis (version 2); the physician's next read shows the amendment."""
        out = self.outcome
        record_id = out.record_ids[DIAGNOSIS]
        out.amendment = self.client("hospital-a").update_record(
            record_id, amended_diagnosis(out.resources[DIAGNOSIS]), if_version=1)
        physician = self.client("er-physician")
        out.amended_read = physician.get_record(record_id, Purpose.PURPOSE_OF_USE_ETREAT, provenance=True)
        out.diagnosis_versions = physician.record_history(record_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT)
        written = out.amended_read.record_version
        self._narrate(f"hospital A amended the diagnosis (version {out.amendment.version}); the physician's next"
                      f" read shows version {written.version}, with the stage, written by organisation"
                      f" {written.author_organization_id} at {_instant(written.last_updated_ms)} (a FHIR Provenance"
                      f" comes with it); the record's history lists {len(out.diagnosis_versions)} versions")

    def erase(self) -> None:
        """The patient erases the lab result; reads then say it was erased."""
        out = self.outcome
        record_id = out.record_ids[LAB_RESULT]
        patient = self.client("patient")
        out.erasure = patient.erase_records(out.patient_id, [record_id],
                                            reason="I withdraw this result from the network")
        # The receipt is proof without trusting the network: the tombstone is in the log the validators signed.
        inclusion = patient.verify_erasure_receipt(out.erasure)
        out.erasure_proven = inclusion.log_index == out.erasure.log_index and record_id in inclusion.record_ids
        try:
            self.client("er-physician").get_record(record_id, Purpose.PURPOSE_OF_USE_ETREAT,
                                                   break_glass_reason=BREAK_GLASS_REASON)
        except grpc.RpcError as exc:
            out.erased_read_code, out.erased_read_details = exc.code(), str(exc.details())  # type: ignore[attr-defined]
        self._narrate(f"the patient erased the lab result: a tombstone at ledger log index {out.erasure.log_index},"
                      f" its data key destroyed, its blob deleted; the receipt's inclusion proof checked against the"
                      f" co-signed checkpoint of {inclusion.checkpoint.tree_size} entries; the physician's read now"
                      f" answers {_status_name(out.erased_read_code)}: {out.erased_read_details}")

    def verify(self) -> None:
        """The operator re-verifies the ledger chain and the audit trail."""
        out = self.outcome
        with CareChainClient(self.endpoints, self.operator) as operator:
            chain = operator.verify_chain()
            audit = operator.verify_audit()
        out.chain_ok, out.blocks_checked, out.audit_ok = chain.ok, chain.blocks_checked, audit.ok
        self._narrate(f"operator's ledger chain verification: {'OK' if chain.ok else 'FAILED: ' + chain.problem}"
                      f" ({chain.blocks_checked} blocks); audit trail verification:"
                      f" {'OK' if audit.ok else 'FAILED'}")
        out.key_files = dict(self.keys.files)

    def _name_of(self, record_id: str) -> str:
        return next((name for name, known in self.outcome.record_ids.items() if known == record_id), "record")


def _instant(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _status_name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "the record (not erased?)"


def run_network_story(endpoints: Endpoints, operator: Signer, say: Callable[[str], None] = print,
                      key_dir: pathlib.Path | None = None, command: str = "carechain ",
                      data_dir: str = "") -> NetworkStoryOutcome:
    """Run every step of the story against a running network, narrating each; what happened.

    key_dir: keep the principals' key files there and end with the commands to try next (written as
    ``<command>records summary ... --data-dir <data_dir>``).
    """
    say("One patient, one health record across the network:")
    with NetworkStory(endpoints, operator, say, key_dir) as story:
        for step in NetworkStory.STEPS:
            getattr(story, step)()
    if key_dir is not None:
        _say_next_commands(say, key_dir, story.outcome, command, data_dir)
    return story.outcome


def _say_next_commands(say: Callable[[str], None], key_dir: pathlib.Path, out: NetworkStoryOutcome, command: str,
                       data_dir: str) -> None:
    """The commands that continue the story with its principals' own key files."""
    net = f" --data-dir {shlex.quote(data_dir)}" if data_dir else ""

    def key(role: str) -> str:
        return shlex.quote(str(key_dir / f"{role}.key"))

    emergency = f"--purpose etreat --break-glass {shlex.quote(BREAK_GLASS_REASON)}"
    say(f"\nThe story's key files are in {key_dir}/ (0600). Continue with them:")
    for line in (
        f"records summary{net} --key-file {key('er-physician')} --patient {out.patient_id} {emergency}"
        "   # the summary again: the lab result is gone",
        f"records search{net} --key-file {key('er-physician')} --patient {out.patient_id} --purpose etreat"
        "   # what consent alone lets the physician find",
        f"history{net} --key-file {key('patient')}   # every access, the erasure too",
    ):
        say(f"  {command}{line}")
