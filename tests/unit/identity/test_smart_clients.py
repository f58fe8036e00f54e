"""SMART Backend Services on identity (carechain.identity.smart_clients): client keys and assertion exchange."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import base64
import json
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from identity_fixtures import (  # noqa: F401 - net is a fixture
    SMART_TOKEN_URL,
    Code,
    Network,
    _code,
    _details,
    net,
    register_org,
    register_patient,
    register_practitioner,
)

from carechain.client.smart_keys import client_assertion, new_client_key, public_jwk, public_jwks
from carechain.common.v1 import common_pb2
from carechain.core.layout import TOKEN_ISSUER_ID, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, verify_token
from carechain.identity.smart_clients import MAX_CLIENT_KEYS, validate_jwks
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Caller, caller_from_claims

TREAT = common_pb2.PURPOSE_OF_USE_TREAT


@pytest.fixture(scope="module")
def es_key() -> ec.EllipticCurvePrivateKey:
    return new_client_key("ES384")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def rs_key() -> rsa.RSAPrivateKey:
    return new_client_key("RS384")  # type: ignore[return-value]


def _registered_org(net: Network, *keys: tuple[object, str]) -> Caller:
    _, org = register_org(net)
    net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(jwks=json.dumps(public_jwks(*keys))),
                                metadata=net.as_(org))
    return org


def _exchange(net: Network, assertion: str, scope: str = "system/Condition.rs", purpose: int = TREAT,
              aud: str = "") -> identity_pb2.ClientAccessToken:
    return net.stub.ExchangeClientAssertion(identity_pb2.ExchangeClientAssertionRequest(
        client_assertion=assertion, scope=scope, purpose_of_use=purpose, audience=aud))  # type: ignore[arg-type]


def _refused(net: Network, assertion: str, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as excinfo:
        _exchange(net, assertion, **kwargs)  # type: ignore[arg-type]
    return _code(excinfo), _details(excinfo)


# --- registration ---------------------------------------------------------------------------------


def test_organisation_registers_es384_and_rs384_keys(net: Network, es_key: ec.EllipticCurvePrivateKey,
                                                     rs_key: rsa.RSAPrivateKey) -> None:
    _, org = register_org(net)
    answer = net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(
        jwks=json.dumps(public_jwks((es_key, "ec-1"), (rs_key, "rsa-1")))), metadata=net.as_(org))
    assert answer.client_id == org.principal_id
    assert list(answer.key_ids) == ["ec-1", "rsa-1"]


def test_patient_may_not_register_client_keys(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    _, org = register_org(net)
    _, patient = register_patient(net, org)
    with pytest.raises(grpc.RpcError) as excinfo:
        net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(
            jwks=json.dumps(public_jwks((es_key, "k")))),
            metadata=net.as_(Caller(patient.principal_id, common_pb2.PRINCIPAL_KIND_PATIENT, org.principal_id)))
    assert _code(excinfo) == Code.PERMISSION_DENIED


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda jwk: {k: v for k, v in jwk.items() if k != "kid"}, "jwks.keys[0].kid"),
    (lambda jwk: {**jwk, "d": "AAAA"}, "jwks.keys[0]"),
    (lambda jwk: {**jwk, "alg": "ES256"}, "jwks.keys[0].alg"),
    (lambda jwk: {**jwk, "alg": "RS256"}, "jwks.keys[0].alg"),
    (lambda jwk: {"kty": "oct", "kid": "s", "k": "c2VjcmV0"}, "jwks.keys[0]"),
    (lambda jwk: {"kty": "OKP", "kid": "e", "crv": "Ed25519", "x": _b64(bytes(32))}, "jwks.keys[0].kty"),
    (lambda jwk: {**jwk, "x": _b64(b"not a point")}, "jwks.keys[0]"),
    (lambda jwk: {**jwk, "use": "enc"}, "jwks.keys[0].use"),
])
def test_bad_keys_are_refused_naming_the_field(es_key: ec.EllipticCurvePrivateKey, mutate: object,
                                               field: str) -> None:
    jwk = mutate(public_jwk(es_key, "k1"))  # type: ignore[operator]
    with pytest.raises(Exception) as excinfo:
        validate_jwks(json.dumps({"keys": [jwk]}))
    assert excinfo.value.code == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert str(excinfo.value).startswith(field + ":") or str(excinfo.value).startswith(field + " ")


def test_a_p256_key_and_a_short_rsa_key_are_refused() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    jwk = {**public_jwk(p256, "p256"), "alg": "ES384"}  # type: ignore[arg-type]
    with pytest.raises(Exception, match="P-384"):
        validate_jwks(json.dumps({"keys": [jwk]}))
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(Exception, match="2048 bits"):
        validate_jwks(json.dumps({"keys": [public_jwk(short, "short")]}))


def test_jwks_size_and_kid_uniqueness(es_key: ec.EllipticCurvePrivateKey) -> None:
    one = public_jwk(es_key, "same")
    for text in ("", "not json", json.dumps({"keys": []}), json.dumps({"keys": [one] * (MAX_CLIENT_KEYS + 1)}),
                 json.dumps({"keys": [one, one]})):
        with pytest.raises(Exception) as excinfo:
            validate_jwks(text)
        assert excinfo.value.code == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "jwks" in str(excinfo.value)
    canonical, kids = validate_jwks(json.dumps({"keys": [{**one, "x5c": ["ignored"]}]}))
    assert kids == ["same"] and "x5c" not in canonical


# --- token exchange -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_es384_and_rs384_assertions_buy_a_scoped_token(net: Network, es_key: ec.EllipticCurvePrivateKey,
                                                        rs_key: rsa.RSAPrivateKey, alg: str) -> None:
    key = es_key if alg == "ES384" else rs_key
    org = _registered_org(net, (key, "k1"))
    answer = _exchange(net, client_assertion(key, "k1", org.principal_id, SMART_TOKEN_URL),
                       scope="system/Condition.rs system/Observation.read")
    assert answer.scope == "system/Condition.rs system/Observation.rs"
    assert answer.purpose_of_use == TREAT
    claims = verify_token(answer.token, {TOKEN_ISSUER_ID: net.identity.public_key_bytes()}, ACCESS_TOKEN_TYPE,
                          audience("records"))
    caller = caller_from_claims(claims)
    assert caller.principal_id == org.principal_id and caller.organization_id == org.principal_id
    assert caller.scope == answer.scope and caller.purpose_of_use == "TREAT"
    assert claims["exp"] - time.time() <= 60 + 1  # the service's (short) token lifetime


def test_practitioner_gets_user_scopes_only(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    _, org = register_org(net)
    practitioner = register_practitioner(net, org)
    as_practitioner = Caller(practitioner.key_id, common_pb2.PRINCIPAL_KIND_PRACTITIONER, org.principal_id)
    net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(
        jwks=json.dumps(public_jwks((es_key, "p")))), metadata=net.as_(as_practitioner))
    answer = _exchange(net, client_assertion(es_key, "p", practitioner.key_id, SMART_TOKEN_URL),
                       scope="user/Observation.r")
    assert answer.scope == "user/Observation.r"
    code, details = _refused(net, client_assertion(es_key, "p", practitioner.key_id, SMART_TOKEN_URL),
                             scope="system/Observation.r")
    assert code == Code.INVALID_ARGUMENT and details.startswith("scope")


def test_organisation_may_not_ask_for_user_scopes(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    org = _registered_org(net, (es_key, "k1"))
    code, details = _refused(net, client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL),
                             scope="user/Condition.rs")
    assert code == Code.INVALID_ARGUMENT and details.startswith("scope")


@pytest.mark.parametrize("scope", ["", "system/Unicorn.rs", "patient/Condition.rs", "openid", "system/Condition.sr",
                                   "system/Condition.rx"])
def test_bad_scopes_are_invalid_scope(net: Network, es_key: ec.EllipticCurvePrivateKey, scope: str) -> None:
    org = _registered_org(net, (es_key, "k1"))
    code, details = _refused(net, client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL), scope=scope)
    assert code == Code.INVALID_ARGUMENT and details.startswith("scope")


def test_purpose_of_use_is_required(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    org = _registered_org(net, (es_key, "k1"))
    code, details = _refused(net, client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL),
                             purpose=common_pb2.PURPOSE_OF_USE_UNSPECIFIED)
    assert code == Code.INVALID_ARGUMENT and details.startswith("purpose_of_use")


def test_replayed_jti_is_refused(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    org = _registered_org(net, (es_key, "k1"))
    assertion = client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL)
    _exchange(net, assertion)
    assert _refused(net, assertion) == (Code.UNAUTHENTICATED, "client assertion was used before (jti)")
    # The same jti from another client is that client's own: not a replay.
    other = _registered_org(net, (es_key, "k1"))
    jti = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "==="))["jti"]
    _exchange(net, client_assertion(es_key, "k1", other.principal_id, SMART_TOKEN_URL, jti=jti))


def test_wrong_aud_expired_and_too_long_assertions_are_refused(net: Network,
                                                               es_key: ec.EllipticCurvePrivateKey) -> None:
    org = _registered_org(net, (es_key, "k1"))
    client = org.principal_id
    cases = {
        "aud must be the token endpoint URL": client_assertion(es_key, "k1", client, "https://elsewhere.test/token"),
        "has expired": client_assertion(es_key, "k1", client, SMART_TOKEN_URL, lifetime_seconds=-60),
        "more than 300 seconds ahead": client_assertion(es_key, "k1", client, SMART_TOKEN_URL,
                                                        lifetime_seconds=3600),
        "not valid yet": client_assertion(es_key, "k1", client, SMART_TOKEN_URL, nbf=int(time.time()) + 120),
    }
    for expected, assertion in cases.items():
        code, details = _refused(net, assertion)
        assert code == Code.UNAUTHENTICATED and expected in details, (expected, details)


def test_wrong_iss_or_sub_and_unregistered_kid_are_refused(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    org = _registered_org(net, (es_key, "k1"))
    other = _registered_org(net, (new_client_key("ES384"), "k1"))
    client = org.principal_id
    code, details = _refused(net, client_assertion(es_key, "k1", client, SMART_TOKEN_URL, sub=other.principal_id))
    assert code == Code.UNAUTHENTICATED and "iss and sub" in details
    not_proven = "unknown client or invalid client assertion signature"
    # This org's key, claiming to be the other org (whose own key has the same kid): signature fails.
    assert _refused(net, client_assertion(es_key, "k1", other.principal_id, SMART_TOKEN_URL)) == \
        (Code.UNAUTHENTICATED, not_proven)
    assert _refused(net, client_assertion(es_key, "k2", client, SMART_TOKEN_URL)) == (Code.UNAUTHENTICATED,
                                                                                      not_proven)
    # An unknown client and a client without keys answer the same.
    _, bare = register_org(net)
    for client_id in ("org-unknown", bare.principal_id):
        assert _refused(net, client_assertion(es_key, "k1", client_id, SMART_TOKEN_URL)) == \
            (Code.UNAUTHENTICATED, not_proven)


def test_algorithms_other_than_rs384_and_es384_are_refused(net: Network, rs_key: rsa.RSAPrivateKey) -> None:
    org = _registered_org(net, (rs_key, "k1"))
    now = int(time.time())
    claims = {"iss": org.principal_id, "sub": org.principal_id, "aud": SMART_TOKEN_URL, "exp": now + 60,
              "jti": "j-1"}
    rs256 = jwt.encode(claims, rs_key, algorithm="RS256", headers={"kid": "k1"})
    hs256 = jwt.encode(claims, "a-shared-secret-of-32-bytes-long!!", algorithm="HS256", headers={"kid": "k1"})
    header = _b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    none = f"{header}.{_b64(json.dumps(claims).encode())}."
    for assertion in (rs256, hs256, none):
        assert _refused(net, assertion) == (Code.UNAUTHENTICATED, "client assertion algorithm must be RS384 or ES384")
    # The registered key's alg must match the header's: an RS384 key never verifies an "ES384" assertion.
    es_header = _b64(json.dumps({"alg": "ES384", "kid": "k1"}).encode())
    forged = f"{es_header}.{rs256.split('.', 1)[1]}"
    assert _refused(net, forged)[0] == Code.UNAUTHENTICATED


def test_missing_assertion_and_bad_audience(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    code, details = _refused(net, "")
    assert code == Code.INVALID_ARGUMENT and details.startswith("client_assertion")
    org = _registered_org(net, (es_key, "k1"))
    code, details = _refused(net, client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL), aud="x")
    assert code == Code.INVALID_ARGUMENT and details.startswith("audience")


def test_re_registration_replaces_the_keys(net: Network, es_key: ec.EllipticCurvePrivateKey) -> None:
    _, org = register_org(net)
    replacement = new_client_key("ES384")
    for key in (es_key, replacement):
        net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(
            jwks=json.dumps(public_jwks((key, "k1")))), metadata=net.as_(org))
    assert _refused(net, client_assertion(es_key, "k1", org.principal_id, SMART_TOKEN_URL))[0] == \
        Code.UNAUTHENTICATED
    _exchange(net, client_assertion(replacement, "k1", org.principal_id, SMART_TOKEN_URL))
