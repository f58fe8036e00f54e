"""The erasure flow's parts (carechain.records.erasure): what the ledger says is erased, what an erasure
destroys (idempotently), the retention hold, who may erase, request validation, and the reconciler
finishing an erasure interrupted after its tombstone."""

from __future__ import annotations

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import data_key_id
from carechain.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2
from carechain.records.erasure import (
    DAY_MS,
    NOT_PERMITTED,
    Eraser,
    ErasurePart,
    RetentionPolicy,
    destroy,
    erasure_parts,
    read_ledger_records,
)
from carechain.records.reconcile import Reconciler
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller
from carechain.storage.v1 import storage_pb2

RECORDS = Ed25519Signer.generate("svc-records")
NOW_MS = 1_800_000_000_000


def registration(record_id: str, patient_id: str = "psn-1", version: int = 1) -> ledger_pb2.RegisterRecord:
    return ledger_pb2.RegisterRecord(record_id=record_id, patient_id=patient_id, organization_id="org-a",
                                     content_sha256=(record_id[-1] * 64), version=version)


class Peers:
    """A ledger holding given transactions, and identity and storage holding keys and blobs (by id and hash)."""

    def __init__(self, payloads: list[tuple[bool, dict]], keys: set[str] = frozenset(),
                 blobs: set[str] = frozenset()) -> None:
        self.ledger = self.identity = self.storage = self.audit = self
        self.logged = [ledger_pb2.LoggedTransaction(
            log_index=i, transaction=sign_transaction(new_body("chain", RECORDS.key_id, **payload), RECORDS),
            result=ledger_pb2.TransactionResult(valid=valid)) for i, (valid, payload) in enumerate(payloads)]
        self.keys, self.blobs = set(keys), set(blobs)
        self.locked: set[str] = set()
        self.identity_down = False

    def ListTransactions(self, request, **_):  # noqa: N802
        page = self.logged[request.from_log_index:request.from_log_index + 2]  # small pages: paging is exercised
        return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=len(self.logged))

    def DeleteDataKey(self, request, **_):  # noqa: N802
        if self.identity_down:
            raise Unavailable("identity", "down")
        if request.record_id not in self.keys:
            raise NotFound("no data key")
        self.keys.remove(request.record_id)

    def DeleteBlob(self, request, **_):  # noqa: N802
        assert request.written_before_ms > NOW_MS, "an erasure removes the blob whenever it was written"
        if request.sha256 in self.locked:
            raise FailedPrecondition("under retention (Object Lock)")
        if request.sha256 not in self.blobs:
            raise NotFound("no blob")
        self.blobs.remove(request.sha256)

    # What the reconciler reads besides the ledger: no write attempts, no old blobs, no uploads.
    def StreamEvents(self, request, **_):  # noqa: N802
        return iter(())

    def ListBlobs(self, request, **_):  # noqa: N802
        return storage_pb2.ListBlobsResponse()

    def PruneIncoming(self, request, **_):  # noqa: N802
        return storage_pb2.PruneIncomingResponse()


def erase(patient_id: str, *record_ids: str) -> dict:
    return {"erase_records": ledger_pb2.EraseRecords(patient_id=patient_id, record_ids=list(record_ids))}


def test_the_ledger_says_which_records_are_erased_as_the_contract_applies_erasures() -> None:
    peers = Peers([
        (True, {"register_record": registration("r-1")}),
        (True, {"register_record": registration("r-2")}),
        (True, {"register_record": registration("o-1", patient_id="psn-2")}),
        (False, erase("psn-1", "r-2")),  # invalid: erases nothing
        (True, erase("psn-1")),  # all of psn-1's records registered so far
        (True, {"register_record": registration("r-3")}),
        (True, erase("psn-2", "o-1")),
    ])
    mine = read_ledger_records(peers.ledger, "psn-1")
    assert list(mine.registrations) == ["r-1", "r-2", "r-3"] and mine.erased == {"r-1", "r-2"}
    assert mine.live() == ["r-3"]
    everyone = read_ledger_records(peers.ledger)
    assert everyone.erased == {"r-1", "r-2", "o-1"} and len(everyone.registrations) == 4


def test_a_network_patients_records_include_its_linked_identities_while_linked() -> None:
    def link(kind: str, linked: str) -> dict:
        message = (ledger_pb2.LinkPatientIdentity if kind == "link_patient_identity"
                   else ledger_pb2.UnlinkPatientIdentity)(network_patient_id="psn-net", linked_patient_id=linked)
        return {kind: message}

    peers = Peers([
        (True, {"register_record": registration("n-1", patient_id="psn-net")}),
        (True, {"register_record": registration("a-1", patient_id="psn-a")}),
        (True, {"register_record": registration("b-1", patient_id="psn-b")}),
        (True, link("link_patient_identity", "psn-a")),
        (True, link("link_patient_identity", "psn-b")),
        (True, link("unlink_patient_identity", "psn-b")),
        (True, erase("psn-net")),  # all: the network patient's and psn-a's, not psn-b's (unlinked)
    ])
    mine = read_ledger_records(peers.ledger, "psn-net")
    assert list(mine.registrations) == ["n-1", "a-1"] and mine.erased == {"n-1", "a-1"}
    assert read_ledger_records(peers.ledger, "psn-b").live() == ["b-1"]


