"""LedgerService through a real in-process gRPC server."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from ledger_fixtures import CHAIN, Kind, Net, grant, onboarding, record, register, tx

from carechain.core import merkle
from carechain.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.core.layout import audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger import submission as client
from carechain.ledger import transactions
from carechain.ledger.server import build
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import LedgerSettings
from carechain.runtime.server import start_service


@pytest.fixture(scope="module")
def net() -> Net:
    return Net()


@pytest.fixture(scope="module")
def service(tmp_path_factory, net):
    root = tmp_path_factory.mktemp("ledger-service")
    trust_dir = root / "trust"
    for principal_id, key in net.trust.keys.items():
        write_public_key(trust_dir / f"{principal_id}.pub", key)
    net.ledger.save(root / "svc-ledger.pem")
    settings = LedgerSettings(
        listen_address="127.0.0.1:0", data_dir=root / "ledger", signing_key_file=root / "svc-ledger.pem",
        trust_dir=trust_dir, chain_id=CHAIN, block_max_wait_ms=1, shutdown_grace_seconds=0,
    )
    register_fn, closers = build(settings)
    running = start_service("ledger", settings, register_fn, closers)
    yield running
    running.stop()


def token(net: Net, principal_id: str = "dr-1", kind: int = Kind.PRINCIPAL_KIND_PRACTITIONER) -> str:
    return issue_token(net.identity, ACCESS_TOKEN_TYPE, caller_claims(Caller(principal_id, kind), audience("ledger")),
                       60)[0]


class Authed:
    """A stub that adds a bearer token to every call."""

    def __init__(self, stub, bearer: str) -> None:
        self._stub, self._metadata = stub, [("authorization", f"Bearer {bearer}")]

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, timeout=kw.get("timeout", 30))


@pytest.fixture(scope="module")
def channel(service):
    with grpc.insecure_channel(service.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel, net):
    # Submitting and ledger-wide reads are for services (docs/security.md); test_access_control covers the rest.
    return Authed(ledger_pb2_grpc.LedgerServiceStub(channel), token(net, "svc-records", Kind.PRINCIPAL_KIND_SERVICE))


@pytest.fixture(scope="module")
def onboarded(stub, net):
    txs, keys = onboarding(net)
    for t in txs:
        assert client.submit(stub, t).valid
    return keys


def submit(stub, t):
    return stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(transaction=t))


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_calls_without_a_token_are_unauthenticated(channel):
    raw = ledger_pb2_grpc.LedgerServiceStub(channel)
    code, _ = code_of(lambda: raw.GetChainHead(ledger_pb2.GetChainHeadRequest(), timeout=30))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_for_another_service_is_unauthenticated(channel, net):
    other = issue_token(net.identity, ACCESS_TOKEN_TYPE,
                        caller_claims(Caller("dr-1", Kind.PRINCIPAL_KIND_PRACTITIONER), audience("records")), 60)[0]
    wrong = Authed(ledger_pb2_grpc.LedgerServiceStub(channel), other)
    code, _ = code_of(lambda: wrong.GetChainHead(ledger_pb2.GetChainHeadRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_submit_answers_with_the_committed_position(stub, net, onboarded):
    t = tx(net.records, register_record=record("pat-1", "org-1", "rec-submit"))
    response = submit(stub, t)
    assert response.valid and response.reason == ""
    assert response.transaction_hash == transactions.transaction_hash(t).hex()
    head = stub.GetChainHead(ledger_pb2.GetChainHeadRequest())
    assert head.header.height >= response.height and head.header.log_size > response.log_index
    block = stub.GetBlock(ledger_pb2.GetBlockRequest(height=response.height))
    assert block.transactions[response.index] == t


def test_a_garbage_body_is_invalid_argument(stub):
    garbage = ledger_pb2.Transaction(body=b"\xff\x00garbage", signer_id="svc-records", signature=bytes(64))
    code, details = code_of(lambda: submit(stub, garbage))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "transaction.body" in details


def test_a_missing_transaction_is_invalid_argument(stub):
    code, details = code_of(lambda: stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("transaction")


def test_a_bad_signature_is_invalid_argument(stub, net):
    t = tx(net.audit, anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=1, merkle_root=bytes(32)))
    t.signature = bytes(64)
    code, details = code_of(lambda: submit(stub, t))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "transaction.signature" in details


def test_a_replay_is_already_exists(stub, net):
    t = tx(net.audit, anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=100, merkle_root=bytes(32)))
    assert submit(stub, t).valid
    code, details = code_of(lambda: submit(stub, t))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "replayed nonce" in details


def test_an_unknown_signer_is_permission_denied(stub):
    from carechain.core.crypto import Ed25519Signer

    code, _ = code_of(lambda: submit(stub, grant(Ed25519Signer.generate("nobody"))))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_client_submit_raises_for_rule_violations(stub, net, onboarded):
    with pytest.raises(PermissionDenied, match="only svc-records"):
        client.submit(stub, tx(net.identity, register_record=record("pat-1", "org-1")))
    with pytest.raises(FailedPrecondition, match="already registered"):
        client.submit(stub, register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)[0])


def test_record_entries_and_not_found(stub, net, onboarded):
    t = tx(net.records, register_record=record("pat-1", "org-1", "rec-entry"))
    log_index = client.submit(stub, t).log_index
    entry = stub.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id="rec-entry"))
    assert entry.log_index == log_index and entry.record.record_id == "rec-entry" and not entry.erased
    code, _ = code_of(lambda: stub.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id="missing")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_get_block_beyond_the_head_is_not_found(stub):
    for height in (10**9, 2**63 - 1):
        code, _ = code_of(lambda h=height: stub.GetBlock(ledger_pb2.GetBlockRequest(height=h)))
        assert code == grpc.StatusCode.NOT_FOUND
    far = stub.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=2**63 - 1))
    assert list(far.transactions) == []
    # Above int64 no store can hold it: INVALID_ARGUMENT naming the field (issue 12), not UNKNOWN.
    code, details = code_of(lambda: stub.GetBlock(ledger_pb2.GetBlockRequest(height=2**64 - 1)))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "height")


def test_list_transactions_in_log_order_with_a_limit(stub, onboarded):
    page = stub.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=0, limit=2))
    assert [t.log_index for t in page.transactions] == [0, 1] and page.log_size >= 3
    rest = stub.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=2))
    assert [t.log_index for t in rest.transactions] == list(range(2, page.log_size))
    code, details = code_of(lambda: stub.ListTransactions(ledger_pb2.ListTransactionsRequest(limit=1001)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in details


def test_inclusion_and_consistency_proofs_verify_client_side(stub, onboarded):
    head = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header
    old = ledger_pb2.BlockHeader.FromString(stub.GetBlock(ledger_pb2.GetBlockRequest(height=2)).header)
    for index in range(head.log_size):
        proof = stub.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(log_index=index))
        assert proof.tree_size == head.log_size and proof.root == head.log_root
        merkle.verify_inclusion(merkle.leaf_hash(proof.leaf), index, proof.tree_size, list(proof.hashes),
                                head.log_root)
    proof = stub.GetConsistencyProof(ledger_pb2.GetConsistencyProofRequest(first_size=old.log_size))
    assert proof.first_root == old.log_root
    merkle.verify_consistency(old.log_size, head.log_size, list(proof.hashes), old.log_root, head.log_root)


def test_proof_sizes_are_validated(stub, onboarded):
    size = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header.log_size
    for request, field in [
        (ledger_pb2.GetInclusionProofRequest(log_index=size), "log_index"),
        (ledger_pb2.GetInclusionProofRequest(log_index=0, tree_size=size + 5), "tree_size"),
    ]:
        code, details = code_of(lambda r=request: stub.GetInclusionProof(r))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field)
    for request, field in [
        (ledger_pb2.GetConsistencyProofRequest(first_size=2, second_size=1), "first_size"),
        (ledger_pb2.GetConsistencyProofRequest(first_size=1, second_size=size + 5), "second_size"),
    ]:
        code, details = code_of(lambda r=request: stub.GetConsistencyProof(r))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field)


def test_verify_chain_reports_an_intact_chain(stub, onboarded):
    result = stub.VerifyChain(ledger_pb2.VerifyChainRequest())
    head = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header
    assert result.ok and result.problem == "" and result.blocks_checked >= head.height + 1


def test_clinical_metadata_in_clear_is_refused_before_it_reaches_any_copy(stub, onboarded, net):
    """Even an invalid transaction is stored with its contents: clear clinical fields are never ordered."""
    leaky = record("pat-1", "org-1", "r-clear")
    leaky.resource_type = "Condition"
    leaky.categories.append(2)  # SENSITIVITY_CATEGORY_MENTAL_HEALTH
    before = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header.log_size
    code, details = code_of(lambda: submit(stub, tx(net.records, register_record=leaky)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sealed_metadata" in details
    grant_in_clear = ledger_pb2.GrantConsent(consent_id="9f7a3c2e-0000-4000-8000-00000000c1ea", patient_id="pat-1")
    grant_in_clear.policy.SetInParent()
    code, details = code_of(lambda: submit(stub, tx(onboarded["pat-1"], grant_consent=grant_in_clear)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sealed_policy" in details
    after = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header.log_size
    assert after == before, "a refused transaction must not be ordered"


# --- SubmitTransactions: many in one call, each judged alone -------------------------------------


def submit_many(stub, txs, ack=ledger_pb2.ACK_LEVEL_UNSPECIFIED):
    return stub.SubmitTransactions(ledger_pb2.SubmitTransactionsRequest(transactions=txs, ack=ack)).verdicts


def test_a_batch_gets_one_verdict_per_transaction_and_a_bad_one_fails_alone(stub, net, onboarded):
    good = tx(net.records, register_record=record("pat-1", "org-1", "rec-batch-1"))
    forged = tx(net.audit, anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=7, merkle_root=bytes(32)))
    forged.signature = bytes(64)
    leaky = tx(net.records, register_record=record("pat-1", "org-1", "rec-batch-clear", resource_type="Condition"))
    against_rules = tx(net.identity, register_record=record("pat-1", "org-1", "rec-batch-2"))  # not svc-records
    also_good = tx(net.records, register_record=record("pat-1", "org-1", "rec-batch-3"))
    verdicts = submit_many(stub, [good, forged, leaky, good, against_rules, also_good], ledger_pb2.ACK_LEVEL_FINAL)
    assert len(verdicts) == 6
    assert verdicts[0].code == 0 and verdicts[0].response.valid and verdicts[0].response.final
    assert verdicts[0].response.transaction_hash == transactions.transaction_hash(good).hex()
    assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == verdicts[1].code
    assert verdicts[1].message.startswith("transaction.signature")
    assert verdicts[2].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "must be sealed" in verdicts[2].message
    # The same transaction twice in one call: the second is a replay, exactly as if sent after the first.
    assert verdicts[3].code == grpc.StatusCode.ALREADY_EXISTS.value[0] and verdicts[3].message == "replayed nonce"
    # Ordered but invalid under the contract rules: committed with its reason, like SubmitTransaction answers.
    assert verdicts[4].code == 0 and not verdicts[4].response.valid
    assert verdicts[4].response.reason.startswith("not permitted: ")
    assert verdicts[5].code == 0 and verdicts[5].response.valid
    for verdict, t in ((verdicts[0], good), (verdicts[5], also_good)):
        block = stub.GetBlock(ledger_pb2.GetBlockRequest(height=verdict.response.height))
        assert block.transactions[verdict.response.index] == t
    entry = stub.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id="rec-batch-3"))
    assert entry.log_index == verdicts[5].response.log_index
    code, _ = code_of(lambda: stub.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id="rec-batch-clear")))
    assert code == grpc.StatusCode.NOT_FOUND  # the leaky one never reached the ledger


def test_a_batch_is_validated_for_its_size_and_ack(stub, net):
    code, details = code_of(lambda: submit_many(stub, []))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("transactions")
    t = tx(net.audit, anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=8, merkle_root=bytes(32)))
    code, details = code_of(lambda: submit_many(stub, [t] * 1001))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 1000" in details
    code, details = code_of(lambda: submit_many(stub, [t], ack=99))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ack")


def test_a_batch_is_for_services_only(channel, net):
    doctor = Authed(ledger_pb2_grpc.LedgerServiceStub(channel), token(net))
    t = tx(net.audit, anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=9, merkle_root=bytes(32)))
    code, _ = code_of(lambda: submit_many(doctor, [t]))
    assert code == grpc.StatusCode.PERMISSION_DENIED


class CountingStub:
    """The real stub, counting the submission RPCs that reach the ledger; the first one is held briefly so
    that the concurrent submitters queue behind it (what a busy gateway sees)."""

    def __init__(self, stub) -> None:
        self._stub = stub
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def SubmitTransaction(self, request, **kwargs):  # noqa: N802 - gRPC method name
        with self._lock:
            first = not self.calls
            self.calls.append(("SubmitTransaction", 1))
        if first:
            time.sleep(0.5)
        return self._stub.SubmitTransaction(request, **kwargs)

    def SubmitTransactions(self, request, **kwargs):  # noqa: N802
        with self._lock:
            self.calls.append(("SubmitTransactions", len(request.transactions)))
        return self._stub.SubmitTransactions(request, **kwargs)


def test_concurrent_service_submissions_share_batch_calls_with_their_own_verdicts(stub, net, onboarded):
    counting = CountingStub(stub)
    submitter = client.ServiceSubmitter(CHAIN, net.records, lambda: counting)
    count = 16
    txs = [submitter.transaction(register_record=record("pat-1", "org-1", f"rec-group-{i}")) for i in range(count)]
    # One of them breaks a rule (another organisation's patient): only its caller hears of it.
    txs[5] = submitter.transaction(register_record=record("pat-1", "org-2", "rec-group-5"))
    outcomes: list[object] = [None] * count
    start = threading.Barrier(count)

    def one(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = submitter.submit(txs[i])
        except Exception as exc:  # noqa: BLE001 - checked below
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert isinstance(outcomes[5], FailedPrecondition | PermissionDenied), outcomes[5]
    for i, outcome in enumerate(outcomes):
        if i == 5:
            continue
        assert isinstance(outcome, ledger_pb2.SubmitTransactionResponse) and outcome.valid and outcome.final, outcome
        assert outcome.transaction_hash == transactions.transaction_hash(txs[i]).hex()
    assert sum(n for _, n in counting.calls) == count  # every transaction sent exactly once
    assert len(counting.calls) < count and any(name == "SubmitTransactions" for name, _ in counting.calls)
    assert len({o.log_index for o in outcomes if not isinstance(o, Exception)}) == count - 1


def test_batch_errors_come_back_as_the_status_a_lone_call_raises(stub, net, onboarded):
    counting = CountingStub(stub)
    submitter = client.ServiceSubmitter(CHAIN, net.audit, lambda: counting)
    replayed = submitter.transaction(anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=500,
                                                                                     merkle_root=bytes(32)))
    assert submitter.submit(replayed).valid
    forged = submitter.transaction(anchor_audit_batch=ledger_pb2.AnchorAuditBatch(batch_number=501,
                                                                                   merkle_root=bytes(32)))
    forged.signature = bytes(64)
    verdicts = submit_many(stub, [replayed, forged])
    errors = [client.verdict_error(v.code, v.message) for v in verdicts]
    assert isinstance(errors[0], AlreadyExists) and errors[0].code == grpc.StatusCode.ALREADY_EXISTS
    assert isinstance(errors[1], InvalidArgument) and errors[1].field == "transaction.signature"
