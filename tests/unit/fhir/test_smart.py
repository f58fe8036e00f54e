"""The SMART token endpoint, discovery document and bearer credentials (carechain.fhir.smart), over a real
in-process identity service."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import json

import grpc
import pytest
from identity_fixtures import SMART_TOKEN_URL, Network, login, net, register_org  # noqa: F401 - net is a fixture
from starlette.applications import Starlette
from starlette.testclient import TestClient

from carechain.client.smart_keys import client_assertion, new_client_key, public_jwks
from carechain.common.v1 import common_pb2
from carechain.core.errors import Unauthenticated
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle
from carechain.core.smart_scopes import parse_scopes
from carechain.fhir.smart import (
    CLIENT_ASSERTION_TYPE,
    bearer_credentials,
    oauth_error_of,
    smart_configuration,
    smart_routes,
    token_verifier,
)
from carechain.identity.v1 import identity_pb2


@pytest.fixture
def app(net: Network) -> TestClient:
    return TestClient(Starlette(routes=smart_routes(lambda: net.stub, SMART_TOKEN_URL)))


@pytest.fixture
def client_key():  # type: ignore[no-untyped-def]
    return new_client_key("ES384")


def _org_with_keys(net: Network, key: object) -> str:
    _, org = register_org(net)
    net.stub.RegisterClientKeys(identity_pb2.RegisterClientKeysRequest(jwks=json.dumps(public_jwks((key, "k1")))),
                                metadata=net.as_(org))
    return org.principal_id


def _form(assertion: str, **overrides: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion, "scope": "system/Condition.rs", "purpose_of_use": "TREAT", **overrides}


def test_configuration_document(app: TestClient) -> None:
    document = app.get("/.well-known/smart-configuration").json()
    assert document == smart_configuration(SMART_TOKEN_URL)
    assert document["token_endpoint"] == SMART_TOKEN_URL
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in document["capabilities"]
    assert document["grant_types_supported"] == ["client_credentials"]
    assert "system/*.rs" in document["scopes_supported"]


def test_a_token_request_answers_oauth2_json_and_the_token_is_bearer_credentials(
        net: Network, app: TestClient, client_key: object) -> None:
    client_id = _org_with_keys(net, client_key)
    answer = app.post("/token", data=_form(client_assertion(client_key, "k1", client_id, SMART_TOKEN_URL)))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "bearer" and body["scope"] == "system/Condition.rs"
    assert body["purpose_of_use"] == "TREAT" and 0 < body["expires_in"] <= 60
    trust = TrustBundle({TOKEN_ISSUER_ID: net.identity.public_key_bytes()})
    credentials = bearer_credentials(f"Bearer {body['access_token']}", token_verifier(trust))
    assert credentials.caller.principal_id == client_id
    assert credentials.scopes == parse_scopes("system/Condition.rs")
    assert credentials.purpose == common_pb2.PURPOSE_OF_USE_TREAT
    assert credentials.metadata == [("authorization", f"Bearer {body['access_token']}")]


def test_oauth2_errors(net: Network, app: TestClient, client_key: object) -> None:
    client_id = _org_with_keys(net, client_key)

    def post(**overrides: str) -> tuple[int, str, str]:
        answer = app.post("/token", data=_form(client_assertion(client_key, "k1", client_id, SMART_TOKEN_URL),
                                               **overrides))
        return answer.status_code, answer.json()["error"], answer.json()["error_description"]

    assert post(grant_type="authorization_code")[:2] == (400, "unsupported_grant_type")
    assert post(client_assertion_type="urn:x")[:2] == (401, "invalid_client")
    assert post(scope="system/Unicorn.rs")[:2] == (400, "invalid_scope")
    assert post(scope="")[:2] == (400, "invalid_scope")
    status, error, description = post(purpose_of_use="")
    assert (status, error) == (400, "invalid_request") and description.startswith("purpose_of_use")
    assert post(client_assertion="")[:2] == (400, "invalid_request")
    stranger = client_assertion(new_client_key("ES384"), "k1", client_id, SMART_TOKEN_URL)
    assert post(client_assertion=stranger)[:2] == (401, "invalid_client")
    replayed = client_assertion(client_key, "k1", client_id, SMART_TOKEN_URL)
    assert app.post("/token", data=_form(replayed)).status_code == 200
    assert app.post("/token", data=_form(replayed)).json()["error"] == "invalid_client"
    as_json = app.post("/token", json=_form(replayed))
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    twice = app.post("/token", content="grant_type=client_credentials&grant_type=client_credentials",
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert twice.json()["error_description"] == "grant_type is given more than once"
    assert app.get("/token").status_code == 405


def test_grpc_statuses_map_to_oauth2_errors() -> None:
    assert oauth_error_of(grpc.StatusCode.PERMISSION_DENIED, "") == (400, "invalid_grant")
    assert oauth_error_of(grpc.StatusCode.UNAVAILABLE, "") == (503, "temporarily_unavailable")
    assert oauth_error_of(grpc.StatusCode.INTERNAL, "") == (500, "server_error")
    assert oauth_error_of(grpc.StatusCode.INVALID_ARGUMENT, "scope: x") == (400, "invalid_scope")


def test_bearer_credentials_refuse_missing_and_foreign_tokens(net: Network) -> None:
    verifier = token_verifier(TrustBundle({TOKEN_ISSUER_ID: net.identity.public_key_bytes()}))
    for header in (None, "", "Basic abc", "Bearer ", "Bearer not.a.token"):
        with pytest.raises(Unauthenticated):
            bearer_credentials(header, verifier)
    # A CareChain token without SMART claims: no scopes, no purpose (records applies neither).
    signer, _ = register_org(net)
    token = login(net.stub, signer).token
    credentials = bearer_credentials(f"bearer {token}", verifier)
    assert credentials.scopes == () and credentials.purpose == 0
