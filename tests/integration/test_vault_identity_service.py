"""The identity service end to end on OpenBao: registry in KV v2, keys and signing in Transit.

build() picks everything from settings (key_backend=vault, signing_backend=vault,
AppRole login as carechain-identity); callers log in with real challenges, the
consent decision tokens are signed by svc-consent's Transit key.
"""

from __future__ import annotations

import pathlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from servers_openbao import Bootstrapped, identity_settings_on_vault, root_client

from carechain.client.auth import token_request_message
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer, Signer
from carechain.core.decision_claims import DecisionClaims, issue_decision_token
from carechain.core.layout import DECISION_ISSUER_ID, OPERATOR_ID, TOKEN_ISSUER_ID, audience, write_public_key
from carechain.identity.server import build
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.server import start_service
from carechain.runtime.vault import VaultTransitSigner, vault_client

pytest_plugins = ["servers_openbao"]

Kind = common_pb2.PrincipalKind


@dataclass
class RecordingLedger:
    """Accepts transactions the identity service signed (with its Transit key)."""

    identity_key: bytes
    committed: list[ledger_pb2.TransactionBody] = field(default_factory=list)

    # LedgerService.SubmitTransaction, called like a stub method.
    def SubmitTransaction(self, request: ledger_pb2.SubmitTransactionRequest, **_: object):
        tx = request.transaction
        assert transactions.signature_valid(tx, self.identity_key)
        self.committed.append(transactions.decode_body(tx))
        return ledger_pb2.SubmitTransactionResponse(valid=True, log_index=len(self.committed) - 1)


@dataclass
class VaultIdentity:
    stub: identity_pb2_grpc.IdentityServiceStub
    operator: Ed25519Signer
    records: Signer
    consent: Signer
    ledger: RecordingLedger
    data_dir: pathlib.Path
    boot: Bootstrapped


@pytest.fixture
def net(openbao_bootstrapped: Bootstrapped, tmp_path: pathlib.Path) -> Iterator[VaultIdentity]:
    boot = openbao_bootstrapped
    trust_dir = tmp_path / "trust"
    shutil.copytree(boot.options.trust_dir, trust_dir)  # type: ignore[arg-type]
    operator = Ed25519Signer.generate(OPERATOR_ID)
    write_public_key(trust_dir / f"{OPERATOR_ID}.pub", operator.public_key_bytes())
    ledger = RecordingLedger(boot.result.public_keys[TOKEN_ISSUER_ID])
    settings = identity_settings_on_vault(boot, tmp_path / "identity", trust_dir)

    register, closers = build(settings, ledger=ledger)
    running = start_service("identity", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    records = VaultTransitSigner(vault_client(boot.settings("records")), "svc-records")
    consent = VaultTransitSigner(vault_client(boot.settings("consent")), DECISION_ISSUER_ID)
    try:
        yield VaultIdentity(identity_pb2_grpc.IdentityServiceStub(channel), operator, records, consent, ledger,
                            tmp_path / "identity", boot)
    finally:
        channel.close()
        running.stop()


def _login(stub: identity_pb2_grpc.IdentityServiceStub, signer: Signer, service: str) -> list[tuple[str, str]]:
    aud = audience(service)
    challenge = stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id=signer.key_id)).challenge
    token = stub.IssueToken(identity_pb2.IssueTokenRequest(
        principal_id=signer.key_id, challenge=challenge, audience=aud,
        signature=signer.sign(token_request_message(aud, challenge)),
    )).token
    return [("authorization", f"Bearer {token}")]


def _register(net: VaultIdentity, as_: list[tuple[str, str]], kind: int, **fields: str) -> tuple[Ed25519Signer, str]:
    key = Ed25519Signer.generate("pending")
    principal = net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
        kind=kind, display_name="Someone", public_key=key.public_key_bytes(), **fields), metadata=as_)
    return key.with_key_id(principal.principal_id), principal.principal_id


