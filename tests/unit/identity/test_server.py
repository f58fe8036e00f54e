"""The identity service through a real in-process gRPC server, with a fake ledger."""

from __future__ import annotations

import pathlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from carechain.client.auth import token_request_message
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import PermissionDenied
from carechain.core.layout import (
    DECISION_ISSUER_ID,
    OPERATOR_ID,
    TOKEN_ISSUER_ID,
    NetworkLayout,
    TrustBundle,
    audience,
)
from carechain.core.tokens import ACCESS_TOKEN_TYPE, DECISION_TOKEN_TYPE, issue_token, verify_token
from carechain.identity.registry import Registry
from carechain.identity.server import IdentityServicer, build, local_token_source, register_identity
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import IdentitySettings
from carechain.runtime.keyring import LocalKeyring
from carechain.runtime.server import start_service

Kind = common_pb2.PrincipalKind
Code = grpc.StatusCode


@dataclass
class FakeLedger:
    """Accepts transactions signed by the identity service, or rejects them on demand."""

    identity_key: bytes
    committed: list[ledger_pb2.Transaction] = field(default_factory=list)
    reject: bool = False

    def __call__(self, tx: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
        assert transactions.signature_valid(tx, self.identity_key), "identity must sign its transactions"
        transactions.decode_body(tx)
        if self.reject:
            raise PermissionDenied("validator: transaction invalid")
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


@dataclass
class Network:
    stub: identity_pb2_grpc.IdentityServiceStub
    identity: Ed25519Signer
    operator: Ed25519Signer
    consent: Ed25519Signer
    ledger: FakeLedger
    clock: Clock

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
    keyring = LocalKeyring(tmp_path / "identity" / "keyring")
    settings = IdentitySettings(listen_address="127.0.0.1:0", data_dir=tmp_path / "identity", chain_id="test-chain",
                                max_workers=4, shutdown_grace_seconds=0)
    servicer = IdentityServicer(
        signer=identity, trust=trust, registry=registry, keys=keyring, submit_transaction=ledger,
        chain_id="test-chain", token_ttl_seconds=60, challenge_ttl_seconds=30, clock=clock,
    )

    running = start_service("identity", settings, register_identity(servicer), [registry.close, keyring.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield Network(identity_pb2_grpc.IdentityServiceStub(channel), identity, operator, consent, ledger, clock)
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
    claims = {"sub": "prac-x", "aud": aud, "rid": record_id, "psn": patient_id, "pou": "TREAT", "cid": "consent-1"}
    return issue_token(signer or net.consent, DECISION_TOKEN_TYPE, claims, ttl)[0]


# --- tokens --------------------------------------------------------------------


def test_registered_practitioner_gets_a_token_for_a_service(net: Network) -> None:
    _, org = register_org(net)
    practitioner = register_practitioner(net, org, "psychiatry")

    token = login(net.stub, practitioner, audience("records"))

    claims = verify_token(token.token, {TOKEN_ISSUER_ID: net.identity.public_key_bytes()}, ACCESS_TOKEN_TYPE,
                          audience("records"))
    assert claims["sub"] == practitioner.key_id
    assert claims["kind"] == "PRINCIPAL_KIND_PRACTITIONER"
    assert claims["org"] == org.principal_id
    assert claims["spec"] == "psychiatry"
    assert token.expires_at_ms > 0


def test_organisation_token_names_itself_as_organisation(net: Network) -> None:
    org_signer, org = register_org(net)
    token = login(net.stub, org_signer, audience("records")).token
    claims = verify_token(token, {TOKEN_ISSUER_ID: net.identity.public_key_bytes()}, ACCESS_TOKEN_TYPE,
                          audience("records"))
    assert claims["kind"] == "PRINCIPAL_KIND_ORGANIZATION" and claims["org"] == org.principal_id


def test_operator_and_services_from_the_trust_bundle_get_tokens(net: Network) -> None:
    operator = login(net.stub, net.operator, audience("identity")).token
    claims = verify_token(operator, {TOKEN_ISSUER_ID: net.identity.public_key_bytes()}, ACCESS_TOKEN_TYPE,
                          audience("identity"))
    assert claims["kind"] == "PRINCIPAL_KIND_OPERATOR"

    consent = login(net.stub, net.consent, audience("ledger")).token
    claims = verify_token(consent, {TOKEN_ISSUER_ID: net.identity.public_key_bytes()}, ACCESS_TOKEN_TYPE,
                          audience("ledger"))
    assert claims["kind"] == "PRINCIPAL_KIND_SERVICE" and claims["sub"] == DECISION_ISSUER_ID


def test_forged_signature_and_unknown_principal_look_the_same(net: Network) -> None:
    _, org = register_org(net)
    practitioner = register_practitioner(net, org)
    impostor = Ed25519Signer(practitioner.key_id, Ed25519Signer.generate("x")._private_key)

    with pytest.raises(grpc.RpcError) as forged:
        login(net.stub, impostor)
    with pytest.raises(grpc.RpcError) as unknown:
        login(net.stub, Ed25519Signer.generate("prac-does-not-exist"))

    assert _code(forged) == _code(unknown) == Code.UNAUTHENTICATED
    assert _details(forged) == _details(unknown)


def test_challenge_is_single_use(net: Network) -> None:
    aud = audience("records")
    challenge = net.stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id=OPERATOR_ID)).challenge
    request = identity_pb2.IssueTokenRequest(principal_id=OPERATOR_ID, challenge=challenge, audience=aud,
                                             signature=net.operator.sign(token_request_message(aud, challenge)))
    net.stub.IssueToken(request)

    with pytest.raises(grpc.RpcError) as reused:
        net.stub.IssueToken(request)
    assert _code(reused) == Code.UNAUTHENTICATED
    assert "challenge" in _details(reused)


def test_expired_challenge_is_refused(net: Network) -> None:
    aud = audience("records")
    challenge = net.stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id=OPERATOR_ID))
    net.clock.now += 31

    with pytest.raises(grpc.RpcError) as expired:
        net.stub.IssueToken(identity_pb2.IssueTokenRequest(
            principal_id=OPERATOR_ID, challenge=challenge.challenge, audience=aud,
            signature=net.operator.sign(token_request_message(aud, challenge.challenge))))
    assert _code(expired) == Code.UNAUTHENTICATED


