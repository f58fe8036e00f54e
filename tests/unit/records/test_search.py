"""SearchRecords and the patient summary (carechain.records.search, carechain.records.summary): filters, pages,
the withheld count, one audit event per search, reads exactly as GetRecord, the FHIR Bundle and its cap.

The peers are small in-process stand-ins for the CareChain services the gateway calls (no backend is
mocked: the gateway has none of its own): a ledger answering ListPatientRecords from a list of sealed
entries, a consent that permits by category and actor, identity, storage and audit. The real flows run
end to end in tests/e2e/test_search_summary.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
from dataclasses import dataclass

import grpc
import pytest
from consent_ledger_fake import CHAIN, SEALER

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer, seal, sha256_hex
from carechain.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.identity.v1 import identity_pb2
from carechain.ledger.queries import PageToken
from carechain.ledger.v1 import ledger_pb2
from carechain.records import summary as summaries
from carechain.records.gateway import RecordsGateway, record_associated_data
from carechain.records.search import RecordSearch
from carechain.records.summary import PatientSummaries, SummaryCounts
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller
from carechain.storage.v1 import storage_pb2

READER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
STRANGER = Caller("prac-9", c.PRINCIPAL_KIND_PRACTITIONER, "org-z", "oncology")
KEY = os.urandom(32)
DAY = 86_400_000
NORMAL, ONCOLOGY, MENTAL = c.SENSITIVITY_CATEGORY_NORMAL, c.SENSITIVITY_CATEGORY_ONCOLOGY, \
    c.SENSITIVITY_CATEGORY_MENTAL_HEALTH
TREAT = c.PURPOSE_OF_USE_TREAT


@dataclass(frozen=True)
class Stored:
    """One record as the fake ledger and storage hold it."""

    record_id: str
    patient_id: str
    resource_type: str
    category: int
    organization_id: str
    data_date_ms: int
    log_index: int
    block_ms: int
    erased: bool = False
    large: bool = False
    resource_categories: tuple[str, ...] = ()  # none: its type has none, or written before they were kept

    @property
    def resource(self) -> bytes:
        return json.dumps({"resourceType": self.resource_type, "id": self.record_id}).encode()

    @functools.cached_property
    def ciphertext(self) -> bytes:  # sealed once: a fresh nonce would change its hash
        return seal(KEY, self.resource, record_associated_data(self.record_id, self.patient_id, 1))


CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ENCOUNTER_DIAGNOSIS = f"{CONDITION_CATEGORY}|encounter-diagnosis"
PROBLEM = f"{CONDITION_CATEGORY}|problem-list-item"
LABORATORY = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
DEPRESSION = "http://snomed.info/sct|35489007"  # a category code that is itself sensitive
# psn-1: ordinary, cancer and psychiatric records from two organisations; psn-2's record in between.
RECORDS = [
    Stored("r-0", "psn-1", "Condition", NORMAL, "org-a", 10 * DAY, 10, 1_000, resource_categories=(
        ENCOUNTER_DIAGNOSIS,)),
    Stored("r-1", "psn-1", "Condition", ONCOLOGY, "org-a", 20 * DAY, 11, 2_000, resource_categories=(PROBLEM,)),
    Stored("r-x", "psn-2", "Condition", NORMAL, "org-a", 20 * DAY, 12, 2_000, resource_categories=(
        ENCOUNTER_DIAGNOSIS,)),
    Stored("r-2", "psn-1", "Observation", NORMAL, "org-b", 30 * DAY, 13, 3_000, resource_categories=(LABORATORY,)),
    Stored("r-3", "psn-1", "Condition", MENTAL, "org-a", 40 * DAY, 14, 4_000, resource_categories=(
        DEPRESSION, ENCOUNTER_DIAGNOSIS)),
    Stored("r-4", "psn-1", "MedicationStatement", NORMAL, "org-a", 0, 15, 5_000),
    Stored("r-5", "psn-1", "Observation", NORMAL, "org-b", 50 * DAY, 16, 6_000, erased=True),
    Stored("r-6", "psn-1", "DocumentReference", NORMAL, "org-a", 60 * DAY, 17, 7_000, large=True),
]


class Peers:
    """Ledger, consent, identity, storage and audit as the gateway sees them."""

    def __init__(self, records: list[Stored] = RECORDS, denied: tuple[int, ...] = (MENTAL,)) -> None:
        self.ledger = self.consent = self.identity = self.storage = self.audit = self
        self.records = {r.record_id: r for r in records}
        self.denied = denied  # categories consent never permits READER
        self.events: list[audit_pb2.AuditEvent] = []
        self.decided: list[consent_pb2.DecideRequest] = []
        self.released: list[str] = []
        self.ledger_pages: list[int] = []
        self._lock = threading.Lock()

    def _entry(self, stored: Stored) -> ledger_pb2.RecordEntry:
        ciphertext = stored.ciphertext
        record = ledger_pb2.RegisterRecord(record_id=stored.record_id, patient_id=stored.patient_id,
                                           organization_id=stored.organization_id, version=1,
                                           content_sha256=sha256_hex(ciphertext), content_size=len(ciphertext),
                                           segment_bytes=65536 if stored.large else 0)
        record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
            resource_type=stored.resource_type, categories=[stored.category], data_date_ms=stored.data_date_ms,
            resource_categories=stored.resource_categories)))
        return ledger_pb2.RecordEntry(record=record, log_index=stored.log_index, erased=stored.erased,
                                      last_updated_ms=stored.block_ms)

    def ListPatientRecords(self, request, **_):  # noqa: N802
        start = PageToken.decode(request.page_token, "patient-records").position if request.page_token \
            else request.from_log_index
        mine = [r for r in sorted(self.records.values(), key=lambda r: r.log_index)
                if r.patient_id == request.patient_id and r.log_index >= start]
        page = mine[:request.page_size]
        self.ledger_pages.append(len(page))
        following = mine[request.page_size].log_index if len(mine) > request.page_size else None
        return ledger_pb2.ListPatientRecordsResponse(
            entries=[self._entry(r) for r in page],
            next_page_token=PageToken("patient-records", following).encode() if following is not None else "")

    def GetRecordEntry(self, request, **_):  # noqa: N802
        return self._entry(self.records[request.record_id])

    def DecideMany(self, request, **_):  # noqa: N802
        results = []
        for one in request.requests:
            with self._lock:
                self.decided.append(one)
            stored = self.records[one.record_id]
            permit = one.actor_id == READER.principal_id and stored.category not in self.denied
            results.append(consent_pb2.DecideResult(decision=consent_pb2.Decision(
                effect=consent_pb2.DECISION_EFFECT_PERMIT if permit else consent_pb2.DECISION_EFFECT_DENY,
                reason="permitted by consent c-1" if permit else "denied: mental health excluded",
                decision_token=f"token-{one.record_id}" if permit else "", decision_id=f"d-{one.record_id}",
                patient_id=stored.patient_id)))
        return consent_pb2.DecideManyResponse(results=results)

    def ReleaseDataKeys(self, request, **_):  # noqa: N802
        with self._lock:
            self.released += [item.record_id for item in request.items]
        return identity_pb2.ReleaseDataKeysResponse(results=[
            identity_pb2.ReleaseDataKeyResult(key=identity_pb2.ReleasedDataKey(plaintext_key=KEY))
            for _ in request.items])

    def GetBlobs(self, request, **_):  # noqa: N802
        by_hash = {sha256_hex(r.ciphertext): r.ciphertext for r in self.records.values()}
        return storage_pb2.GetBlobsResponse(results=[storage_pb2.GetBlobResult(data=by_hash[h])
                                                     for h in request.sha256])

    def RecordEvent(self, request, **_):  # noqa: N802
        with self._lock:
            self.events.append(request.event)
            return audit_pb2.AuditReceipt(sequence=len(self.events))

    def RecordEvents(self, request, **_):  # noqa: N802
        return audit_pb2.RecordEventsResponse(results=[
            audit_pb2.RecordEventResult(receipt=self.RecordEvent(audit_pb2.RecordEventRequest(event=e)))
            for e in request.events])


def build(peers: Peers) -> tuple[RecordsGateway, RecordSearch, PatientSummaries]:
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    search = RecordSearch(gateway, lambda: peers.ledger)
    return gateway, search, PatientSummaries(gateway, search, workers=4)


def search(peers: Peers, caller: Caller = READER, **fields) -> records_pb2.SearchRecordsResponse:
    return build(peers)[1].search(caller, records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT,
                                                                           **fields))


def ids(response: records_pb2.SearchRecordsResponse) -> list[str]:
    return [r.record_id for r in response.records]


def test_a_search_lists_the_permitted_records_in_log_order_and_counts_the_withheld() -> None:
    peers = Peers()
    found = search(peers)
    # r-3 (mental health) is withheld; r-5 is erased; r-x is another patient's; the large r-6 is listed.
    assert ids(found) == ["r-0", "r-1", "r-2", "r-4", "r-6"] and found.withheld == 1 and not found.next_page_token
    first = found.records[0]
    assert (first.resource_type, first.version, first.data_date_ms, first.author_organization_id,
            first.last_updated_ms, first.ledger_log_index) == ("Condition", 1, 10 * DAY, "org-a", 1_000, 10)
    assert list(first.categories) == [NORMAL] and first.security_labels and found.records[-1].large
    assert list(first.resource_categories) == [ENCOUNTER_DIAGNOSIS]
    assert not peers.released, "a search releases no data key"
    assert {d.action for d in peers.decided} == {c.CONSENT_ACTION_ACCESS}


@pytest.mark.parametrize(("fields", "expected", "withheld"), [
    ({"resource_types": ["Condition"]}, ["r-0", "r-1"], 1),
    ({"resource_types": ["Observation", "MedicationStatement"]}, ["r-2", "r-4"], 0),
    ({"categories": [ONCOLOGY, MENTAL]}, ["r-1"], 0),  # r-3 withheld, not counted: it would name its category
    ({"date_from_ms": 20 * DAY, "date_to_ms": 40 * DAY}, ["r-1", "r-2"], 1),  # both ends inclusive
    ({"date_from_ms": 25 * DAY}, ["r-2", "r-6"], 1),  # r-4 has no clinical date: no range matches it
    ({"author_organization_id": "org-b"}, ["r-2"], 0),
    ({"updated_since_ms": 3_000}, ["r-2", "r-4", "r-6"], 1),
    ({"updated_before_ms": 4_000}, ["r-0", "r-1", "r-2"], 0),  # exclusive: r-3 (4_000) is out
    ({"updated_since_ms": 2_000, "updated_before_ms": 5_000}, ["r-1", "r-2"], 1),
    ({"resource_types": ["Condition"], "author_organization_id": "org-b"}, [], 0),
    # Clinical categories (FHIR tokens): system|code, |code, bare code (any system); any of them matches.
    ({"resource_categories": [ENCOUNTER_DIAGNOSIS]}, ["r-0"], 1),  # r-3 withheld and counted: not sensitive
    ({"resource_categories": ["encounter-diagnosis"]}, ["r-0"], 1),
    ({"resource_categories": ["|encounter-diagnosis"]}, [], 0),  # |code: a coding without a system
    ({"resource_categories": [f"{CONDITION_CATEGORY}|laboratory"]}, [], 0),  # the code, but another system
    ({"resource_categories": ["laboratory", PROBLEM]}, ["r-1", "r-2"], 0),
    ({"resource_categories": [" HTTPS://snomed.info/sct/ |35489007"]}, [], 0),  # system normalised
    ({"resource_categories": ["35489007"]}, [], 0),  # a sensitive code: r-3 withheld, not counted
    ({"resource_categories": ["laboratory"], "resource_types": ["Condition"]}, [], 0),
])
def test_every_filter_given_must_match(fields, expected, withheld) -> None:
    found = search(Peers(), **fields)
    assert (ids(found), found.withheld) == (expected, withheld)


def test_pages_cover_the_search_once_and_their_withheld_counts_add_up() -> None:
    peers = Peers(denied=(MENTAL, ONCOLOGY))
    _, records, _ = build(peers)
    seen, withheld, token, pages = [], 0, "", 0
    while True:
        page = records.search(READER, records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT,
                                                                       page_size=2, page_token=token))
        assert len(page.records) <= 2
        seen += ids(page)
        withheld += page.withheld
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ["r-0", "r-2", "r-4", "r-6"] and withheld == 2 and pages == 3


def test_a_page_token_is_only_good_for_its_own_query() -> None:
    _, records, _ = build(Peers())
    first = records.search(READER, records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT, page_size=1))
    for request in [
        records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT, page_size=1, page_token="garbage!"),
        records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT, page_size=1,
                                         resource_types=["Condition"], page_token=first.next_page_token),
        records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT, page_size=1,
                                         resource_categories=["laboratory"], page_token=first.next_page_token),
        records_pb2.SearchRecordsRequest(patient_id="psn-2", purpose=TREAT, page_token=first.next_page_token),
    ]:
        with pytest.raises(InvalidArgument) as refused:
            records.search(READER, request)
        assert refused.value.message.startswith("page_token")


@pytest.mark.parametrize(("fields", "field"), [
    ({"patient_id": ""}, "patient_id"),
    ({"purpose": 0}, "purpose"),
    ({"page_size": 201}, "page_size"),
    ({"resource_types": ["condition; DROP"]}, "resource_types"),
    ({"categories": [0]}, "categories"),
    ({"date_from_ms": -1}, "date_from_ms"),
    ({"date_from_ms": 2 * DAY, "date_to_ms": DAY}, "date_to_ms"),
    ({"updated_since_ms": -5}, "updated_since_ms"),
    ({"resource_categories": ["a|b|c"]}, "resource_categories"),
    ({"resource_categories": ["system|"]}, "resource_categories"),
    ({"resource_categories": ["x" * 600]}, "resource_categories"),
    ({"resource_categories": [f"c{i}" for i in range(51)]}, "resource_categories"),
])
def test_bad_input_is_invalid_argument_naming_the_field_without_its_value(fields, field) -> None:
    peers = Peers()
    request = {"patient_id": "psn-1", "purpose": TREAT, **fields}
    with pytest.raises(InvalidArgument) as refused:
        build(peers)[1].search(READER, records_pb2.SearchRecordsRequest(**request))
    assert refused.value.message.startswith(field) and "DROP" not in refused.value.message
    assert not peers.decided and not peers.events


def test_a_search_is_one_audit_event_with_counts_only() -> None:
    peers = Peers()
    search(peers)
    [event] = peers.events
    assert (event.action, event.outcome, event.patient_id, event.actor_id, event.purpose) == (
        audit_pb2.AUDIT_ACTION_SEARCH, audit_pb2.AUDIT_OUTCOME_SUCCESS, "psn-1", "prac-1", TREAT)
    assert event.reason == "search: 5 records listed, 1 withheld"
    assert not event.record_id and not event.categories and not event.resource_type


def test_a_caller_permitted_nothing_learns_nothing_about_the_patient() -> None:
    # A stranger: the same denial as GetRecord, whatever the patient has and whatever the filters.
    for patient_id, fields in [("psn-1", {}), ("psn-1", {"resource_types": ["Observation"]}),
                               ("psn-1", {"resource_categories": ["encounter-diagnosis"]}), ("psn-nobody", {})]:
        peers = Peers()
        with pytest.raises(PermissionDenied) as refused:
            build(peers)[1].search(STRANGER, records_pb2.SearchRecordsRequest(patient_id=patient_id, purpose=TREAT,
                                                                               **fields))
        assert refused.value.message == "not permitted by the patient's consent"
        [event] = peers.events
        assert (event.action, event.outcome) == (audit_pb2.AUDIT_ACTION_SEARCH, audit_pb2.AUDIT_OUTCOME_DENIED)
    # A reader the patient did consent to still gets an empty answer for a narrow filter; by category, no withheld
    # count (1 withheld psychiatric record would say what consent hides), by type, the count.
    narrow = search(Peers(), categories=[MENTAL])
    assert (ids(narrow), narrow.withheld) == ([], 0)
    by_type = search(Peers(), resource_types=["Condition"], date_from_ms=40 * DAY)
    assert (ids(by_type), by_type.withheld) == ([], 1)
    # A sensitive category code as the clinical category: no count either; an ordinary one: the count.
    assert (ids(narrow := search(Peers(), resource_categories=[DEPRESSION])), narrow.withheld) == ([], 0)
    ordinary = search(Peers(), resource_categories=[ENCOUNTER_DIAGNOSIS], date_from_ms=40 * DAY)
    assert (ids(ordinary), ordinary.withheld) == ([], 1)


def test_opened_metadata_is_kept_by_record_and_log_index() -> None:
    peers = Peers()
    gateway, records, _ = build(peers)
    opened = []
    real_open = SEALER.open_record

    class CountingSealer:
        def open_record(self, record):
            opened.append(record.record_id)
            return real_open(record)

    gateway._sealer = CountingSealer()  # count the openings of this gateway only
    for _ in range(2):
        records.search(READER, records_pb2.SearchRecordsRequest(patient_id="psn-1", purpose=TREAT))
    assert sorted(opened) == ["r-0", "r-1", "r-2", "r-3", "r-4", "r-6"]  # once each (the erased r-5: never)


def summary_of(peers: Peers, caller: Caller = READER, **fields) -> tuple[list, SummaryCounts]:
    request = records_pb2.PatientSummaryRequest(patient_id="psn-1", purpose=TREAT, **fields)
    items = list(build(peers)[2].reads(caller, request))
    assert isinstance(items[-1], SummaryCounts)
    return items[:-1], items[-1]


def test_a_summary_reads_each_permitted_record_as_get_record_does() -> None:
    peers = Peers()
    reads, counts = summary_of(peers)
    assert [r.record_id for r in reads] == ["r-0", "r-1", "r-2", "r-4"]  # log order
    assert [json.loads(r.resource_json)["id"] for r in reads] == ["r-0", "r-1", "r-2", "r-4"]
    assert (counts.returned, counts.withheld, counts.large_records) == (4, 1, 1)
    assert sorted(peers.released) == ["r-0", "r-1", "r-2", "r-4"]  # keys released for the permitted only
    audited = sorted((e.record_id, e.action, e.outcome) for e in peers.events)
    assert audited == sorted([(r, audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS)
                              for r in ("r-0", "r-1", "r-2", "r-4")]
                             + [("r-3", audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_DENIED)])


def test_a_summary_is_limited_by_types_and_since() -> None:
    reads, counts = summary_of(Peers(), resource_types=["Condition"], since_ms=2_000)
    assert [r.record_id for r in reads] == ["r-1"] and (counts.withheld, counts.large_records) == (1, 0)


def test_break_glass_is_asked_for_each_record_and_needs_a_reason() -> None:
    peers = Peers()
    summary_of(peers, break_glass=True, break_glass_reason="unconscious in the ER")
    assert peers.decided and all(d.break_glass and d.break_glass_reason == "unconscious in the ER"
                                 for d in peers.decided)
    with pytest.raises(InvalidArgument) as refused:
        summary_of(Peers(), break_glass=True)
    assert refused.value.message.startswith("break_glass_reason")


def test_a_summary_for_a_stranger_is_denied_before_any_record() -> None:
    peers = Peers()
    with pytest.raises(PermissionDenied):
        summary_of(peers, STRANGER)
    assert not peers.released


def test_the_bundle_is_a_searchset_with_labels_and_a_withheld_outcome() -> None:
    peers = Peers()
    answer = build(peers)[2].bundle(READER, records_pb2.PatientSummaryRequest(patient_id="psn-1", purpose=TREAT))
    bundle = json.loads(answer.bundle_json)
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 4)
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["fullUrl"] for e in matches] == [f"urn:uuid:r-{i}" for i in (0, 1, 2, 4)]
    oncology = matches[1]["resource"]
    assert oncology["id"] == "r-1" and {s["code"] for s in oncology["meta"]["security"]} >= {"R"}
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"].startswith("1 record was withheld")
    assert "mental" not in answer.bundle_json.decode().lower()  # never which or why
    assert (answer.end.returned, answer.end.withheld) == (4, 1)


def test_a_bundle_over_the_cap_is_refused_before_any_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summaries, "MAX_BUNDLE_BYTES", 100)
    peers = Peers()
    with pytest.raises(FailedPrecondition) as refused:
        build(peers)[2].bundle(READER, records_pb2.PatientSummaryRequest(patient_id="psn-1", purpose=TREAT))
    assert "GetPatientSummary" in refused.value.message
    assert not peers.released and not [e for e in peers.events if e.action == audit_pb2.AUDIT_ACTION_READ]
    with pytest.raises(PermissionDenied):  # a stranger is not even told the summary would be large
        build(Peers())[2].bundle(STRANGER, records_pb2.PatientSummaryRequest(patient_id="psn-1", purpose=TREAT))


def test_a_record_consent_refuses_to_decide_fails_the_search() -> None:
    peers = Peers()

    def refusing(request, **_):
        return consent_pb2.DecideManyResponse(results=[consent_pb2.DecideResult(error=consent_pb2.DecideError(
            code=grpc.StatusCode.NOT_FOUND.value[0], message="no such record")) for _ in request.requests])

    peers.DecideMany = refusing  # type: ignore[method-assign]
    with pytest.raises(grpc.RpcError):
        search(peers)
    [event] = peers.events
    assert event.outcome == audit_pb2.AUDIT_OUTCOME_FAILED


# A practitioner's SMART user/ token: Condition search and read, Observation read only, bound to TREAT.
SMART_READER = dataclasses.replace(READER, scope="user/Condition.rs user/Observation.r", purpose_of_use="TREAT")


def test_a_smart_token_searches_only_the_types_it_has_the_s_scope_for() -> None:
    # No type asked for: limited to Condition (never counting another type's withheld records).
    found = search(Peers(), SMART_READER)
    assert ids(found) == ["r-0", "r-1"] and found.withheld == 1
    assert ids(search(Peers(), SMART_READER, resource_types=["Condition"])) == ["r-0", "r-1"]
    for refused in (["Observation"], ["Condition", "Observation"]):
        with pytest.raises(PermissionDenied, match="SMART scopes do not permit this search"):
            search(Peers(), SMART_READER, resource_types=refused)
    with pytest.raises(PermissionDenied):
        search(Peers(), dataclasses.replace(READER, scope="user/Condition.r"))
    # A wildcard s scope covers every type; a token bound to TREAT cannot search for another purpose.
    assert ids(search(Peers(), dataclasses.replace(READER, scope="user/*.rs"))) == ids(search(Peers()))
    with pytest.raises(InvalidArgument, match="purpose"):
        build(Peers())[1].search(SMART_READER, records_pb2.SearchRecordsRequest(
            patient_id="psn-1", purpose=c.PURPOSE_OF_USE_ETREAT))


def test_a_smart_summary_covers_only_the_searchable_types() -> None:
    reads, counts = summary_of(Peers(), SMART_READER)
    assert [r.record_id for r in reads] == ["r-0", "r-1"] and counts.withheld == 1
    with pytest.raises(PermissionDenied):
        summary_of(Peers(), SMART_READER, resource_types=["Observation"])