def test_an_erasure_destroys_each_versions_key_then_blob_and_is_idempotent() -> None:
    versions = [registration("r-1", version=1), registration("r-1", version=2)]
    versions[1].content_sha256 = "f" * 64
    parts = erasure_parts(versions)
    assert parts == [ErasurePart("r-1", "psn-1", 1, "1" * 64), ErasurePart("r-1", "psn-1", 2, "f" * 64)]
    peers = Peers([], keys={data_key_id("r-1", 1), data_key_id("r-1", 2)}, blobs={"1" * 64, "f" * 64})
    done = destroy(peers, parts, NOW_MS)
    assert (done.data_keys, done.blobs) == (2, 2) and not peers.keys and not peers.blobs
    again = destroy(peers, parts, NOW_MS)
    assert (again.data_keys, again.blobs) == (0, 0)


def test_a_blob_under_object_lock_stays_and_a_peer_failure_propagates() -> None:
    peers = Peers([], keys={"r-1"}, blobs={"1" * 64})
    peers.locked.add("1" * 64)
    done = destroy(peers, erasure_parts([registration("r-1")]), NOW_MS)
    assert (done.data_keys, done.blobs) == (1, 0)
    peers.identity_down = True
    with pytest.raises(Unavailable):
        destroy(peers, erasure_parts([registration("r-2")]), NOW_MS)


@pytest.mark.parametrize(("resource_type", "age_days", "held_until_days"), [
    ("Condition", 29, 30),  # the default hold
    ("Condition", 30, None),
    ("Immunization", 400, 3650),  # its own rule replaces the default
    ("Observation", 1, None),  # a rule of 0 days: no hold
])
def test_retention_holds_by_resource_type_or_the_default(resource_type, age_days, held_until_days) -> None:
    policy = RetentionPolicy(30, {"Immunization": 3650, "Observation": 0})
    registered = NOW_MS - age_days * DAY_MS
    hold = policy.hold(resource_type, registered, NOW_MS)
    if held_until_days is None:
        assert hold is None
    else:
        assert hold is not None and hold.until_ms == registered + held_until_days * DAY_MS
        assert ("CARECHAIN_RETENTION_HOLD_RULES: Immunization" if resource_type == "Immunization"
                else "CARECHAIN_RETENTION_HOLD_DAYS") in hold.rule
    assert RetentionPolicy().hold(resource_type, registered, NOW_MS) is None


def eraser(delegates: set[tuple[str, str]] = frozenset(), operator_erasure: bool = False) -> Eraser:
    return Eraser(None, Peers([]), None, lambda patient, principal: (patient, principal) in delegates,  # type: ignore[arg-type]
                  RetentionPolicy(), operator_erasure=operator_erasure)


PATIENT = Caller("psn-1", c.PRINCIPAL_KIND_PATIENT)
GUARDIAN = Caller("psn-9", c.PRINCIPAL_KIND_PATIENT)
DOCTOR = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a")
OPERATOR = Caller("operator", c.PRINCIPAL_KIND_OPERATOR)


def test_the_patient_an_active_delegate_and_the_operator_by_policy_may_erase() -> None:
    flow = eraser({("psn-1", "psn-9"), ("psn-1", "prac-1")})
    for caller in (PATIENT, GUARDIAN, DOCTOR):
        flow.authorize(caller, "psn-1")
    eraser(operator_erasure=True).authorize(OPERATOR, "psn-1")
    refusals = set()
    for other, caller, patient in ((eraser(), OPERATOR, "psn-1"), (eraser(), GUARDIAN, "psn-1"),
                                   (eraser(), PATIENT, "psn-2"), (flow, DOCTOR, "psn-unknown"),
                                   (eraser(operator_erasure=True), Caller("org-a", c.PRINCIPAL_KIND_ORGANIZATION),
                                    "psn-1")):
        with pytest.raises(PermissionDenied) as refused:
            other.authorize(caller, patient)
        refusals.add(refused.value.message)
    assert refusals == {NOT_PERMITTED}, "the same answer whoever the patient is"


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"patient_id": "", "all": True}, "patient_id"),
    ({"patient_id": "psn-1"}, "record_ids"),
    ({"patient_id": "psn-1", "all": True, "record_ids": ["r-1"]}, "record_ids"),
    ({"patient_id": "psn-1", "record_ids": ["r-1", ""]}, "record_ids[1]"),
    ({"patient_id": "psn-1", "record_ids": ["r"] * 1001}, "record_ids"),
    ({"patient_id": "psn-1", "all": True, "reason": "x" * 501}, "reason"),
])
def test_bad_requests_name_the_field(request_fields, field) -> None:
    with pytest.raises(InvalidArgument) as refused:
        eraser().erase(PATIENT, records_pb2.EraseRecordsRequest(**request_fields))
    assert refused.value.field == field


def test_the_reconciler_finishes_an_erasure_interrupted_after_its_tombstone() -> None:
    peers = Peers([
        (True, {"register_record": registration("r-1")}),
        (True, {"register_record": registration("r-2")}),
        (True, erase("psn-1", "r-1")),
    ], keys={"r-1", "r-2"}, blobs={"1" * 64, "2" * 64})
    reconciler = Reconciler(peers, grace_seconds=3600, clock=lambda: NOW_MS / 1000)
    assert reconciler.run(dry_run=True).erased_leftovers == 0 and "r-1" in peers.keys  # dry run changes nothing
    report = reconciler.run()
    assert report.erased_leftovers == 1 and report.ledger_records == 2
    assert peers.keys == {"r-2"} and peers.blobs == {"2" * 64}, "only the tombstoned record's parts go"
    assert reconciler.run().erased_leftovers == 0

