"""Audit features through in-process gRPC: accounting of disclosures, alerts and the review queue,
StreamEvents with resume, FHIR export, batches anchored on a (fake) ledger and inclusion proofs."""

from __future__ import annotations

import json
import pathlib
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle

from carechain.audit.accounting import SIX_YEARS_MS
from carechain.audit.anchoring import AnchorRejected, AuditMaintenance, BatchSealer, LedgerAnchorer
from carechain.audit.hashchain import verify_event_proof
from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import AuditSettings
from carechain.runtime.server import start_service

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
AUDIT_SIGNER = Ed25519Signer.generate("svc-audit")
RECORDS = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
CONSENT = Caller("svc-consent", c.PRINCIPAL_KIND_SERVICE)
PATIENT = Caller("psn-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
OTHER_PATIENT = Caller("psn-2", c.PRINCIPAL_KIND_PATIENT, "org-a")
OPERATOR = Caller("operator", c.PRINCIPAL_KIND_OPERATOR)
PRACTITIONER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
NOW_MS = 1_700_000_000_000


def metadata(caller: Caller) -> list[tuple[str, str]]:
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
    return [("authorization", f"Bearer {token}")]


class FakeLedger:
    """Just enough of LedgerService for anchoring: the validator's anchor rule, a log, ListTransactions."""

    def __init__(self) -> None:
        self.log: list[ledger_pb2.LoggedTransaction] = []
        self.down = False
        self.lose_answers = 0  # commit, then fail as if the answer was lost
        self.reject = ""  # when set: every anchor is committed invalid with this reason

    def SubmitTransaction(self, request: ledger_pb2.SubmitTransactionRequest, **_: object):
        if self.down:
            raise Unavailable("ledger service", "connection refused")
        tx = request.transaction
        anchor = decode_body(tx).anchor_audit_batch
        last = max((decode_body(t.transaction).anchor_audit_batch.batch_number for t in self.log
                    if t.result.valid), default=0)
        valid, reason = True, ""
        if anchor.batch_number <= last:
            valid, reason = False, "anchor_audit_batch.batch_number: must be greater than the last anchored batch"
        if self.reject:
            valid, reason = False, self.reject
        index = len(self.log)
        self.log.append(ledger_pb2.LoggedTransaction(
            log_index=index, height=index, transaction=tx, result=ledger_pb2.TransactionResult(valid=valid,
                                                                                             reason=reason)))
        if self.lose_answers:
            self.lose_answers -= 1
            raise Unavailable("ledger service", "deadline exceeded")
        return ledger_pb2.SubmitTransactionResponse(log_index=index, valid=valid, reason=reason)

    def ListTransactions(self, request: ledger_pb2.ListTransactionsRequest, **_: object):
        if self.down:
            raise Unavailable("ledger service", "connection refused")
        page = self.log[request.from_log_index: request.from_log_index + (request.limit or 500)]
        return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=len(self.log))


@dataclass
class Env:
    stub: audit_pb2_grpc.AuditServiceStub
    store: SQLiteAuditStore
    ledger: FakeLedger
    sealer: BatchSealer
    anchorer: LedgerAnchorer
    clock: list[float]

    def call(self, method: str, request: object, caller: Caller):
        return getattr(self.stub, method)(request, metadata=metadata(caller), timeout=10)

    def record(self, caller: Caller = RECORDS, **fields: object) -> audit_pb2.AuditReceipt:
        return self.call("RecordEvent", audit_pb2.RecordEventRequest(event=event(**fields)), caller)

    def stream(self, caller: Caller = OPERATOR, **fields: object):
        return self.stub.StreamEvents(audit_pb2.StreamEventsRequest(**fields), metadata=metadata(caller), timeout=10)

    def seal_and_anchor(self) -> None:
        self.sealer.seal_due(force=True)
        self.anchorer.anchor_pending()


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[Env]:
    store = SQLiteAuditStore(tmp_path)
    ledger = FakeLedger()
    anchorer = LedgerAnchorer(store, "test-chain", lambda: ledger, lambda: AUDIT_SIGNER)
    clock = [NOW_MS / 1000]
    servicer = AuditServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("audit")),
        store, clock=lambda: clock[0], anchorer=anchorer, stream_poll_seconds=0.05,
    )
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_audit(servicer), [servicer.close, store.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield Env(audit_pb2_grpc.AuditServiceStub(channel), store, ledger, BatchSealer(store, 100, 3600), anchorer,
                  clock)
    finally:
        channel.close()
        running.stop()


def event(**fields: object) -> audit_pb2.AuditEvent:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "time_ms": NOW_MS - 10_000, "service": "records", "actor_id": "prac-1",
        "organization_id": "org-a", "patient_id": "psn-1", "record_id": "rec-1", "resource_type": "Condition",
        "categories": [c.SENSITIVITY_CATEGORY_ONCOLOGY], "action": audit_pb2.AUDIT_ACTION_READ,
        "outcome": audit_pb2.AUDIT_OUTCOME_SUCCESS, "purpose": c.PURPOSE_OF_USE_TREAT,
    }
    values.update(fields)
    return audit_pb2.AuditEvent(**values)  # type: ignore[arg-type]


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


