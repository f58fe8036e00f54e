"""History that cannot be rewritten unnoticed, played by the attacker through the public gRPC API and the CLI.

- every block needs a quorum certificate of the *configured* validator set (not the store's);
- an operator holding the validator's key re-signs the chain without a revocation: a client that remembers
  an earlier checkpoint (SDK memory, CLI state file) and the checkpoints published in the audit trail
  detect it;
- an audit anchor is checked on the ledger (a certified block), not only the batch root.
"""

from __future__ import annotations

import pathlib
import shutil
import sqlite3
from dataclasses import dataclass

import grpc
import pytest
from ledger_fixtures import CHAIN, Kind, Net, cid, grant, onboarding, record, tx

from carechain.audit.anchoring import BatchSealer, LedgerAnchorer
from carechain.audit.checkpoints import CheckpointRecorder
from carechain.audit.hashchain import verify_event_proof
from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import DB_FILE_NAME as AUDIT_DB_FILE
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.cli import build_parser
from carechain.client.proofs import (
    CheckpointMemory,
    HistoryRewritten,
    LedgerTrust,
    consistency_fetcher,
    verify_anchor_block,
    verify_anchor_inclusion,
    verify_checkpoint,
)
from carechain.common.v1 import common_pb2
from carechain.core.errors import IntegrityError
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.localnet import free_port
from carechain.ledger import quorum
from carechain.ledger import submission as client
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.server import build
from carechain.ledger.sqlite_store import DB_FILE
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import AuditSettings, LedgerSettings
from carechain.runtime.server import start_service

TIMEOUT = 30
# Ledger-wide reads and direct submissions are for services (docs/security.md): tests call as one.
SERVICE = Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE)


@pytest.fixture(scope="module")
def net() -> Net:
    return Net()


def token(net: Net, caller: Caller, service: str) -> str:
    return issue_token(net.identity, ACCESS_TOKEN_TYPE, caller_claims(caller, audience(service)), 300)[0]


class Authed:
    """A stub that adds a bearer token to every call."""

    def __init__(self, stub, bearer: str) -> None:
        self._stub, self._metadata = stub, [("authorization", f"Bearer {bearer}")]

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, timeout=kw.get("timeout", TIMEOUT))


class LedgerProcess:
    """A ledger service on a fixed port over root/ledger (the network layout the CLI reads), restartable."""

    def __init__(self, root: pathlib.Path, net: Net) -> None:
        self.root, self.net = root, net
        for principal_id, key in net.trust.keys.items():
            write_public_key(root / "trust" / f"{principal_id}.pub", key)
        net.ledger.save(root / "svc-ledger.pem")
        self.settings = LedgerSettings(
            listen_address=f"127.0.0.1:{free_port()}", data_dir=root / "ledger",
            signing_key_file=root / "svc-ledger.pem", trust_dir=root / "trust", chain_id=CHAIN,
            block_max_wait_ms=1, shutdown_grace_seconds=0,
        )
        self.running = None
        self.channel = None
        self.start()

    def start(self) -> None:
        register_fn, closers = build(self.settings)
        self.running = start_service("ledger", self.settings, register_fn, closers)
        self.channel = grpc.insecure_channel(self.running.address)

    def stop(self) -> None:
        self.channel.close()
        self.running.stop()

    def stub(self, caller: Caller = SERVICE) -> Authed:
        return Authed(ledger_pb2_grpc.LedgerServiceStub(self.channel), token(self.net, caller, "ledger"))

    @property
    def data_dir(self) -> pathlib.Path:
        return self.settings.data_dir


@pytest.fixture
def ledger_process(tmp_path, net):
    process = LedgerProcess(tmp_path, net)
    yield process
    process.stop()


def story(net: Net) -> tuple[list[ledger_pb2.Transaction], ledger_pb2.Transaction]:
    """Onboarding, a record, a grant; then the patient's revocation (returned separately)."""
    txs, keys = onboarding(net)
    txs += [tx(net.records, register_record=record("pat-1", "org-1", "r-1")), grant(keys["pat-1"], cid("c-1"))]
    revocation = tx(keys["pat-1"], revoke_consent=ledger_pb2.RevokeConsent(consent_id=cid("c-1"), patient_id="pat-1"))
    return txs, revocation