def _decision(net: VaultIdentity, record_id: str, patient_id: str) -> str:
    claims = DecisionClaims("prac-x", record_id, patient_id, common_pb2.PURPOSE_OF_USE_TREAT,
                            common_pb2.CONSENT_ACTION_ACCESS, consent_id="consent-1")
    return issue_decision_token(net.consent, claims, 30)[0]


def test_register_token_data_key_release_and_rotate_through_openbao(net: VaultIdentity) -> None:
    stub = net.stub
    operator = _login(stub, net.operator, "identity")
    org_key, org_id = _register(net, operator, Kind.PRINCIPAL_KIND_ORGANIZATION)
    as_org = _login(stub, org_key, "identity")
    fhir_id = f"pat-{uuid.uuid4().hex[:8]}"
    patient_key, patient_id = _register(net, as_org, Kind.PRINCIPAL_KIND_PATIENT, fhir_patient_id=fhir_id)
    as_records = _login(stub, net.records, "identity")

    # Registry in KV: the patient is there with the FHIR id only identity knows.
    got = stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=patient_id), metadata=as_org)
    assert got.fhir_patient_id == fhir_id and got.organization_id == org_id

    keys = {}
    for record_id in (f"rec-{uuid.uuid4().hex[:8]}", f"rec-{uuid.uuid4().hex[:8]}"):
        data_key = stub.GenerateDataKey(identity_pb2.GenerateDataKeyRequest(patient_id=patient_id, record_id=record_id),
                                        metadata=as_records)
        assert data_key.key_ref.key_version == 1 and len(data_key.plaintext_key) == 32
        keys[record_id] = data_key.plaintext_key
    first_record = sorted(keys)[0]

    decision = _decision(net, first_record, patient_id)
    released = stub.ReleaseDataKey(identity_pb2.ReleaseDataKeyRequest(record_id=first_record, decision_token=decision),
                                   metadata=as_records)
    assert released.plaintext_key == keys[first_record]
    with pytest.raises(grpc.RpcError) as replayed:
        stub.ReleaseDataKey(identity_pb2.ReleaseDataKeyRequest(record_id=first_record, decision_token=decision),
                            metadata=as_records)
    assert replayed.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]

    as_patient = _login(stub, patient_key, "identity")
    rotated = stub.RotatePatientKey(identity_pb2.RotatePatientKeyRequest(patient_id=patient_id), metadata=as_patient)
    assert (rotated.key_version, rotated.rewrapped) == (2, 2)

    root = root_client(net.boot.server)
    transit_key = root.secrets.transit.read_key(f"patient-{patient_id}")["data"]
    assert transit_key["min_decryption_version"] == 2 and transit_key["exportable"] is False
    for record_id, plaintext in keys.items():
        stored = root.secrets.kv.v2.read_secret_version(f"identity/datakeys/{record_id}", mount_point="carechain",
                                                        raise_on_deleted_version=False)["data"]["data"]
        assert stored["key_version"] == 2 and stored["wrapped"].startswith("vault:v2:")
        again = stub.ReleaseDataKey(identity_pb2.ReleaseDataKeyRequest(
            record_id=record_id, decision_token=_decision(net, record_id, patient_id)), metadata=as_records)
        assert again.plaintext_key == plaintext, "re-wrapping must not change the data key"

    kinds = [body.WhichOneof("payload") for body in net.ledger.committed]
    assert kinds == ["register_principal", "register_principal", "key_rotation"]
    assert not net.data_dir.exists() or not any(net.data_dir.iterdir()), "identity on Vault keeps nothing on disk"


def test_token_issuer_key_is_the_transit_key(net: VaultIdentity) -> None:
    keys = net.stub.GetTokenIssuerKeys(identity_pb2.GetTokenIssuerKeysRequest()).keys
    assert [(k.key_id, k.public_key) for k in keys] == [
        (TOKEN_ISSUER_ID, net.boot.result.public_keys[TOKEN_ISSUER_ID])
    ]
