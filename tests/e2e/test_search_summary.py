"""SearchRecords and the patient summary on six real service processes (embedded backends).

A patient of hospital A has a cancer diagnosis, a psychiatric diagnosis and two ordinary records; they
consent their oncologist to ordinary and oncology records. The oncologist's search lists the permitted
ones by type, date and page, with a withheld count; the summary reads them exactly as GetRecord
(stream and FHIR Bundle); an emergency physician of hospital C breaks the glass and gets the ordinary
records only. A practitioner of another hospital (no consent), another patient and a search for an
unknown patient learn nothing: the same PERMISSION_DENIED as GetRecord. Every search is in the patient's
accounting of disclosures; the CLI does the same from a key file.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from helpers import Actor, new_hospital, new_patient, new_practitioner, operator_client, start_network

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import CareChainClient, Category, Kind, Purpose, name_key_file, new_key_file, permit
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.dev.demo import cancer_diagnosis, psychiatric_diagnosis
from carechain.dev.localnet import LocalNetwork
from carechain.ledger.transactions import decode_body, logged_transactions
from carechain.records.v1 import records_pb2

TREAT = Purpose.PURPOSE_OF_USE_TREAT


def day_ms(date: str) -> int:
    """Unix ms of a UTC day (how RecordMetadata.data_date_ms keeps a clinical date)."""
    return int(datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.UTC).timestamp() * 1000)


def hypertension(fhir_id: str) -> dict:
    """An ordinary (NORMAL) Condition."""
    return {**cancer_diagnosis(fhir_id), "id": str(uuid.uuid4()), "onsetDateTime": "2025-06-01",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}}


def heart_rate(fhir_id: str) -> dict:
    """An ordinary (NORMAL) Observation."""
    return {"resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "effectiveDateTime": "2026-01-10",
            "valueQuantity": {"value": 72}}


@dataclass
class World:
    network: LocalNetwork
    hospital_id: str
    oncologist: Actor
    stranger: Actor  # a practitioner of hospital B, no consent
    emergency: Actor  # an emergency physician of hospital C
    patient: Actor
    other_patient: Actor
    records: dict[str, records_pb2.PutRecordResponse]
    stored: dict[str, bytes]
    key_file: pathlib.Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("search-summary")
    network = start_network(root, "embedded")
    try:
        hospital, hospital_b, hospital_c = new_hospital(network), new_hospital(network), new_hospital(network)
        key_file = root / "oncologist.key"
        key = new_key_file(key_file)
        principal = hospital.client.register(Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Onco", key.public_key_bytes(),
                                             specialty="oncology")
        name_key_file(key_file, principal.principal_id)
        signer = key.with_key_id(principal.principal_id)
        oncologist = Actor(principal.principal_id, signer, CareChainClient(network.endpoints, signer))
        stranger = new_practitioner(network, hospital_b, "oncology")
        emergency = new_practitioner(network, hospital_c, "emergency-medicine")
        patient, fhir_id = new_patient(network, hospital)
        other_patient, other_fhir = new_patient(network, hospital)
        resources = {"hypertension": hypertension(fhir_id), "cancer": cancer_diagnosis(fhir_id),
                     "psychiatric": psychiatric_diagnosis(fhir_id), "heart_rate": heart_rate(fhir_id)}
        stored = {name: json.dumps(resource).encode() for name, resource in resources.items()}
        records = {name: hospital.client.put_record(patient.principal_id, raw) for name, raw in stored.items()}
        hospital.client.put_record(other_patient.principal_id, cancer_diagnosis(other_fhir))
        patient.client.grant_consent(
            permit([TREAT], practitioner_id=oncologist.principal_id),  # ordinary records
            permit([TREAT], practitioner_id=oncologist.principal_id,
                   categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
        other_patient.client.grant_consent(permit([TREAT], practitioner_id=oncologist.principal_id))
        yield World(network, hospital.principal_id, oncologist, stranger, emergency, patient, other_patient,
                    records, stored, key_file)
    finally:
        network.stop()


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_a_search_lists_the_permitted_records_and_counts_the_withheld(world: World) -> None:
    found = world.oncologist.client.search_records(world.patient.principal_id, purpose=TREAT)
    expected = [world.records[n].record_id for n in ("hypertension", "cancer", "heart_rate")]  # log order
    assert [r.record_id for r in found.records] == expected and found.withheld == 1 and not found.next_page_token
    cancer = found.records[1]
    assert (cancer.resource_type, cancer.version, cancer.author_organization_id, cancer.ledger_log_index) == (
        "Condition", 1, world.hospital_id, world.records["cancer"].ledger_log_index)
    assert list(cancer.categories) == [Category.SENSITIVITY_CATEGORY_ONCOLOGY] and cancer.last_updated_ms > 0
    assert cancer.data_date_ms == day_ms("2026-03-02")  # the onset, to the day
    # The other patient's cancer record is never among them.
    assert world.records["psychiatric"].record_id not in {r.record_id for r in found.records}


def test_filters_and_pages(world: World) -> None:
    client, patient_id = world.oncologist.client, world.patient.principal_id
    conditions = client.search_records(patient_id, purpose=TREAT, resource_types=["Condition"])
    assert [r.resource_type for r in conditions.records] == ["Condition", "Condition"] and conditions.withheld == 1
    observations = client.search_records(patient_id, purpose=TREAT, resource_types=["Observation"])
    assert [r.record_id for r in observations.records] == [world.records["heart_rate"].record_id]
    assert observations.withheld == 0
    in_2026 = client.search_records(patient_id, purpose=TREAT, date_from_ms=day_ms("2026-01-01"))
    assert {r.record_id for r in in_2026.records} == {world.records[n].record_id for n in ("cancer", "heart_rate")}
    by_author = client.search_records(patient_id, purpose=TREAT, author_organization_id="org-elsewhere")
    assert not by_author.records and by_author.withheld == 0
    seen, withheld, token = [], 0, ""
    while True:
        page = client.search_records(patient_id, purpose=TREAT, page_size=1, page_token=token)
        seen += [r.record_id for r in page.records]
        withheld += page.withheld
        token = page.next_page_token
        if not token:
            break
    assert seen == [world.records[n].record_id for n in ("hypertension", "cancer", "heart_rate")] and withheld == 1
    for kwargs, field in [({"page_size": 201}, "page_size"), ({"page_token": "forged"}, "page_token"),
                          ({"resource_types": ["not a type"]}, "resource_types")]:
        code, details = _code(lambda kw=kwargs: client.search_records(patient_id, purpose=TREAT, **kw))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (kwargs, details)


def test_strangers_learn_nothing_about_the_patient(world: World) -> None:
    patient_id = world.patient.principal_id
    # GetRecord's answer to a practitioner without consent, for comparison.
    read = _code(lambda: world.stranger.client.get_record(world.records["hypertension"].record_id))
    assert read == (grpc.StatusCode.PERMISSION_DENIED, DENIAL_MESSAGE)
    for searched in (patient_id, "psn-" + "0" * 32):  # the patient, and a patient who does not exist
        assert _code(lambda p=searched: world.stranger.client.search_records(p, purpose=TREAT)) == read
        assert _code(lambda p=searched: world.stranger.client.patient_summary(p, purpose=TREAT)) == read
        assert _code(lambda p=searched: world.stranger.client.patient_summary_bundle(p, purpose=TREAT)) == read
    # Another patient (and the patient themselves) may not search at all: the access table refuses it.
    for actor in (world.other_patient, world.patient):
        code, _ = _code(lambda a=actor: a.client.search_records(patient_id, purpose=TREAT))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_the_summary_reads_each_permitted_record_as_get_record(world: World) -> None:
    summary = world.oncologist.client.patient_summary(world.patient.principal_id, purpose=TREAT)
    names = ("hypertension", "cancer", "heart_rate")
    assert [r.record_id for r in summary.records] == [world.records[n].record_id for n in names]
    assert [r.resource_json for r in summary.records] == [world.stored[n] for n in names]  # the exact bytes
    assert summary.withheld == 1 and all(r.decision_id and not r.break_glass for r in summary.records)
    limited = world.oncologist.client.patient_summary(world.patient.principal_id, purpose=TREAT,
                                                      resource_types=["Observation"])
    assert [r.record_id for r in limited.records] == [world.records["heart_rate"].record_id]
    tomorrow = int(time.time() * 1000) + 86_400_000
    later = world.oncologist.client.patient_summary(world.patient.principal_id, purpose=TREAT, since_ms=tomorrow)
    assert not later.records and later.withheld == 0


def test_the_bundle_is_a_searchset_that_says_how_many_were_withheld(world: World) -> None:
    bundle = world.oncologist.client.patient_summary_bundle(world.patient.principal_id, purpose=TREAT)
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 3)
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["fullUrl"] for e in matches] == [f"urn:uuid:{world.records[n].record_id}"
                                               for n in ("hypertension", "cancer", "heart_rate")]
    assert all(e["resource"]["meta"]["security"] for e in matches)
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["diagnostics"] == "1 record was withheld: not permitted by the patient's consent"
    assert "depress" not in json.dumps(bundle).lower() and "F32" not in json.dumps(bundle)


def test_break_glass_gives_an_emergency_physician_the_ordinary_records_only(world: World) -> None:
    client = world.emergency.client
    code, _ = _code(lambda: client.patient_summary(world.patient.principal_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # no consent, no glass broken
    summary = client.patient_summary(world.patient.principal_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT,
                                     break_glass=True, break_glass_reason="unconscious on arrival")
    assert [r.record_id for r in summary.records] == [world.records[n].record_id
                                                      for n in ("hypertension", "heart_rate")]
    assert all(r.break_glass for r in summary.records) and summary.withheld == 2  # cancer and psychiatric
    assert world.patient.client.notifications(), "the patient is notified of the break-glass reads"
    with operator_client(world.network) as operator:
        windows = [body.break_glass_access for body in (decode_body(t.transaction)
                                                        for t in logged_transactions(operator.ledger))
                   if body.WhichOneof("payload") == "break_glass_access"
                   and body.break_glass_access.patient_id == world.patient.principal_id]
    assert len(windows) == 1, "one break-glass window for the whole summary"


def test_searches_are_in_the_patients_accounting_of_disclosures(world: World) -> None:
    world.oncologist.client.search_records(world.patient.principal_id, purpose=TREAT)
    world.oncologist.client.patient_summary(world.patient.principal_id, purpose=TREAT)
    with pytest.raises(grpc.RpcError):
        world.stranger.client.search_records(world.patient.principal_id, purpose=TREAT)
    disclosures = world.patient.client.accounting_of_disclosures()
    searches = [d for d in disclosures if d.action == audit_pb2.AUDIT_ACTION_SEARCH]
    mine = [d for d in searches if d.recipient_id == world.oncologist.principal_id]
    assert mine and all(d.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS and not d.record_id for d in mine)
    assert mine[0].description == "search" and mine[0].recipient_name  # the patient sees who searched
    denied = [d for d in searches if d.recipient_id == world.stranger.principal_id]
    assert denied and all(d.outcome == audit_pb2.AUDIT_OUTCOME_DENIED for d in denied)
    events = [e.event for e in world.patient.client.access_history() if e.event.action == audit_pb2.AUDIT_ACTION_SEARCH]
    assert events and all(e.reason.startswith("search: ") and not e.categories for e in events)
    # Summary reads are audited one by one, as reads of each record.
    reads = {d.record_id for d in disclosures if d.action == audit_pb2.AUDIT_ACTION_READ
             and d.recipient_id == world.oncologist.principal_id}
    assert {world.records[n].record_id for n in ("hypertension", "cancer", "heart_rate")} <= reads
    # Nothing about this patient is in the other patient's accounting.
    other = world.other_patient.client.accounting_of_disclosures()
    assert all(d.record_id != world.records["cancer"].record_id for d in other)


def test_the_cli_searches_and_writes_the_summary_bundle(world: World, tmp_path: pathlib.Path) -> None:
    def carechain(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "carechain", *args, "--key-file", str(world.key_file),
                               "--data-dir", str(world.network.layout.root)], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done

    found = json.loads(carechain("records", "search", "--patient", world.patient.principal_id, "--type",
                                 "Condition", "--json").stdout)
    assert [r["record_id"] for r in found["records"]] == [world.records[n].record_id
                                                          for n in ("hypertension", "cancer")]
    assert found["withheld"] == 1
    bundle_file = tmp_path / "summary.json"
    done = carechain("records", "summary", "--patient", world.patient.principal_id, "--bundle", str(bundle_file))
    assert "3 records" in done.stdout and "withheld" in done.stdout
    assert json.loads(bundle_file.read_text())["total"] == 3 and (bundle_file.stat().st_mode & 0o077) == 0
