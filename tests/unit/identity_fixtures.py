"""The in-process identity service with a fake ledger: fixtures shared by the identity tests."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from carechain.client.auth import token_request_message
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import DecisionClaims
from carechain.core.errors import Unavailable
from carechain.core.layout import (
    DECISION_ISSUER_ID,
    OPERATOR_ID,
    TOKEN_ISSUER_ID,
    TrustBundle,
    audience,
)
from carechain.core.tokens import ACCESS_TOKEN_TYPE, DECISION_TOKEN_TYPE, issue_token
from carechain.identity.server import IdentityServicer, register_identity
from carechain.identity.sqlite_registry import Registry
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger import transactions
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import IdentitySettings
from carechain.runtime.keyring import LocalKeyring
from carechain.runtime.server import start_service

Kind = common_pb2.PrincipalKind
Code = grpc.StatusCode
# The SMART token endpoint URL client assertions must name as aud.
SMART_TOKEN_URL = "https://fhir.hospital.test/token"


@dataclass
class FakeLedger:
    """Accepts transactions signed by the identity service, or rejects them on demand."""

    identity_key: bytes
    committed: list[ledger_pb2.Transaction] = field(default_factory=list)
    reject: bool = False

    # LedgerService.SubmitTransaction, called like a stub method.
    def SubmitTransaction(self, request: ledger_pb2.SubmitTransactionRequest, **_: object):
        tx = request.transaction
        assert transactions.signature_valid(tx, self.identity_key), "identity must sign its transactions"
        transactions.decode_body(tx)
        if self.reject:
            return ledger_pb2.SubmitTransactionResponse(valid=False, reason=f"{NOT_PERMITTED}validator says no")
        self.committed.append(tx)
        return ledger_pb2.SubmitTransactionResponse(valid=True, log_index=len(self.committed) - 1)

    def bodies(self) -> list[ledger_pb2.TransactionBody]:
        return [transactions.decode_body(tx) for tx in self.committed]


class Clock:
    """A clock the test moves by hand (challenge expiry)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingKeyring(LocalKeyring):
    """The embedded keyring, counting key creations (one per patient, not one per record)."""

    def __init__(self, directory: pathlib.Path) -> None:
        super().__init__(directory)
        self.creates: list[str] = []
        self.down = False  # True: creations fail as if the key manager were unreachable

    def create_key(self, name: str):  # type: ignore[no-untyped-def]
        self.creates.append(name)
        if self.down:
            raise Unavailable("keyring", "down for the test")
        return super().create_key(name)


@dataclass
class Revocations:
    """Consent's answer to identity's CheckDecision: the decision tokens revoked since they were issued."""

    revoked: set[str] = field(default_factory=set)
    batches: list[int] = field(default_factory=list)  # tokens per many() call (consent's CheckDecisions)

    def check(self, decision_token: str) -> tuple[bool, str]:
        if decision_token in self.revoked:
            return False, "consent revoked: consent consent-1 was revoked at log index 9"
        return True, ""

    __call__ = check  # identity calls it as its CheckDecision

    def many(self, decision_tokens: list[str]) -> list[tuple[bool, str]]:
        self.batches.append(len(decision_tokens))
        return [self.check(token) for token in decision_tokens]


@dataclass
class Network:
    stub: identity_pb2_grpc.IdentityServiceStub
    identity: Ed25519Signer
    operator: Ed25519Signer
    consent: Ed25519Signer
    ledger: FakeLedger
    clock: Clock
    keyring: CountingKeyring | None = None
    revocations: Revocations = field(default_factory=Revocations)

    def token_for(self, caller: Caller, ttl: float = 60, signer: Ed25519Signer | None = None,
                  aud: str = audience("identity")) -> str:
        return issue_token(signer or self.identity, ACCESS_TOKEN_TYPE, caller_claims(caller, aud), ttl)[0]

    def as_(self, caller: Caller) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token_for(caller)}")]


OPERATOR = Caller(OPERATOR_ID, Kind.PRINCIPAL_KIND_OPERATOR)
RECORDS = Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE)
CONSENT = Caller("svc-consent", Kind.PRINCIPAL_KIND_SERVICE)