def rewrite_history(data_dir: pathlib.Path, net: Net, keep: list[ledger_pb2.Transaction]) -> None:
    """The attack: with the validator's key, build a chain holding only keep, and put it in place of the store."""
    forged = data_dir.parent / "forged"
    ledger = Ledger.open(forged, CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    for t in keep:
        assert ledger.submit(t, TIMEOUT).valid
    ledger.close()
    for old in data_dir.glob(f"{DB_FILE}*"):
        old.unlink()
    for new in forged.glob(f"{DB_FILE}*"):
        shutil.copy(new, data_dir / new.name)
    shutil.rmtree(forged)


def trust_of(net: Net) -> LedgerTrust:
    return LedgerTrust(net.trust, quorum.ValidatorSet.single(), CHAIN)


def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.func(args)


# --- quorum certificates of the configured validator set ------------------------------------------

def test_verify_chain_fails_on_a_block_without_its_quorum_certificate(ledger_process, net):
    stub = ledger_process.stub()
    for t in story(net)[0]:
        assert client.submit(stub, t).valid
    assert stub.VerifyChain(ledger_pb2.VerifyChainRequest()).ok
    # The operator deletes block 3's certificate from the live store.
    with sqlite3.connect(ledger_process.data_dir / DB_FILE) as conn:
        conn.execute("DELETE FROM certificates WHERE height = 3")
    result = stub.VerifyChain(ledger_pb2.VerifyChainRequest())
    assert not result.ok and result.first_bad_height == 3
    assert result.problem == "block 3: no quorum certificate"
    offline = verify_chain(ledger_process.data_dir, net.trust)
    assert not offline.ok and offline.problem == "block 3: no quorum certificate"


def test_a_chain_re_signed_by_a_non_validator_that_records_itself_as_the_validator_set_fails(tmp_path, net):
    # svc-records' key is in the trust bundle, but it is no validator. Its forged chain stores
    # {svc-records} as the validator set; verification must use the configured set instead.
    forged = Ledger.open(tmp_path / "forged", CHAIN, net.records, net.trust, block_max_wait_ms=1,
                         validators=quorum.ValidatorSet.single(net.records.key_id))
    for t in story(net)[0]:
        forged.submit(t, TIMEOUT)
    forged.close()
    result = verify_chain(tmp_path / "forged", net.trust)
    assert not result.ok and result.first_bad_height == 0
    assert result.problem == "block 0: signed by an unknown validator"
    # With a certificate-only forgery (the block signature left alone) the certificate names the outsider.
    honest_dir = tmp_path / "honest"
    honest = Ledger.open(honest_dir, CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    honest.close()
    with sqlite3.connect(honest_dir / DB_FILE) as conn:
        header = conn.execute("SELECT header FROM blocks WHERE height = 0").fetchone()[0]
        certificate = quorum.build_certificate(0, header, [quorum.sign_header(net.records, header)])
        conn.execute("UPDATE certificates SET certificate = ? WHERE height = 0",
                     (certificate.SerializeToString(deterministic=True),))
    result = verify_chain(honest_dir, net.trust)
    assert not result.ok and "svc-records is not in the validator set" in result.problem
    # The CLI takes the set from its options or configuration, never from the copy it verifies.
    for principal_id, key in net.trust.keys.items():
        write_public_key(tmp_path / "trust" / f"{principal_id}.pub", key)
    assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--validator", "forged",
               "--checkpoint-file", str(tmp_path / "cp.json")) == 1
    assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--validator", "forged", "--validators",
               "svc-records", "--checkpoint-file", str(tmp_path / "cp.json")) == 0


# --- re-signed history: remembered checkpoints ------------------------------------------------------