# --- accounting of disclosures ---------------------------------------------------------------

def test_access_history_is_an_accounting_of_disclosures(env: Env) -> None:
    env.record(time_ms=NOW_MS - 5_000)
    env.record(time_ms=NOW_MS - 4_000, actor_id="prac-2", organization_id="org-b",
               outcome=audit_pb2.AUDIT_OUTCOME_DENIED, purpose=c.PURPOSE_OF_USE_HRESCH, reason="no consent")
    history = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(), PATIENT)
    newest, oldest = history.disclosures
    assert (newest.recipient_id, newest.recipient_organization_id) == ("prac-2", "org-b")
    assert newest.purpose == c.PURPOSE_OF_USE_HRESCH and newest.outcome == audit_pb2.AUDIT_OUTCOME_DENIED
    assert (oldest.time_ms, oldest.record_id, oldest.resource_type) == (NOW_MS - 5_000, "rec-1", "Condition")
    assert list(oldest.categories) == [c.SENSITIVITY_CATEGORY_ONCOLOGY]
    assert oldest.description == "Condition record rec-1 (oncology)"
    assert [d.sequence for d in history.disclosures] == [e.sequence for e in history.events] == [2, 1]
    assert history.since_ms == NOW_MS - SIX_YEARS_MS and history.until_ms == 0


def test_history_defaults_to_the_last_six_years(env: Env) -> None:
    # Events are recorded when they happen (the audit clock then), and read six years later.
    for time_ms, reason in ((NOW_MS - SIX_YEARS_MS - 1, "too old"), (NOW_MS - SIX_YEARS_MS + 1, "just in")):
        env.clock[0] = time_ms / 1000
        env.record(time_ms=time_ms, reason=reason)
    env.clock[0] = NOW_MS / 1000
    history = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(), PATIENT)
    assert [e.event.reason for e in history.events] == ["just in"]
    old = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(
        since_ms=NOW_MS - SIX_YEARS_MS - 10, until_ms=NOW_MS - SIX_YEARS_MS), PATIENT)
    assert [e.event.reason for e in old.events] == ["too old"]


