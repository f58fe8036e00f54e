"""A lying validator cannot create a permit: consent verifies what it reads from the ledger.

The consent service runs for real (in-process gRPC, VerifiedLedgerReader as in
production) against a ledger *server* that serves blocks the test forges: a
GrantConsent not signed by the patient, one signed by someone who may not
grant, or a block without a quorum certificate of the configured validators.
Each case has a control with the same chain made honestly, which permits, so
the denial is caused by the verification and nothing else.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from ledger_fixtures import CHAIN, Kind, Net, register, tx

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.rules import attest_policy
from carechain.consent.server import ConsentServicer, register_consent
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core import merkle
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.reader import VerifiedLedgerReader
from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import ConsentSettings
from carechain.runtime.keyring import LocalKeyring
from carechain.runtime.server import start_service

TREAT = c.PURPOSE_OF_USE_TREAT
PERMIT = consent_pb2.DECISION_EFFECT_PERMIT


@dataclass
class ForgedChain:
    """Blocks as a (possibly lying) validator serves them; the test decides every byte."""

    blocks: list[ledger_pb2.Block] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)

    def add(self, txs: list[ledger_pb2.Transaction], signers: list[Ed25519Signer],
            results: list[ledger_pb2.TransactionResult] | None = None, certify: bool = True) -> ledger_pb2.Block:
        """Append a block of txs (all marked valid unless results say otherwise), certified by signers
        (certify=False: signed, but served without a certificate, like a block not final yet)."""
        results = results or [ledger_pb2.TransactionResult(valid=True) for _ in txs]
        previous = blocks.header_hash(self.blocks[-1].header) if self.blocks else blocks.GENESIS_PREVIOUS_HASH
        leaves = [merkle.leaf_hash(transactions.encode(t)) for t in txs]
        self.leaves.extend(leaves)
        header = transactions.encode(ledger_pb2.BlockHeader(
            chain_id=CHAIN, height=len(self.blocks), previous_header_hash=previous,
            transactions_root=merkle.root(leaves), results_hash=blocks.results_hash(results),
            log_size=len(self.leaves), log_root=merkle.root(self.leaves), timestamp_ms=int(time.time() * 1000),
        ))
        signatures = [quorum.sign_header(s, header) for s in signers]
        block = ledger_pb2.Block(header=header, transactions=txs, results=results, signatures=signatures[:1])
        if certify:
            block.certificate.CopyFrom(quorum.build_certificate(len(self.blocks), header, signatures))
        self.blocks.append(block)
        return block


class LyingLedger(ledger_pb2_grpc.LedgerServiceServicer):
    """A ledger server answering GetChainHead / GetBlock from a ForgedChain."""

    def __init__(self, chain: ForgedChain) -> None:
        self.chain = chain

    def GetChainHead(self, request, context):  # noqa: N802
        last = self.chain.blocks[-1]
        return ledger_pb2.ChainHead(header=ledger_pb2.BlockHeader.FromString(last.header),
                                    header_hash=blocks.header_hash(last.header))

    def GetBlock(self, request, context):  # noqa: N802
        if request.height >= len(self.chain.blocks):
            context.abort(grpc.StatusCode.NOT_FOUND, "no such block")
        return self.chain.blocks[request.height]


@dataclass
class World:
    net: Net
    validators: list[Ed25519Signer]
    patient: Ed25519Signer
    doctor: Ed25519Signer
    sealer: LedgerSealer
    chain: ForgedChain

    def grant(self, signer: Ed25519Signer, consent_id: str = "9f7a3c2e-0000-4000-8000-000000000001"
              ) -> ledger_pb2.Transaction:
        """A GrantConsent for pat-1 permitting dr-1 to treat, with a validly sealed policy, signed by signer
        (a key claiming signer.key_id)."""
        policy = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
            type=policy_pb2.PROVISION_TYPE_PERMIT, actors=[policy_pb2.ConsentActor(practitioner_id="dr-1")],
            purposes=[TREAT])])
        grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id="pat-1",
                                        sealed_policy=self.sealer.seal_policy(consent_id, "pat-1", policy))
        # As SealPolicy answers: svc-consent attests the sealed policy it checked.
        grant.policy_attestation = attest_policy(self.net.consent, CHAIN, consent_id, "pat-1", grant.sealed_policy)
        return transactions.sign_transaction(transactions.new_body(CHAIN, signer.key_id, grant_consent=grant), signer)


def build_world(tmp_path: pathlib.Path, validator_count: int) -> World:
    net = Net()
    validators = [net.ledger] if validator_count == 1 else [
        Ed25519Signer.generate(f"validator-{i}") for i in range(1, validator_count + 1)]
    keyring = LocalKeyring(tmp_path / "metadata-key")
    keyring.create_key(LEDGER_METADATA_KEY)
    sealer = LedgerSealer(keyring, CHAIN)
    org, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    dr, doctor = register(net, "dr-1", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-1")
    pat, patient = register(net, "pat-1", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="pat-1", organization_id="org-1",
                                       content_sha256="ab" * 32, content_size=10,
                                       key_name="patient-key", key_version=1, version=1)
    record.sealed_metadata.CopyFrom(sealer.seal_record(
        record, ledger_pb2.RecordMetadata(resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL])))
    chain = ForgedChain()
    chain.add([org, dr, pat, tx(net.records, register_record=record)], validators)
    return World(net, validators, patient, doctor, sealer, chain)


@pytest.fixture()
def consent_over(tmp_path: pathlib.Path) -> Iterator:
    """consent_over(world, quorum) -> a Decide function of a consent service reading world's lying ledger."""
    started = []

    def start(world: World, quorum_size: int):
        # The attacker's own server: plain gRPC, none of CareChain's server code (access checks) in front of it.
        ledger_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(LyingLedger(world.chain), ledger_server)
        ledger_port = ledger_server.add_insecure_port("127.0.0.1:0")
        ledger_server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{ledger_port}")
        started.append((_Stoppable(ledger_server), channel))
        trust = TrustBundle({**world.net.trust.keys, **{v.key_id: v.public_key_bytes() for v in world.validators}})
        reader = VerifiedLedgerReader(ledger_pb2_grpc.LedgerServiceStub(channel), CHAIN, trust,
                                      quorum.ValidatorSet.of([v.key_id for v in world.validators], quorum_size))
        stub_audit = _Audit()
        servicer = ConsentServicer(
            Authenticator(trust, audience("consent")), ConsentState(world.sealer), None,
            AuditReporter(stub_audit, "consent"), world.net.consent, 30.0, chain_id=CHAIN,
            read_transactions=reader.list_transactions,
        )
        consent_server = start_service("consent", ConsentSettings(listen_address="127.0.0.1:0"),
                                       register_consent(servicer))
        consent_channel = grpc.insecure_channel(consent_server.address)
        started.append((consent_server, consent_channel))
        stub = consent_pb2_grpc.ConsentServiceStub(consent_channel)
        bearer, _ = issue_token(world.net.identity, ACCESS_TOKEN_TYPE,
                                caller_claims(Caller("svc-records", c.PRINCIPAL_KIND_SERVICE), audience("consent")), 60)

        def decide() -> consent_pb2.Decision:
            return stub.Decide(consent_pb2.DecideRequest(actor_id="dr-1", record_id="rec-1", purpose=TREAT),
                               metadata=[("authorization", f"Bearer {bearer}")], timeout=10)

        return decide

    yield start
    for server, channel in reversed(started):
        channel.close()
        server.stop()