def test_a_re_signed_history_without_the_revocation_is_detected_by_clients_that_saw_a_checkpoint(
    ledger_process, net, tmp_path, capsys
):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in [*txs, revocation]:
        assert client.submit(stub, t).valid
    trust = trust_of(net)
    state_file = tmp_path / "client" / "checkpoints.json"
    memory = CheckpointMemory(state_file)
    seen = verify_checkpoint(stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()), trust)
    memory.observe(trust.fingerprint(), seen, consistency_fetcher(stub))
    cli_state = str(tmp_path / "cli-checkpoints.json")
    ledger_process.stop()
    assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--checkpoint-file", cli_state) == 0
    assert "remembered block" in capsys.readouterr().out

    # The operator re-signs a chain without the revocation (plus more traffic, so it is longer).
    extra = [tx(net.records, register_record=record("pat-1", "org-1", f"r-{i}")) for i in range(2, 5)]
    rewrite_history(ledger_process.data_dir, net, txs + extra)
    ledger_process.start()
    stub = ledger_process.stub()
    # On its own the forged chain verifies: that is the attack.
    assert stub.VerifyChain(ledger_pb2.VerifyChainRequest()).ok
    consents = stub.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=0, limit=100))
    assert not any(lt.transaction == revocation for lt in consents.transactions)

    forged = verify_checkpoint(stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()), trust)
    assert forged.tree_size > seen.tree_size
    with pytest.raises(HistoryRewritten, match="ledger history was rewritten"):
        memory.observe(trust.fingerprint(), forged, consistency_fetcher(stub))
    # A client restarted from the state file detects it too; the memory still holds the honest checkpoint.
    with pytest.raises(HistoryRewritten):
        CheckpointMemory(state_file).observe(trust.fingerprint(), forged, consistency_fetcher(stub))
    assert memory.remembered(trust.fingerprint()) == seen

    # The CLI remembered the honest checkpoint: the re-signed copy is reported, exit status 1.
    ledger_process.stop()
    try:
        assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--checkpoint-file", cli_state) == 1
        assert "chain REWRITTEN" in capsys.readouterr().out
    finally:
        ledger_process.start()


def test_a_rolled_back_history_is_detected(ledger_process, net, tmp_path):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in [*txs, revocation]:
        assert client.submit(stub, t).valid
    trust = trust_of(net)
    memory = CheckpointMemory()
    memory.observe(trust.fingerprint(), verify_checkpoint(stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()),
                                                          trust), consistency_fetcher(stub))
    ledger_process.stop()
    rewrite_history(ledger_process.data_dir, net, txs)  # the last transaction, the revocation, cut off
    ledger_process.start()
    stub = ledger_process.stub()
    with pytest.raises(HistoryRewritten, match="rolled back"):
        memory.observe(trust.fingerprint(), verify_checkpoint(
            stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()), trust), consistency_fetcher(stub))


# --- checkpoints published in the audit trail ---------------------------------------------------------

@dataclass
class Audit:
    stub: audit_pb2_grpc.AuditServiceStub
    store: SQLiteAuditStore
    recorder: CheckpointRecorder
    anchorer: LedgerAnchorer
    operator: list[tuple[str, str]]

    def verify(self) -> audit_pb2.VerifyAuditChainResponse:
        return self.stub.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(check_ledger=True),
                                          metadata=self.operator, timeout=TIMEOUT)


@pytest.fixture
def audit(tmp_path, net, ledger_process):
    store = SQLiteAuditStore(tmp_path / "audit")
    as_audit = Caller("svc-audit", Kind.PRINCIPAL_KIND_SERVICE)
    ledger = lambda: ledger_process.stub(as_audit)  # noqa: E731 - follows the restarted ledger
    anchorer = LedgerAnchorer(store, CHAIN, ledger, lambda: net.audit)
    servicer: list[AuditServicer] = []
    recorder = CheckpointRecorder(store, ledger, lambda: trust_of(net), lambda e: servicer[0].report_own(e), 0)
    servicer.append(AuditServicer(Authenticator(TrustBundle({TOKEN_ISSUER_ID: net.identity.public_key_bytes()}),
                                                audience("audit")), store, anchorer=anchorer, checkpoints=recorder))
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_audit(servicer[0]), [servicer[0].close, store.close])
    channel = grpc.insecure_channel(running.address)
    operator = [("authorization", "Bearer " + token(net, Caller("operator", Kind.PRINCIPAL_KIND_OPERATOR),
                                                      "audit"))]
    yield Audit(audit_pb2_grpc.AuditServiceStub(channel), store, recorder, anchorer, operator)
    channel.close()
    running.stop()


