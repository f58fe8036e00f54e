"""Shared helpers for the audit tests: an AuditService on a real in-process gRPC server over a SQLite store,
a fake ledger that anchors like the validator, a fake principal directory, callers and events."""

from __future__ import annotations

import contextlib
import pathlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from carechain.audit.anchoring import BatchSealer, LedgerAnchorer
from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.identity.v1 import identity_pb2
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
    """Call metadata carrying an access token for caller (issued by the test identity key)."""
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
    return [("authorization", f"Bearer {token}")]


def event(**fields: object) -> audit_pb2.AuditEvent:
    """A valid READ event by prac-1 about psn-1's record rec-1, ten seconds before NOW_MS; fields override."""
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "time_ms": NOW_MS - 10_000, "service": "records", "actor_id": "prac-1",
        "organization_id": "org-a", "patient_id": "psn-1", "record_id": "rec-1", "resource_type": "Condition",
        "categories": [c.SENSITIVITY_CATEGORY_ONCOLOGY], "action": audit_pb2.AUDIT_ACTION_READ,
        "outcome": audit_pb2.AUDIT_OUTCOME_SUCCESS, "purpose": c.PURPOSE_OF_USE_TREAT,
    }
    values.update(fields)
    return audit_pb2.AuditEvent(**values)  # type: ignore[arg-type]


def status_of(call) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details call() fails with."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def wait_until(condition, what: str, timeout: float = 10) -> None:
    """Poll condition() until it holds; AssertionError naming what after timeout seconds."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        pause.wait(0.02)
    raise AssertionError(f"timed out: {what}")


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
class Directory:
    """Delegations and principals as the consent and identity services would answer (no network)."""

    delegations_by_patient: dict[str, list[consent_pb2.Delegation]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    consent_down: bool = False

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        if self.consent_down:
            raise Unavailable("consent service", "connection refused")
        return self.delegations_by_patient.get(patient_id, [])

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        name = self.names.get(principal_id)
        return None if name is None else identity_pb2.Principal(principal_id=principal_id, display_name=name)


class AuthedStub:
    """A stub that always calls as one principal (like a channel with a bearer interceptor)."""

    def __init__(self, stub: audit_pb2_grpc.AuditServiceStub, caller: Caller) -> None:
        self._stub, self._caller = stub, caller

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=metadata(self._caller), **kw)


@dataclass
class AuditEnv:
    """A running AuditService and what it runs on; clock[0] is the audit service's clock (seconds)."""

    stub: audit_pb2_grpc.AuditServiceStub
    store: SQLiteAuditStore
    ledger: FakeLedger
    sealer: BatchSealer
    anchorer: LedgerAnchorer
    directory: Directory
    clock: list[float]

    def call(self, method: str, request: object, caller: Caller):
        return getattr(self.stub, method)(request, metadata=metadata(caller), timeout=10)

    def as_(self, caller: Caller) -> AuthedStub:
        return AuthedStub(self.stub, caller)

    def record(self, caller: Caller = RECORDS, **fields: object) -> audit_pb2.AuditReceipt:
        """RecordEvent of :func:`event` (fields override) as caller."""
        return self.call("RecordEvent", audit_pb2.RecordEventRequest(event=event(**fields)), caller)

    def history(self, caller: Caller, patient_id: str = "") -> audit_pb2.GetAccessHistoryResponse:
        return self.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id=patient_id), caller)

    def stream(self, caller: Caller = OPERATOR, **fields: object):
        return self.stub.StreamEvents(audit_pb2.StreamEventsRequest(**fields), metadata=metadata(caller), timeout=10)

    def seal_and_anchor(self) -> None:
        self.sealer.seal_due(force=True)
        self.anchorer.anchor_pending()


@contextlib.contextmanager
def running_audit(tmp_path: pathlib.Path, directory: Directory | None = None, **settings: object) -> Iterator[AuditEnv]:
    """An AuditService over a SQLite store in tmp_path, anchoring on a FakeLedger, clock at NOW_MS; settings
    override AuditSettings fields (e.g. max_streams)."""
    store = SQLiteAuditStore(tmp_path)
    ledger = FakeLedger()
    anchorer = LedgerAnchorer(store, "test-chain", lambda: ledger, lambda: AUDIT_SIGNER)
    directory = directory if directory is not None else Directory()
    clock = [NOW_MS / 1000]
    servicer = AuditServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("audit")),
        store, clock=lambda: clock[0], anchorer=anchorer, stream_poll_seconds=0.05, directory=directory,
    )
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0,
                                                   **settings),  # type: ignore[arg-type]
                            register_audit(servicer), [servicer.close, store.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield AuditEnv(audit_pb2_grpc.AuditServiceStub(channel), store, ledger, BatchSealer(store, 100, 3600),
                       anchorer, directory, clock)
    finally:
        channel.close()
        running.stop()
