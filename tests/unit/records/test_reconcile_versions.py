"""The reconciler with record versions (carechain.records.reconcile): an amendment that crashed before its
commit loses its own data key and is closed as failed, while the committed versions of the record keep
theirs; a committed amendment whose SUCCESS event was lost gets one, for that version."""

from __future__ import annotations

from carechain.audit.v1 import audit_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.records.reconcile import Reconciler, reconciler_event_id
from carechain.storage.v1 import storage_pb2

WRITE, ATTEMPTED, SUCCESS, FAILED = (audit_pb2.AUDIT_ACTION_WRITE, audit_pb2.AUDIT_OUTCOME_ATTEMPTED,
                                     audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_FAILED)
RECORDS = Ed25519Signer.generate("svc-records")


def registration(version: int) -> ledger_pb2.LoggedTransaction:
    record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="psn-1", organization_id="org-a",
                                       content_sha256=f"{version:02x}" * 32, version=version)
    tx = transactions.sign_transaction(transactions.new_body("chain", RECORDS.key_id, register_record=record),
                                       RECORDS)
    return ledger_pb2.LoggedTransaction(log_index=version, transaction=tx,
                                        result=ledger_pb2.TransactionResult(valid=True))


def event(outcome: int, version: int = 0) -> audit_pb2.StoredAuditEvent:
    return audit_pb2.StoredAuditEvent(event=audit_pb2.AuditEvent(
        action=WRITE, outcome=outcome, record_id="rec-1", patient_id="psn-1", actor_id="org-a", time_ms=1,
        record_version=version, service="records"))


class Peers:
    """A ledger with the given versions of rec-1, an audit trail of write events; records what is changed."""

    def __init__(self, committed_versions: list[int], events: list[audit_pb2.StoredAuditEvent]) -> None:
        self.ledger = self.audit = self.storage = self.identity = self
        self.log = [registration(v) for v in committed_versions]
        self.trail = events
        self.deleted_keys: list[str] = []
        self.added: list[audit_pb2.AuditEvent] = []

    def ListTransactions(self, request, **_):  # noqa: N802
        page = [t for t in self.log if t.log_index >= request.from_log_index]
        return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=len(self.log))

    def StreamEvents(self, request, **_):  # noqa: N802
        return iter(self.trail)

    def ListBlobs(self, request, **_):  # noqa: N802
        return storage_pb2.ListBlobsResponse()

    def PruneIncoming(self, request, **_):  # noqa: N802
        return storage_pb2.PruneIncomingResponse()

    def DeleteDataKey(self, request, **_):  # noqa: N802
        self.deleted_keys.append(request.record_id)

    def RecordEvent(self, request, **_):  # noqa: N802
        self.added.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.added))


def test_a_crashed_amendment_loses_only_its_own_data_key() -> None:
    peers = Peers([1], [event(ATTEMPTED), event(SUCCESS), event(ATTEMPTED, 2)])
    report = Reconciler(peers, grace_seconds=0).run()
    assert (report.abandoned_writes, report.orphan_data_keys, report.unconfirmed_commits) == (1, 1, 0)
    assert peers.deleted_keys == ["rec-1:v2"]  # version 1's key stays
    [closed] = peers.added
    assert (closed.outcome, closed.record_version) == (FAILED, 2)
    assert closed.event_id == reconciler_event_id("rec-1:v2", FAILED)
    # Idempotent: the next pass sees the attempt closed.
    peers.trail.append(audit_pb2.StoredAuditEvent(event=closed))
    again = Reconciler(peers, grace_seconds=0).run()
    assert (again.abandoned_writes, peers.deleted_keys) == (0, ["rec-1:v2"])


def test_a_committed_amendment_without_its_success_event_gets_one() -> None:
    peers = Peers([1, 2], [event(ATTEMPTED), event(SUCCESS), event(ATTEMPTED, 2)])
    report = Reconciler(peers, grace_seconds=0).run()
    assert (report.unconfirmed_commits, report.abandoned_writes, report.ledger_records) == (1, 0, 1)
    assert [(e.outcome, e.record_version) for e in peers.added] == [(SUCCESS, 2)]
    assert peers.deleted_keys == []