def test_challenge_of_another_principal_is_refused(net: Network) -> None:
    aud = audience("records")
    challenge = net.stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id="svc-records")).challenge
    with pytest.raises(grpc.RpcError) as stolen:
        net.stub.IssueToken(identity_pb2.IssueTokenRequest(
            principal_id=OPERATOR_ID, challenge=challenge, audience=aud,
            signature=net.operator.sign(token_request_message(aud, challenge))))
    assert _code(stolen) == Code.UNAUTHENTICATED


def test_token_for_an_unknown_audience_is_refused(net: Network) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        login(net.stub, net.operator, "carechain.nowhere")
    assert _code(bad) == Code.INVALID_ARGUMENT
    assert _details(bad).startswith("audience:")


def test_signature_for_another_audience_is_refused(net: Network) -> None:
    challenge = net.stub.CreateChallenge(identity_pb2.CreateChallengeRequest(principal_id=OPERATOR_ID)).challenge
    with pytest.raises(grpc.RpcError) as bad:
        net.stub.IssueToken(identity_pb2.IssueTokenRequest(
            principal_id=OPERATOR_ID, challenge=challenge, audience=audience("ledger"),
            signature=net.operator.sign(token_request_message(audience("records"), challenge))))
    assert _code(bad) == Code.UNAUTHENTICATED


@pytest.mark.parametrize("problem", ["missing", "expired", "wrong audience", "forged", "not bearer"])
def test_bad_access_tokens_are_unauthenticated(net: Network, problem: str) -> None:
    metadata: list[tuple[str, str]] = []
    if problem == "expired":
        metadata = [("authorization", f"Bearer {net.token_for(OPERATOR, ttl=-60)}")]
    elif problem == "wrong audience":
        metadata = [("authorization", f"Bearer {net.token_for(OPERATOR, aud=audience('records'))}")]
    elif problem == "forged":
        forger = Ed25519Signer.generate(TOKEN_ISSUER_ID)
        metadata = [("authorization", f"Bearer {net.token_for(OPERATOR, signer=forger)}")]
    elif problem == "not bearer":
        metadata = [("authorization", f"Basic {net.token_for(OPERATOR)}")]

    with pytest.raises(grpc.RpcError) as refused:
        net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=OPERATOR_ID), metadata=metadata)
    assert _code(refused) == Code.UNAUTHENTICATED


def test_token_issuer_keys_are_public(net: Network) -> None:
    keys = net.stub.GetTokenIssuerKeys(identity_pb2.GetTokenIssuerKeysRequest()).keys
    assert [(k.key_id, k.public_key) for k in keys] == [(TOKEN_ISSUER_ID, net.identity.public_key_bytes())]