@pytest.mark.parametrize(("since_ms", "until_ms", "field"), [
    (NOW_MS - SIX_YEARS_MS - 1, 0, "since_ms"),
    (1, NOW_MS, "since_ms"),
    (-1, 0, "since_ms"),
    (0, -1, "until_ms"),
    (NOW_MS, NOW_MS - 1, "until_ms"),
])
def test_history_periods_longer_than_six_years_are_rejected(env: Env, since_ms: int, until_ms: int,
                                                            field: str) -> None:
    code, details = status_of(lambda: env.call(
        "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(since_ms=since_ms, until_ms=until_ms), PATIENT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:")


def test_invalid_categories_are_rejected(env: Env) -> None:
    code, details = status_of(lambda: env.record(categories=[0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event.categories:")


# --- alerts, notifications and the review queue ------------------------------------------------

def test_break_glass_alert_notifies_the_patient_and_queues_a_review(env: Env) -> None:
    env.record(reason="routine read")
    receipt = env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT, actor_id="prac-er", reason="break-glass")
    [note] = env.call("ListNotifications", audit_pb2.ListNotificationsRequest(), PATIENT).notifications
    assert note.event.sequence == receipt.sequence and note.event.event.alert
    assert "prac-er" in note.message and "ETREAT" in note.message
    assert env.call("ListNotifications", audit_pb2.ListNotificationsRequest(), OTHER_PATIENT).notifications == []
    code, _ = status_of(lambda: env.call("ListNotifications",
                                         audit_pb2.ListNotificationsRequest(patient_id="psn-1"), OTHER_PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    [item] = env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items
    assert item.status == audit_pb2.REVIEW_STATUS_OPEN and item.event.sequence == receipt.sequence
    for caller in (PATIENT, PRACTITIONER):
        code, _ = status_of(lambda caller=caller: env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(),
                                                           caller))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    history = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(), PATIENT)
    assert [d.alert for d in history.disclosures] == [True, False]


def test_resolving_a_review_item_is_itself_audited(env: Env) -> None:
    env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT)
    [item] = env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items
    code, details = status_of(lambda: env.call(
        "ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(item_id=item.item_id, note=" "), OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("note:")
    resolved = env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=item.item_id, note="genuine emergency, documented in the ER chart"), OPERATOR)
    assert resolved.status == audit_pb2.REVIEW_STATUS_RESOLVED and resolved.reviewer_id == "operator"
    assert resolved.resolved_ms == NOW_MS
    [resolution] = env.store.events_after(resolved.resolution_sequence - 1, 1)
    assert resolution.event.action == audit_pb2.AUDIT_ACTION_REVIEW and resolution.event.service == "audit"
    assert resolution.event.actor_id == "operator" and resolution.event.patient_id == "psn-1"
    assert env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(
        status=audit_pb2.REVIEW_STATUS_OPEN), OPERATOR).items == []
    code, _ = status_of(lambda: env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=item.item_id, note="again"), OPERATOR))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = status_of(lambda: env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=str(uuid.uuid4()), note="x"), OPERATOR))
    assert code == grpc.StatusCode.NOT_FOUND