def test_checkpoints_in_the_audit_trail_detect_a_re_signed_history(ledger_process, audit, net):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in txs:
        assert client.submit(stub, t).valid
    first = audit.recorder.record_new()
    assert client.submit(stub, revocation).valid
    second = audit.recorder.record_new()
    assert first is not None and second is not None and second.tree_size == first.tree_size + 1
    assert audit.recorder.record_new() is None  # nothing new: nothing recorded
    recorded = [e for e in audit.store.events_after(0, 100)
                if e.event.action == audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT]
    assert [ledger_pb2.Checkpoint.FromString(e.event.ledger_checkpoint).tree_size for e in recorded] == \
        [first.tree_size, second.tree_size]
    verified = audit.verify()
    assert verified.ok and verified.checkpoints_checked == 2, verified.problem

    ledger_process.stop()
    rewrite_history(ledger_process.data_dir, net, txs + [tx(net.records, register_record=record(
        "pat-1", "org-1", "r-2"))])
    ledger_process.start()
    assert ledger_process.stub().VerifyChain(ledger_pb2.VerifyChainRequest()).ok  # the forgery verifies alone
    verified = audit.verify()
    assert not verified.ok
    # The newest recorded checkpoint (after the revocation) is not a prefix of the forged log.
    assert verified.checkpoints_checked == 0 and verified.first_bad_sequence == recorded[1].sequence
    assert "ledger history rewritten" in verified.problem
    # The recorder refuses to publish the forged checkpoint and records the finding once.
    for _ in range(2):
        with pytest.raises(IntegrityError, match="ledger history rewritten"):
            audit.recorder.record_new()
    failed = [e for e in audit.store.events_after(0, 100)
              if e.event.action == audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT
              and e.event.outcome == audit_pb2.AUDIT_OUTCOME_FAILED]
    assert len(failed) == 1 and not failed[0].event.ledger_checkpoint


def test_checkpoints_in_the_audit_trail_detect_a_rolled_back_history(ledger_process, audit, net):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in [*txs, revocation]:
        assert client.submit(stub, t).valid
    assert audit.recorder.record_new() is not None
    ledger_process.stop()
    rewrite_history(ledger_process.data_dir, net, txs)  # cut off after the grant: the revocation is gone
    ledger_process.start()
    verified = audit.verify()
    assert not verified.ok and "ledger history rewritten" in verified.problem
    assert f"has only {len(txs)} transactions" in verified.problem
    with pytest.raises(IntegrityError, match="ledger history rewritten"):
        audit.recorder.record_new()


