"""Proof of possession and access tokens (carechain.identity.access_tokens) through in-process gRPC."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import grpc
import pytest
from identity_fixtures import (  # noqa: F401 - net is a fixture
    OPERATOR,
    Code,
    Network,
    _code,
    _details,
    login,
    net,
    register_org,
    register_practitioner,
)

from carechain.client.auth import token_request_message
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import (
    DECISION_ISSUER_ID,
    OPERATOR_ID,
    TOKEN_ISSUER_ID,
    audience,
)
from carechain.core.tokens import ACCESS_TOKEN_TYPE, verify_token
from carechain.identity.server import local_token_source
from carechain.identity.v1 import identity_pb2

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


def test_identity_mints_its_own_tokens_for_peers() -> None:
    signer = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    token = local_token_source(signer, 60).token(audience("ledger"))
    claims = verify_token(token, {TOKEN_ISSUER_ID: signer.public_key_bytes()}, ACCESS_TOKEN_TYPE, audience("ledger"))
    assert claims["sub"] == TOKEN_ISSUER_ID and claims["kind"] == "PRINCIPAL_KIND_SERVICE"