# --- registration ----------------------------------------------------------------


def test_registration_goes_to_the_ledger_without_names_or_fhir_ids(net: Network) -> None:
    _, org = register_org(net, "General Hospital")
    _, patient = register_patient(net, org, "fhir-patient-42")

    assert re.fullmatch(r"psn-[0-9a-f]{32}", patient.principal_id)
    assert re.fullmatch(r"org-[0-9a-f]{32}", org.principal_id)
    entries = [b.register_principal for b in net.ledger.bodies()]
    assert [e.principal_id for e in entries] == [org.principal_id, patient.principal_id]
    assert entries[1].kind == Kind.PRINCIPAL_KIND_PATIENT and entries[1].organization_id == org.principal_id
    assert patient.ledger_log_index == 1
    for tx in net.ledger.committed:
        assert b"fhir-patient-42" not in tx.body and b"Jane Doe" not in tx.body and b"General Hospital" not in tx.body


def test_practitioner_registration_records_specialty(net: Network) -> None:
    _, org = register_org(net)
    practitioner = register_practitioner(net, org, "emergency-medicine")
    got = net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=practitioner.key_id),
                                metadata=net.as_(org))
    assert got.kind == Kind.PRINCIPAL_KIND_PRACTITIONER
    assert got.specialty == "emergency-medicine" and got.organization_id == org.principal_id
    assert re.fullmatch(r"prac-[0-9a-f]{32}", got.principal_id)
    assert net.ledger.bodies()[-1].register_principal.specialty == "emergency-medicine"


def test_same_patient_cannot_be_registered_twice(net: Network) -> None:
    _, org = register_org(net)
    register_patient(net, org, "pat-7")
    with pytest.raises(grpc.RpcError) as twice:
        register_patient(net, org, "pat-7")
    assert _code(twice) == Code.ALREADY_EXISTS


def test_same_fhir_id_at_two_organisations_is_two_patients(net: Network) -> None:
    _, first_org = register_org(net, "A")
    _, second_org = register_org(net, "B")
    _, first = register_patient(net, first_org, "pat-7")
    _, second = register_patient(net, second_org, "pat-7")
    assert first.principal_id != second.principal_id


def test_ledger_rejection_stores_nothing(net: Network) -> None:
    _, org = register_org(net)
    net.ledger.reject = True
    with pytest.raises(grpc.RpcError) as rejected:
        register_patient(net, org, "pat-9")
    assert _code(rejected) == Code.PERMISSION_DENIED

    net.ledger.reject = False
    _, patient = register_patient(net, org, "pat-9")  # not ALREADY_EXISTS: the failed attempt left no trace
    assert patient.ledger_log_index == 1


@pytest.mark.parametrize("kind", [Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT])
def test_only_organisations_register_practitioners_and_patients(net: Network, kind: int) -> None:
    with pytest.raises(grpc.RpcError) as denied:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=kind, display_name="x", public_key=bytes(32), specialty="oncology" if kind == 2 else "",
            fhir_patient_id="p1" if kind == 3 else ""), metadata=net.as_(OPERATOR))
    assert _code(denied) == Code.PERMISSION_DENIED


def test_only_the_operator_registers_organisations(net: Network) -> None:
    _, org = register_org(net)
    for caller in (org, RECORDS):
        with pytest.raises(grpc.RpcError) as denied:
            net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
                kind=Kind.PRINCIPAL_KIND_ORGANIZATION, display_name="Rogue", public_key=bytes(32)),
                metadata=net.as_(caller))
        assert _code(denied) == Code.PERMISSION_DENIED


def test_organisation_registers_only_its_own_members(net: Network) -> None:
    _, org = register_org(net, "A")
    _, other = register_org(net, "B")
    with pytest.raises(grpc.RpcError) as denied:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_PATIENT, display_name="x", public_key=bytes(32), fhir_patient_id="p1",
            organization_id=other.principal_id), metadata=net.as_(org))
    assert _code(denied) == Code.PERMISSION_DENIED