def test_an_alert_needs_a_patient(env: Env) -> None:
    code, details = status_of(lambda: env.record(alert=True, patient_id=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event.patient_id:")


# --- StreamEvents --------------------------------------------------------------------------------

def test_stream_resumes_from_a_cursor_without_gap_or_duplicate(env: Env) -> None:
    for i in range(5):
        env.record(reason=f"before {i}")
    stream = env.stream()
    received = [next(stream) for _ in range(3)]
    stream.cancel()  # disconnect
    for i in range(3):
        env.record(reason=f"while away {i}")
    resumed = env.stream(after_sequence=received[-1].sequence, replay_only=True)
    received += list(resumed)
    assert [s.sequence for s in received] == list(range(1, 9))
    assert [s.event.reason for s in received] == [f"before {i}" for i in range(5)] + [
        f"while away {i}" for i in range(3)]


def test_stream_follows_live_events_after_replaying(env: Env) -> None:
    env.record(reason="stored")
    stream = env.stream()
    got: queue.Queue[audit_pb2.StoredAuditEvent] = queue.Queue()

    def consume() -> None:
        try:
            for stored in stream:
                got.put(stored)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert got.get(timeout=5).event.reason == "stored"
    env.record(reason="live 1")
    env.record(reason="live 2")
    assert [got.get(timeout=5).event.reason for _ in range(2)] == ["live 1", "live 2"]
    stream.cancel()
    thread.join(timeout=5)


def test_stream_filters(env: Env) -> None:
    env.record(reason="a")
    env.record(reason="b", outcome=audit_pb2.AUDIT_OUTCOME_DENIED)
    env.record(reason="c", patient_id="psn-2", actor_id="prac-2")
    env.record(reason="d", alert=True)
    env.record(CONSENT, reason="e", service="consent", action=audit_pb2.AUDIT_ACTION_DECIDE)

    def reasons(**filters: object) -> list[str]:
        return [s.event.reason for s in env.stream(replay_only=True, **filters)]

    assert reasons() == ["a", "b", "c", "d", "e"]
    assert reasons(service="consent") == ["e"]
    assert reasons(outcome=audit_pb2.AUDIT_OUTCOME_DENIED) == ["b"]
    assert reasons(patient_id="psn-2") == ["c"]
    assert reasons(actor_id="prac-2") == ["c"]
    assert reasons(alerts_only=True) == ["d"]
    assert reasons(after_sequence=3, service="records") == ["d"]


def test_stream_is_for_services_and_the_operator(env: Env) -> None:
    env.record()
    for caller in (PATIENT, PRACTITIONER):
        code, _ = status_of(lambda caller=caller: list(env.stream(caller, replay_only=True)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert len(list(env.stream(RECORDS, replay_only=True))) == 1


# --- FHIR export ---------------------------------------------------------------------------------

def test_fhir_export_is_a_valid_bundle_of_the_patients_audit_events(env: Env) -> None:
    env.record(reason="read")
    env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT)
    env.record(patient_id="psn-2")
    exported = env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(), PATIENT)
    assert exported.count == 2
    bundle = Bundle.model_validate(json.loads(exported.bundle_json))
    assert bundle.type == "collection" and len(bundle.entry) == 2
    assert {e.resource.get_resource_type() for e in bundle.entry} == {"AuditEvent"}
    code, _ = status_of(lambda: env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(patient_id="psn-2"),
                                         PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(patient_id="psn-2"), OPERATOR).count == 1


# --- batches, anchors and proofs -----------------------------------------------------------------

def test_an_event_proof_shows_the_event_is_in_an_anchored_batch(env: Env) -> None:
    receipts = [env.record(reason=f"read {i}") for i in range(5)]
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=2), PATIENT))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # not sealed yet
    env.seal_and_anchor()
    proof = env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=2), PATIENT)
    verify_event_proof(proof, receipts[1].event_hash)
    assert proof.anchored and proof.batch_number == 1 and (proof.first_sequence, proof.last_sequence) == (1, 5)
    anchored_tx = env.ledger.log[proof.anchor_log_index]
    anchor = decode_body(anchored_tx.transaction).anchor_audit_batch
    assert anchored_tx.transaction.signer_id == "svc-audit" and anchor.merkle_root == proof.batch_root
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(check_ledger=True), OPERATOR)
    assert verified.ok and verified.batches_checked == 1 and verified.anchors_checked == 1


def test_event_proofs_are_private_to_the_patient(env: Env) -> None:
    env.record()
    env.seal_and_anchor()
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=1), OTHER_PATIENT))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=9), OPERATOR))
    assert code == grpc.StatusCode.NOT_FOUND


def test_anchoring_waits_for_the_ledger_and_loses_nothing(env: Env) -> None:
    env.record()
    env.ledger.down = True
    env.sealer.seal_due(force=True)
    with pytest.raises(Unavailable):
        env.anchorer.anchor_pending()
    env.record()
    env.sealer.seal_due(force=True)
    assert [b.anchored for b in env.store.batches()] == [False, False]
    env.ledger.down = False
    env.anchorer.anchor_pending()
    assert [b.anchor_log_index for b in env.store.batches()] == [0, 1]


def test_an_anchor_whose_answer_was_lost_is_found_not_duplicated(env: Env) -> None:
    env.record()
    env.sealer.seal_due(force=True)
    env.ledger.lose_answers = 1
    with pytest.raises(Unavailable):
        env.anchorer.anchor_pending()
    [batch] = env.anchorer.anchor_pending()  # resubmitted, refused as a duplicate, found on the ledger
    assert batch.anchor_log_index == 0
    assert [t.result.valid for t in env.ledger.log] == [True, False]


def test_verify_detects_a_ledger_anchor_that_differs(env: Env) -> None:
    env.record()
    env.seal_and_anchor()
    tampered = env.ledger.log[0]
    body = decode_body(tampered.transaction)
    body.anchor_audit_batch.merkle_root = bytes(32)
    tampered.transaction.body = body.SerializeToString(deterministic=True)
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(check_ledger=True), OPERATOR)
    assert not verified.ok and verified.first_bad_sequence == 1 and "differs" in verified.problem
    assert env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), OPERATOR).ok  # local check only