class _Audit:
    def RecordEvent(self, request: audit_pb2.RecordEventRequest, **_: object) -> audit_pb2.AuditReceipt:
        return audit_pb2.AuditReceipt(sequence=1, event_hash=bytes(32))


class _Stoppable:
    """A plain grpc.Server with the stop() of a started CareChain service."""

    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.stop(0).wait()


def _denied_or_refused(decide) -> str:
    """Decide's outcome when the ledger lied: a denial, or DATA_LOSS naming the failed check."""
    try:
        decision = decide()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DATA_LOSS, exc
        return exc.details()
    assert decision.effect != PERMIT, decision
    return decision.reason


# --- one validator: its own certificate is worthless against a forged patient signature ---


def test_control_a_grant_signed_by_the_patient_permits(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 1)
    world.chain.add([world.grant(world.patient)], world.validators)
    assert consent_over(world, 1)().effect == PERMIT


def test_a_grant_not_signed_by_the_patient_creates_no_permit(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 1)
    forger = Ed25519Signer.generate("pat-1")  # a key the validator made up, not the patient's registered one
    world.chain.add([world.grant(forger)], world.validators)  # marked valid and certified by the liar

    problem = _denied_or_refused(consent_over(world, 1))
    assert "block 1" in problem and "re-checking its signature" in problem


def test_a_grant_signed_by_someone_who_may_not_grant_creates_no_permit(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 1)
    world.chain.add([world.grant(world.doctor)], world.validators)  # a real signature, by the wrong principal

    assert "re-checking" in _denied_or_refused(consent_over(world, 1))


def test_a_block_that_does_not_match_its_header_creates_no_permit(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 1)
    block = world.chain.add([world.grant(Ed25519Signer.generate("pat-1"))], world.validators)
    block.transactions[0].CopyFrom(world.grant(world.patient, "9f7a3c2e-0000-4000-8000-000000000002"))

    assert "transactions_root" in _denied_or_refused(consent_over(world, 1))


# --- three validators, quorum 2: one lying validator cannot certify a block alone ---


def test_control_a_block_certified_by_a_quorum_permits(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 3)
    world.chain.add([world.grant(world.patient)], world.validators[:2])
    assert consent_over(world, 2)().effect == PERMIT


def test_a_block_certified_by_one_validator_only_creates_no_permit(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 3)
    world.chain.add([world.grant(world.patient)], world.validators[:1])  # the liar's certificate, alone

    assert "quorum is 2" in _denied_or_refused(consent_over(world, 2))


def test_a_block_without_a_certificate_is_held_back_until_one_arrives(tmp_path: pathlib.Path, consent_over) -> None:
    world = build_world(tmp_path, 3)
    block = world.chain.add([world.grant(world.patient)], world.validators[:1], certify=False)
    decide = consent_over(world, 2)

    assert decide().effect != PERMIT  # structurally fine, but not final: not applied
    block.certificate.CopyFrom(quorum.build_certificate(1, block.header, [
        quorum.sign_header(v, block.header) for v in world.validators[1:]]))
    assert decide().effect == PERMIT  # the same block, now certified by a quorum


def test_a_certificate_by_keys_outside_the_configured_set_creates_no_permit(tmp_path: pathlib.Path,
                                                                            consent_over) -> None:
    world = build_world(tmp_path, 3)
    # The liar invents a second validator with the same id as a real one, and signs with both.
    impostor = Ed25519Signer.generate(world.validators[1].key_id)
    world.chain.add([world.grant(world.patient)], [world.validators[0], impostor])

    assert "signature of validator-2 is invalid" in _denied_or_refused(consent_over(world, 2))