@pytest.mark.parametrize(("change", "field"), [
    ({"public_key": bytes(31)}, "public_key"),
    ({"display_name": "  "}, "display_name"),
    ({"specialty": ""}, "specialty"),
    ({"specialty": "Oncology"}, "specialty"),
    ({"fhir_patient_id": "p1"}, "fhir_patient_id"),
    ({"kind": Kind.PRINCIPAL_KIND_SERVICE}, "kind"),
])
def test_invalid_registration_names_the_field(net: Network, change: dict, field: str) -> None:
    _, org = register_org(net)
    request = {"kind": Kind.PRINCIPAL_KIND_PRACTITIONER, "display_name": "Dr. X", "public_key": bytes(32),
               "specialty": "oncology", **change}
    with pytest.raises(grpc.RpcError) as invalid:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(**request), metadata=net.as_(org))
    assert _code(invalid) == Code.INVALID_ARGUMENT
    assert _details(invalid).startswith(f"{field}:")


def test_patient_needs_a_fhir_id(net: Network) -> None:
    _, org = register_org(net)
    with pytest.raises(grpc.RpcError) as invalid:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_PATIENT, display_name="x", public_key=bytes(32)), metadata=net.as_(org))
    assert _details(invalid).startswith("fhir_patient_id:")


# --- reading principals ----------------------------------------------------------


def test_fhir_id_is_shown_only_to_services_the_patient_and_its_organisation(net: Network) -> None:
    _, org = register_org(net, "A")
    _, other_org = register_org(net, "B")
    practitioner = register_practitioner(net, org)
    _, patient = register_patient(net, org, "pat-3")
    _, other_patient = register_patient(net, other_org, "pat-4")

    def fhir_id_seen_by(caller: Caller) -> str:
        request = identity_pb2.GetPrincipalRequest(principal_id=patient.principal_id)
        return net.stub.GetPrincipal(request, metadata=net.as_(caller)).fhir_patient_id

    assert fhir_id_seen_by(RECORDS) == "pat-3"
    assert fhir_id_seen_by(org) == "pat-3"
    assert fhir_id_seen_by(patient_caller(patient)) == "pat-3"
    assert fhir_id_seen_by(other_org) == ""
    assert fhir_id_seen_by(patient_caller(other_patient)) == ""
    assert fhir_id_seen_by(Caller(practitioner.key_id, Kind.PRINCIPAL_KIND_PRACTITIONER, org.principal_id)) == ""


def test_unknown_principal_is_not_found(net: Network) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id="psn-0"), metadata=net.as_(RECORDS))
    assert _code(missing) == Code.NOT_FOUND


def test_trusted_services_are_principals_too(net: Network) -> None:
    got = net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=DECISION_ISSUER_ID),
                                metadata=net.as_(RECORDS))
    assert got.kind == Kind.PRINCIPAL_KIND_SERVICE and got.public_key == net.consent.public_key_bytes()


# --- data keys --------------------------------------------------------------------


@pytest.fixture
def patient(net: Network) -> identity_pb2.Principal:
    _, org = register_org(net)
    return register_patient(net, org, "pat-keys")[1]


def generate(net: Network, patient_id: str, record_id: str, caller: Caller = RECORDS) -> identity_pb2.DataKey:
    return net.stub.GenerateDataKey(identity_pb2.GenerateDataKeyRequest(patient_id=patient_id, record_id=record_id),
                                    metadata=net.as_(caller))


def release(net: Network, record_id: str, token: str, caller: Caller = RECORDS) -> bytes:
    return net.stub.ReleaseDataKey(identity_pb2.ReleaseDataKeyRequest(record_id=record_id, decision_token=token),
                                   metadata=net.as_(caller)).plaintext_key


def test_data_key_is_released_with_a_decision_token(net: Network, patient: identity_pb2.Principal) -> None:
    key = generate(net, patient.principal_id, "rec-1")

    assert len(key.plaintext_key) == 32
    assert key.key_ref == identity_pb2.KeyReference(
        key_name=f"patient-{patient.principal_id}", key_version=1, record_id="rec-1")
    assert release(net, "rec-1", decision_token(net, "rec-1", patient.principal_id)) == key.plaintext_key


def test_each_record_gets_one_data_key(net: Network, patient: identity_pb2.Principal) -> None:
    first = generate(net, patient.principal_id, "rec-1")
    second = generate(net, patient.principal_id, "rec-2")
    assert first.plaintext_key != second.plaintext_key
    with pytest.raises(grpc.RpcError) as again:
        generate(net, patient.principal_id, "rec-1")
    assert _code(again) == Code.ALREADY_EXISTS


def test_data_keys_are_only_for_registered_patients(net: Network) -> None:
    _, org = register_org(net)
    with pytest.raises(grpc.RpcError) as missing:
        generate(net, "psn-" + "0" * 32, "rec-1")
    assert _code(missing) == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as not_patient:
        generate(net, org.principal_id, "rec-1")
    assert _code(not_patient) == Code.NOT_FOUND