@pytest.fixture
def net(tmp_path: pathlib.Path) -> Iterator[Network]:
    identity = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    operator = Ed25519Signer.generate(OPERATOR_ID)
    consent = Ed25519Signer.generate(DECISION_ISSUER_ID)
    trust = TrustBundle({
        TOKEN_ISSUER_ID: identity.public_key_bytes(),
        OPERATOR_ID: operator.public_key_bytes(),
        DECISION_ISSUER_ID: consent.public_key_bytes(),
        "svc-records": Ed25519Signer.generate("svc-records").public_key_bytes(),
    })
    ledger = FakeLedger(identity.public_key_bytes())
    clock = Clock()
    registry = Registry(tmp_path / "identity")
    keyring = CountingKeyring(tmp_path / "identity" / "keyring")
    revocations = Revocations()
    settings = IdentitySettings(listen_address="127.0.0.1:0", data_dir=tmp_path / "identity", chain_id="test-chain",
                                max_workers=4, shutdown_grace_seconds=0)
    servicer = IdentityServicer(
        signer=identity, trust=trust, registry=registry, keys=keyring, ledger=ledger,
        chain_id="test-chain", token_ttl_seconds=60, challenge_ttl_seconds=30, clock=clock,
        check_decision=revocations, smart_token_url=SMART_TOKEN_URL,
    )

    running = start_service("identity", settings, register_identity(servicer), [registry.close, keyring.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield Network(identity_pb2_grpc.IdentityServiceStub(channel), identity, operator, consent, ledger, clock,
                      keyring, revocations)
    finally:
        channel.close()
        running.stop()


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()  # type: ignore[attr-defined]


def _details(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return excinfo.value.details()  # type: ignore[attr-defined]


def login(stub: identity_pb2_grpc.IdentityServiceStub, signer: Ed25519Signer, aud: str = audience("records"),
          principal_id: str | None = None) -> identity_pb2.AccessToken:
    principal_id = principal_id or signer.key_id
    challenge = stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id=principal_id)).challenge
    return stub.IssueToken(identity_pb2.IssueTokenRequest(
        principal_id=principal_id, challenge=challenge, audience=aud,
        signature=signer.sign(token_request_message(aud, challenge)),
    ))


def register_org(net: Network, name: str = "St. Elsewhere") -> tuple[Ed25519Signer, Caller]:
    key = Ed25519Signer.generate("pending")
    org = net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
        kind=Kind.PRINCIPAL_KIND_ORGANIZATION, display_name=name, public_key=key.public_key_bytes(),
    ), metadata=net.as_(OPERATOR))
    return Ed25519Signer(org.principal_id, key._private_key), Caller(org.principal_id, Kind.PRINCIPAL_KIND_ORGANIZATION,
                                                                     org.principal_id)


def register_patient(net: Network, org: Caller, fhir_id: str = "pat-1") -> tuple[Ed25519Signer, identity_pb2.Principal]:
    key = Ed25519Signer.generate("pending")
    patient = net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
        kind=Kind.PRINCIPAL_KIND_PATIENT, display_name="Jane Doe", public_key=key.public_key_bytes(),
        fhir_patient_id=fhir_id,
    ), metadata=net.as_(org))
    return Ed25519Signer(patient.principal_id, key._private_key), patient


def register_practitioner(net: Network, org: Caller, specialty: str = "oncology") -> Ed25519Signer:
    key = Ed25519Signer.generate("pending")
    prac = net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
        kind=Kind.PRINCIPAL_KIND_PRACTITIONER, display_name="Dr. Who", public_key=key.public_key_bytes(),
        specialty=specialty,
    ), metadata=net.as_(org))
    return Ed25519Signer(prac.principal_id, key._private_key)


def patient_caller(principal: identity_pb2.Principal) -> Caller:
    return Caller(principal.principal_id, Kind.PRINCIPAL_KIND_PATIENT, principal.organization_id)


def decision_token(net: Network, record_id: str, patient_id: str, ttl: float = 30,
                   signer: Ed25519Signer | None = None, aud: str = audience("identity")) -> str:
    claims = DecisionClaims("prac-x", record_id, patient_id, common_pb2.PURPOSE_OF_USE_TREAT,
                            common_pb2.CONSENT_ACTION_ACCESS, consent_id="consent-1").to_claims()
    return issue_token(signer or net.consent, DECISION_TOKEN_TYPE, {**claims, "aud": aud}, ttl)[0]