def test_batches_are_sealed_by_count_or_by_time(env: Env) -> None:
    now = [0.0]
    sealer = BatchSealer(env.store, max_events=3, max_seconds=10, monotonic=lambda: now[0])
    for _ in range(7):
        env.record()
    assert [(b.first_sequence, b.last_sequence) for b in sealer.seal_due()] == [(1, 3), (4, 6)]
    now[0] = 9.0
    assert sealer.seal_due() == []  # event 7 has waited 9 s
    now[0] = 19.5
    assert [(b.first_sequence, b.last_sequence) for b in sealer.seal_due()] == [(7, 7)]
    assert sealer.seal_due() == []


def test_maintenance_keeps_retrying_until_the_ledger_is_back(env: Env) -> None:
    env.ledger.down = True
    maintenance = AuditMaintenance(BatchSealer(env.store, 1, 0), env.anchorer, 0.02)
    maintenance.start()
    try:
        env.record()
        wait_until(lambda: bool(env.store.batches()), "the batch is sealed while the ledger is down")
        assert not env.store.batches()[0].anchored
        env.ledger.down = False
        wait_until(lambda: env.store.batches()[0].anchored, "the batch is anchored once the ledger is back")
    finally:
        maintenance.stop()


@pytest.mark.parametrize("reason", ["not permitted: only svc-audit anchors audit batches",
                                    "anchor_audit_batch.merkle_root: must be 32 bytes"])
def test_a_rejected_anchor_backs_off_and_alerts_instead_of_resubmitting_in_a_loop(env: Env, reason: str) -> None:
    env.ledger.reject = reason
    now = [0.0]
    maintenance = AuditMaintenance(BatchSealer(env.store, 1000, 3600), env.anchorer, 1.0,
                                   report=env.store.append, backoff_max_seconds=8, monotonic=lambda: now[0])
    env.record()
    env.sealer.seal_due(force=True)
    submitted_at = []
    for second in range(41):  # one maintenance round a second for 40 s
        now[0] = float(second)
        before = len(env.ledger.log)
        try:
            maintenance.run_once()
        except AnchorRejected as exc:
            assert exc.batch_number == 1 and reason.removeprefix("not permitted: ") in exc.message
        if len(env.ledger.log) > before:
            submitted_at.append(second)
    # Exponential (1, 2, 4, 8 s) and bounded (8 s), not every round.
    assert submitted_at == [0, 1, 3, 7, 15, 23, 31, 39]
    alerts = [e.event for e in env.store.events_after(0, 100) if e.event.action == audit_pb2.AUDIT_ACTION_ANCHOR_BATCH]
    assert len(alerts) == 1  # one alert per distinct rejection, not one per attempt
    assert alerts[0].outcome == audit_pb2.AUDIT_OUTCOME_FAILED and "audit batch 1" in alerts[0].reason
    assert not env.store.batches()[0].anchored
    # Once the ledger accepts again, the next attempt anchors and the back-off ends.
    env.ledger.reject = ""
    now[0] = 47.0
    maintenance.run_once()
    assert env.store.batches()[0].anchored and maintenance.backing_off_until is None


def test_verify_with_the_ledger_fails_when_a_batch_misses_the_anchoring_deadline(env: Env) -> None:
    env.record()
    env.ledger.down = True
    BatchSealer(env.store, 100, 3600, wall=lambda: env.clock[0]).seal_due(force=True)
    env.clock[0] += 600
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(check_ledger=True), OPERATOR)
    assert verified.ok, verified.problem  # waiting, within the default 900 s deadline
    env.clock[0] += 301
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(check_ledger=True), OPERATOR)
    assert not verified.ok and verified.first_bad_sequence == 1
    assert "batch 1" in verified.problem and "deadline of 900 s" in verified.problem
    assert env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), OPERATOR).ok  # local check only


def wait_until(condition, what: str, timeout: float = 10) -> None:
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        pause.wait(0.02)
    raise AssertionError(f"timed out: {what}")