@pytest.mark.parametrize("caller", [CONSENT, OPERATOR, Caller("prac-1", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-1")])
def test_only_the_records_service_handles_data_keys(net: Network, patient: identity_pb2.Principal,
                                                    caller: Caller) -> None:
    generate(net, patient.principal_id, "rec-1")
    with pytest.raises(grpc.RpcError) as denied:
        generate(net, patient.principal_id, "rec-2", caller)
    assert _code(denied) == Code.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as denied:
        release(net, "rec-1", decision_token(net, "rec-1", patient.principal_id), caller)
    assert _code(denied) == Code.PERMISSION_DENIED


def test_decision_token_is_single_use(net: Network, patient: identity_pb2.Principal) -> None:
    generate(net, patient.principal_id, "rec-1")
    token = decision_token(net, "rec-1", patient.principal_id)
    release(net, "rec-1", token)
    with pytest.raises(grpc.RpcError) as reused:
        release(net, "rec-1", token)
    assert _code(reused) == Code.PERMISSION_DENIED
    assert _details(reused) == "decision token already used"


def test_decision_token_for_another_record_is_refused(net: Network, patient: identity_pb2.Principal) -> None:
    generate(net, patient.principal_id, "rec-1")
    generate(net, patient.principal_id, "rec-2")
    with pytest.raises(grpc.RpcError) as wrong:
        release(net, "rec-1", decision_token(net, "rec-2", patient.principal_id))
    assert _code(wrong) == Code.PERMISSION_DENIED
    assert "record" in _details(wrong)


def test_decision_token_for_another_patient_is_refused(net: Network, patient: identity_pb2.Principal) -> None:
    generate(net, patient.principal_id, "rec-1")
    with pytest.raises(grpc.RpcError) as wrong:
        release(net, "rec-1", decision_token(net, "rec-1", "psn-" + "1" * 32))
    assert _code(wrong) == Code.PERMISSION_DENIED
    assert "patient" in _details(wrong)


@pytest.mark.parametrize("problem", ["expired", "forged", "access token", "wrong audience", "missing"])
def test_bad_decision_tokens_are_permission_denied(net: Network, patient: identity_pb2.Principal,
                                                   problem: str) -> None:
    generate(net, patient.principal_id, "rec-1")
    token = {
        "expired": lambda: decision_token(net, "rec-1", patient.principal_id, ttl=-60),
        "forged": lambda: decision_token(net, "rec-1", patient.principal_id,
                                         signer=Ed25519Signer.generate(DECISION_ISSUER_ID)),
        "access token": lambda: net.token_for(RECORDS),
        "wrong audience": lambda: decision_token(net, "rec-1", patient.principal_id, aud=audience("records")),
        "missing": lambda: "",
    }[problem]()
    with pytest.raises(grpc.RpcError) as refused:
        release(net, "rec-1", token)
    assert _code(refused) == Code.PERMISSION_DENIED
    assert "decision token" in _details(refused)


# --- rotation ----------------------------------------------------------------------


def test_rotation_rewraps_keys_and_advances_the_version(net: Network, patient: identity_pb2.Principal) -> None:
    keys = {rid: generate(net, patient.principal_id, rid).plaintext_key for rid in ("rec-1", "rec-2", "rec-3")}

    rotated = net.stub.RotatePatientKey(identity_pb2.RotatePatientKeyRequest(patient_id=patient.principal_id),
                                        metadata=net.as_(patient_caller(patient)))

    assert (rotated.key_version, rotated.rewrapped) == (2, 3)
    for rid, plaintext in keys.items():
        assert release(net, rid, decision_token(net, rid, patient.principal_id)) == plaintext
    assert generate(net, patient.principal_id, "rec-4").key_ref.key_version == 2
    rotation = net.ledger.bodies()[-1].key_rotation
    assert (rotation.patient_id, rotation.key_version) == (patient.principal_id, 2)


def test_operator_may_rotate_and_other_principals_may_not(net: Network, patient: identity_pb2.Principal) -> None:
    request = identity_pb2.RotatePatientKeyRequest(patient_id=patient.principal_id)
    other = Caller("psn-" + "2" * 32, Kind.PRINCIPAL_KIND_PATIENT, patient.organization_id)
    org = Caller(patient.organization_id, Kind.PRINCIPAL_KIND_ORGANIZATION, patient.organization_id)
    for caller in (other, org, RECORDS):
        with pytest.raises(grpc.RpcError) as denied:
            net.stub.RotatePatientKey(request, metadata=net.as_(caller))
        assert _code(denied) == Code.PERMISSION_DENIED

    assert net.stub.RotatePatientKey(request, metadata=net.as_(OPERATOR)).key_version >= 1


def test_concurrent_key_generation_and_rotation_keep_every_key_readable(
    net: Network, patient: identity_pb2.Principal
) -> None:
    generated: dict[str, bytes] = {}

    def write(prefix: str) -> None:
        for i in range(8):
            rid = f"{prefix}-{i}"
            generated[rid] = generate(net, patient.principal_id, rid).plaintext_key

    def rotate() -> None:
        for _ in range(3):
            net.stub.RotatePatientKey(identity_pb2.RotatePatientKeyRequest(patient_id=patient.principal_id),
                                      metadata=net.as_(OPERATOR))

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"] + [threading.Thread(target=rotate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for rid, plaintext in generated.items():
        assert release(net, rid, decision_token(net, rid, patient.principal_id)) == plaintext, rid


# --- wiring -------------------------------------------------------------------------


def test_built_service_runs_from_a_network_directory(tmp_path: pathlib.Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    layout.ensure()
    ledger = FakeLedger(Ed25519Signer.from_file(TOKEN_ISSUER_ID, layout.key_file(TOKEN_ISSUER_ID)).public_key_bytes())
    settings = IdentitySettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("identity"),
                                signing_key_file=layout.key_file(TOKEN_ISSUER_ID), trust_dir=layout.trust_dir,
                                shutdown_grace_seconds=0)
    register, closers = build(settings, submit_transaction=ledger)
    running = start_service("identity", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        token = login(stub, layout.operator_signer(), audience("identity")).token
        key = Ed25519Signer.generate("pending")
        org = stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_ORGANIZATION, display_name="Org", public_key=key.public_key_bytes()),
            metadata=[("authorization", f"Bearer {token}")])
        assert org.principal_id.startswith("org-")
        assert len(ledger.committed) == 1
    finally:
        channel.close()
        running.stop()
    secret_mode = (layout.service_dir("identity") / "pseudonym.key").stat().st_mode & 0o777
    assert secret_mode == 0o600


def test_identity_mints_its_own_tokens_for_peers() -> None:
    signer = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    token = local_token_source(signer, 60).token(audience("ledger"))
    claims = verify_token(token, {TOKEN_ISSUER_ID: signer.public_key_bytes()}, ACCESS_TOKEN_TYPE, audience("ledger"))
    assert claims["sub"] == TOKEN_ISSUER_ID and claims["kind"] == "PRINCIPAL_KIND_SERVICE"


# --- orphan data keys (records' reconciler) ----------------------------------------


def delete_key(net: Network, record_id: str, patient_id: str, caller: Caller = RECORDS) -> None:
    net.stub.DeleteDataKey(identity_pb2.DeleteDataKeyRequest(record_id=record_id, patient_id=patient_id),
                           metadata=net.as_(caller))


def test_an_orphan_data_key_is_deleted_once_and_only_by_records(net: Network, patient: identity_pb2.Principal) -> None:
    generate(net, patient.principal_id, "rec-orphan")
    generate(net, patient.principal_id, "rec-kept")
    for caller in (CONSENT, OPERATOR):
        with pytest.raises(grpc.RpcError) as denied:
            delete_key(net, "rec-orphan", patient.principal_id, caller)
        assert _code(denied) == Code.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as other_patient:
        delete_key(net, "rec-orphan", "psn-" + "0" * 32)
    assert _code(other_patient) == Code.NOT_FOUND

    delete_key(net, "rec-orphan", patient.principal_id)

    with pytest.raises(grpc.RpcError) as again:
        delete_key(net, "rec-orphan", patient.principal_id)
    assert _code(again) == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as gone:
        release(net, "rec-orphan", decision_token(net, "rec-orphan", patient.principal_id))
    assert _code(gone) == Code.NOT_FOUND
    assert release(net, "rec-kept", decision_token(net, "rec-kept", patient.principal_id))
    with pytest.raises(grpc.RpcError) as missing_patient:
        delete_key(net, "rec-kept", "")
    assert _code(missing_patient) == Code.INVALID_ARGUMENT and "patient_id" in _details(missing_patient)