def test_services_cannot_record_checkpoints_in_the_audit_trail(audit, net):
    records = [("authorization", "Bearer " + token(net, Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE),
                                                     "audit"))]
    forged = audit_pb2.AuditEvent(
        event_id="9b1d7c1e-0000-4000-8000-000000000001", service="records", actor_id="svc-records",
        action=audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        ledger_checkpoint=b"\x08\x01",
    )
    with pytest.raises(grpc.RpcError) as raised:
        audit.stub.RecordEvent(audit_pb2.RecordEventRequest(event=forged), metadata=records, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "event.action" in raised.value.details()


# --- audit anchors checked on the ledger --------------------------------------------------------------

def test_an_event_proof_anchor_is_checked_in_a_certified_block(ledger_process, audit, net, tmp_path):
    stub = ledger_process.stub()
    for t in story(net)[0]:
        assert client.submit(stub, t).valid
    receipt = audit.store.append(audit_pb2.AuditEvent(
        event_id="9b1d7c1e-0000-4000-8000-000000000002", time_ms=1, service="records", actor_id="dr-1",
        patient_id="pat-1", action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        purpose=common_pb2.PURPOSE_OF_USE_TREAT,
    ))
    BatchSealer(audit.store, 100, 3600).seal_due(force=True)
    [batch] = audit.anchorer.anchor_pending()
    operator = audit.operator

    def checked_proof() -> ledger_pb2.AnchorAuditBatch:
        proof = audit.stub.GetEventProof(audit_pb2.GetEventProofRequest(sequence=receipt[0]), metadata=operator,
                                         timeout=TIMEOUT)
        verify_event_proof(proof, receipt[1])
        assert proof.anchored
        expected = ledger_pb2.AnchorAuditBatch(batch_number=proof.batch_number, first_sequence=proof.first_sequence,
                                               last_sequence=proof.last_sequence, merkle_root=proof.batch_root)
        verify_anchor_block(stub, proof.anchor_log_index, trust_of(net), expected)
        # What a patient may read: the anchor's inclusion proof against a co-signed checkpoint.
        verify_anchor_inclusion(ledger_process.stub(Caller("pat-1", Kind.PRINCIPAL_KIND_PATIENT)),
                                proof.anchor_log_index, trust_of(net), expected)
        return expected

    checked_proof()
    # A tampered audit store points the batch at another ledger transaction: the batch proof still holds,
    # the anchor check does not.
    with sqlite3.connect(tmp_path / "audit" / AUDIT_DB_FILE) as conn:
        conn.execute("UPDATE audit_batches SET anchor_log_index = 0 WHERE batch_number = ?", (batch.batch_number,))
    with pytest.raises(IntegrityError, match="not signed by svc-audit"):
        checked_proof()
    with pytest.raises(IntegrityError, match="not signed by svc-audit"):
        verify_anchor_inclusion(stub, 0, trust_of(net), ledger_pb2.AnchorAuditBatch(batch_number=batch.batch_number))


def test_several_validators_a_lagging_answer_is_not_a_rollback_but_a_later_smaller_one_is():
    from carechain.client.proofs import VerifiedCheckpoint

    def log_too_small(first: int, second: int):
        return None  # the answering validator's log does not reach tree size `second`

    memory = CheckpointMemory()
    seen = VerifiedCheckpoint(height=5, tree_size=10, root=b"r" * 32, timestamp_ms=1000, signers=())
    memory.observe("net", seen, log_too_small)
    behind = VerifiedCheckpoint(height=3, tree_size=6, root=b"s" * 32, timestamp_ms=900, signers=())
    memory.observe("net", behind, log_too_small, lagging_ok=True)  # a validator that is behind
    assert memory.remembered("net") == seen
    with pytest.raises(HistoryRewritten, match="rolled back"):
        memory.observe("net", behind, log_too_small)  # one validator: its log never shrinks
    rolled_back = VerifiedCheckpoint(height=6, tree_size=6, root=b"s" * 32, timestamp_ms=2000, signers=())
    with pytest.raises(HistoryRewritten, match="rolled back"):
        memory.observe("net", rolled_back, log_too_small, lagging_ok=True)  # later block, smaller log


def test_an_older_checkpoint_is_accepted_only_with_a_proof_to_the_remembered_one(ledger_process, net):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in txs:
        assert client.submit(stub, t).valid
    trust = trust_of(net)
    older_block = verify_checkpoint(stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest(height=2)), trust)
    memory = CheckpointMemory()
    memory.observe(trust.fingerprint(), verify_checkpoint(stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()),
                                                          trust), consistency_fetcher(stub))
    memory.observe(trust.fingerprint(), older_block, consistency_fetcher(stub))  # e.g. an audit anchor's block
    # A forged older checkpoint (its root not a prefix of the remembered log) is refused.
    from dataclasses import replace

    with pytest.raises(HistoryRewritten):
        memory.observe(trust.fingerprint(), replace(older_block, root=bytes(32)), consistency_fetcher(stub))


def test_cli_verifies_from_the_remembered_checkpoint_and_refuses_a_rewritten_prefix(
    ledger_process, net, tmp_path, capsys
):
    stub = ledger_process.stub()
    txs, revocation = story(net)
    for t in [*txs, revocation]:
        assert client.submit(stub, t).valid
    cli_state = str(tmp_path / "cli-checkpoints.json")
    ledger_process.stop()
    assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--checkpoint-file", cli_state) == 0
    capsys.readouterr()
    ledger_process.start()
    stub = ledger_process.stub()
    assert client.submit(stub, tx(net.records, register_record=record("pat-1", "org-1", "r-9"))).valid
    head = stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header
    ledger_process.stop()
    assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--checkpoint-file", cli_state,
               "--from-checkpoint") == 0
    out = capsys.readouterr().out
    assert "after the remembered checkpoint" in out
    checked = int(out.split("chain OK: ")[1].split(" ")[0])
    assert 1 <= checked < head.height  # only the blocks after the checkpoint

    # A re-signed history without the revocation: the remembered checkpoint's block no longer matches.
    extra = [tx(net.records, register_record=record("pat-1", "org-1", f"r-{i}")) for i in range(2, 5)]
    rewrite_history(ledger_process.data_dir, net, txs + extra)
    try:
        assert cli("ledger", "verify", "--data-dir", str(tmp_path), "--checkpoint-file", cli_state,
                   "--from-checkpoint") == 1
        assert "chain BROKEN" in capsys.readouterr().out
    finally:
        ledger_process.start()
