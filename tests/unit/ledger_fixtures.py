"""Shared helpers for the ledger tests: a small network of keys and transaction builders."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from carechain.common.v1 import common_pb2
from carechain.consent.rules import attest_policy
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import OPERATOR_ID, TrustBundle, service_principal_id
from carechain.ledger import transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.contract import Validator
from carechain.ledger.memory_orderer import SharedOrder
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.state import EmptyState, PendingState
from carechain.ledger.v1 import ledger_pb2

CHAIN = "carechain-test"
Kind = common_pb2.PrincipalKind
# svc-consent's key in every test Net, so sealed_grant can attest policies without a Net at hand.
CONSENT = Ed25519Signer.generate(service_principal_id("consent"))


@dataclass
class Net:
    """Signers of the services and operator, and a trust bundle with their keys."""

    identity: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(service_principal_id("identity")))
    records: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(service_principal_id("records")))
    audit: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(service_principal_id("audit")))
    ledger: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(service_principal_id("ledger")))
    consent: Ed25519Signer = CONSENT
    operator: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(OPERATOR_ID))

    @property
    def signers(self) -> list[Ed25519Signer]:
        return [self.identity, self.records, self.audit, self.ledger, self.consent, self.operator]

    @property
    def trust(self) -> TrustBundle:
        return TrustBundle({s.key_id: s.public_key_bytes() for s in self.signers})


def tx(signer: Ed25519Signer, chain: str = CHAIN, **payload: object) -> ledger_pb2.Transaction:
    """A signed transaction by signer."""
    return transactions.sign_transaction(transactions.new_body(chain, signer.key_id, **payload), signer)


def register(net: Net, principal_id: str, kind: int, organization_id: str = "",
             key: Ed25519Signer | None = None) -> tuple[ledger_pb2.Transaction, Ed25519Signer]:
    """RegisterPrincipal by identity; returns (tx, the principal's signer)."""
    signer = key or Ed25519Signer.generate(principal_id)
    payload = ledger_pb2.RegisterPrincipal(
        principal_id=principal_id, kind=kind, public_key=signer.public_key_bytes(), organization_id=organization_id
    )
    return tx(net.identity, register_principal=payload), signer


def record(patient_id: str, organization_id: str, record_id: str | None = None, **overrides: object):
    """A RegisterRecord payload."""
    fields = {
        "record_id": str(uuid.uuid4()) if record_id is None else record_id,
        "patient_id": patient_id,
        "organization_id": organization_id,
        "sealed_metadata": opaque_sealed(),
        "content_sha256": hashlib.sha256(b"ciphertext").hexdigest(),
        "content_size": 10,
        "key_name": "patient-key",
        "key_version": 1,
        "version": 1,
    }
    fields.update(overrides)
    return ledger_pb2.RegisterRecord(**fields)


def cid(name: str) -> str:
    """A stable consent id (consent ids are UUIDs) for a short test name such as "c-1"."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"carechain-test-consent/{name}"))


def opaque_sealed() -> ledger_pb2.SealedData:
    """A sealed payload as validators see it: they check its shape, never its content (they hold no key)."""
    return ledger_pb2.SealedData(key_name="ledger-metadata", wrapped_key="vault:v1:" + "A" * 64,
                                 ciphertext=hashlib.sha256(uuid.uuid4().bytes).digest() * 8)


def sealed_grant(consent_id: str, patient_id: str, attested_by: Ed25519Signer | None = CONSENT,
                 chain: str = CHAIN) -> ledger_pb2.GrantConsent:
    """A GrantConsent carrying a sealed policy, attested by attested_by (svc-consent's SealPolicy; None: not)."""
    grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient_id, sealed_policy=opaque_sealed())
    if attested_by is not None:
        grant.policy_attestation = attest_policy(attested_by, chain, consent_id, patient_id, grant.sealed_policy)
    return grant


def policy() -> policy_pb2.ConsentPolicy:
    """A one-provision permit policy."""
    return policy_pb2.ConsentPolicy(
        provisions=[
            policy_pb2.Provision(
                type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[common_pb2.PURPOSE_OF_USE_TREAT],
                actors=[policy_pb2.ConsentActor(practitioner_id="dr-1")],
            )
        ]
    )


def grant(patient: Ed25519Signer, consent_id: str = "") -> ledger_pb2.Transaction:
    """GrantConsent by the patient."""
    return tx(patient, grant_consent=sealed_grant(consent_id or cid("c-1"), patient.key_id))


def onboarding(net: Net) -> tuple[list[ledger_pb2.Transaction], dict[str, Ed25519Signer]]:
    """Transactions registering org-1, dr-1 (practitioner) and pat-1 (patient), in order."""
    org, org_key = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    dr, dr_key = register(net, "dr-1", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-1")
    pat, pat_key = register(net, "pat-1", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    return [org, dr, pat], {"org-1": org_key, "dr-1": dr_key, "pat-1": pat_key}


class Chain:
    """A validator over an in-memory state, assigning log indexes."""

    def __init__(self, net: Net) -> None:
        self.validator = Validator(CHAIN, net.trust)
        self.block_time_ms: int | None = None  # None = now: the time a block cut now would carry
        self.state = PendingState(EmptyState())
        self.next_index = 0

    def apply(self, transaction: ledger_pb2.Transaction) -> ledger_pb2.TransactionResult:
        block_time_ms = self.block_time_ms if self.block_time_ms is not None else int(time.time() * 1000)
        result = self.validator.apply(transaction, self.state, self.next_index, block_time_ms=block_time_ms)
        self.next_index += 1
        return result

    def ok(self, transaction: ledger_pb2.Transaction) -> None:
        result = self.apply(transaction)
        assert result.valid, result.reason
        assert result.reason == ""

    def rejects(self, transaction: ledger_pb2.Transaction, reason: str) -> str:
        result = self.apply(transaction)
        assert not result.valid
        assert reason in result.reason
        return result.reason


TIMEOUT = 20


def open_ledger(tmp_path, net: Net, **kwargs) -> Ledger:
    """One validator (quorum 1) under tmp_path/ledger, cutting blocks after 1 ms unless told otherwise."""
    kwargs.setdefault("block_max_wait_ms", 1)
    return Ledger.open(tmp_path / "ledger", CHAIN, net.ledger, net.trust, **kwargs)


def header(ledger: Ledger, height: int) -> ledger_pb2.BlockHeader:
    """The decoded header of the block at height."""
    return ledger_pb2.BlockHeader.FromString(ledger.block(height).header)


# Named apart from their fixture names so test modules can import them without shadowing (ruff F811).
@pytest.fixture(name="net")
def net_fixture() -> Net:
    """Fresh service and operator keys."""
    return Net()


@pytest.fixture(name="chain")
def chain_fixture(net: Net) -> Chain:
    """A validator over an empty in-memory state."""
    return Chain(net)


@pytest.fixture(name="ledger")
def ledger_fixture(tmp_path, net: Net) -> Iterator[Ledger]:
    """An open single-validator ledger, closed after the test."""
    instance = open_ledger(tmp_path, net)
    yield instance
    instance.close()


class Validators:
    """Keys of N validators and a trust bundle holding them next to the services'."""

    def __init__(self, count: int, quorum_size: int = 0) -> None:
        self.net = Net()
        self.signers = [Ed25519Signer.generate(f"validator-{i}") for i in range(1, count + 1)]
        self.set = ValidatorSet.of([s.key_id for s in self.signers], quorum_size)
        self.trust = TrustBundle({**self.net.trust.keys, **{s.key_id: s.public_key_bytes() for s in self.signers}})
        self.order = SharedOrder()

    def open(self, tmp_path, index: int, **kwargs) -> Ledger:
        kwargs.setdefault("block_max_wait_ms", 2)
        return Ledger.open(tmp_path / f"v{index}", CHAIN, self.signers[index], self.trust, orderer=self.order,
                           validators=self.set, finality_poll_seconds=0.005, **kwargs)



def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
