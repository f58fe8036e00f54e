"""SMART Backend Services against six real service processes (embedded backends).

A hospital registers its client JWKS, gets system/ tokens at the token endpoint
(carechain.fhir.smart over identity's ExchangeClientAssertion), writes with them within its
scopes and reads a Condition once the patient's consent names the hospital (an Observation stays
out of its system/Condition.rs scope); its practitioner gets user/ tokens and reads a Condition
the patient's consent permits, is refused an Observation by scope (after consent) and a read for
another purpose; another organisation cannot get a token with this hospital's client_id.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest
from helpers import Actor, new_hospital, new_patient, new_practitioner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from carechain.client.channels import open_channel
from carechain.client.sdk import CareChainClient, Category, Kind, Purpose, name_key_file, new_key_file, permit
from carechain.client.smart_keys import client_assertion, load_client_key, new_client_key, public_jwks
from carechain.dev.demo import cancer_diagnosis
from carechain.dev.localnet import LocalNetwork
from carechain.fhir.smart import CLIENT_ASSERTION_TYPE, smart_routes
from carechain.identity.v1 import identity_pb2_grpc
from carechain.records.v1 import records_pb2, records_pb2_grpc

TOKEN_URL = "https://fhir.hospital-a.test/token"


def heart_rate(fhir_patient_id: str) -> dict:
    return {"resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{fhir_patient_id}"}, "effectiveDateTime": "2026-03-02",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    local = LocalNetwork(tmp_path_factory.mktemp("smart"), extra_env={"CARECHAIN_SMART_TOKEN_URL": TOKEN_URL})
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def token_endpoint(network: LocalNetwork) -> Iterator[TestClient]:
    channel = open_channel(network.endpoints.address("identity"), "identity", None, network.endpoints.client_tls())
    identity = identity_pb2_grpc.IdentityServiceStub(channel)
    try:
        yield TestClient(Starlette(routes=smart_routes(lambda: identity, TOKEN_URL)))
    finally:
        channel.close()


@pytest.fixture(scope="module")
def records(network: LocalNetwork) -> Iterator[records_pb2_grpc.RecordsServiceStub]:
    channel = open_channel(network.endpoints.address("records"), "records", None, network.endpoints.client_tls())
    try:
        yield records_pb2_grpc.RecordsServiceStub(channel)
    finally:
        channel.close()


def _token(endpoint: TestClient, key: object, client_id: str, scope: str, purpose: str = "TREAT") -> dict:
    answer = endpoint.post("/token", data={
        "grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(key, "k1", client_id, TOKEN_URL), "scope": scope,
        "purpose_of_use": purpose})
    return {"status": answer.status_code, **answer.json()}


def _bearer(token: dict) -> list[tuple[str, str]]:
    assert token["status"] == 200, token
    return [("authorization", f"Bearer {token['access_token']}")]


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK


def test_smart_backend_services_end_to_end(network: LocalNetwork, token_endpoint: TestClient,
                                           records: records_pb2_grpc.RecordsServiceStub) -> None:
    hospital: Actor = new_hospital(network)
    practitioner = new_practitioner(network, hospital, "oncology")
    patient, fhir_id = new_patient(network, hospital)
    hospital_key, practitioner_key = new_client_key("ES384"), new_client_key("RS384")
    registered = hospital.client.register_client_keys(public_jwks((hospital_key, "k1")))
    assert registered.client_id == hospital.principal_id and list(registered.key_ids) == ["k1"]
    practitioner.client.register_client_keys(json.dumps(public_jwks((practitioner_key, "k1"))))
    patient.client.grant_consent(
        permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=practitioner.principal_id),
        permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=practitioner.principal_id,
               categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))

    # The hospital's backend writes a Condition within system/Condition.crs; an Observation is out of scope.
    writer = _bearer(_token(token_endpoint, hospital_key, hospital.principal_id, "system/Condition.crs"))
    condition = records.PutRecord(records_pb2.PutRecordRequest(
        patient_id=patient.principal_id, resource_json=json.dumps(cancer_diagnosis(fhir_id)).encode()),
        metadata=writer, timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        records.PutRecord(records_pb2.PutRecordRequest(
            patient_id=patient.principal_id, resource_json=json.dumps(heart_rate(fhir_id)).encode()),
            metadata=writer, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "SMART scopes" in refused.value.details()  # type: ignore[attr-defined]
    observation = hospital.client.put_record(patient.principal_id, heart_rate(fhir_id))  # its ordinary token: unscoped

    # The practitioner's client reads the Condition with user/Condition.rs and TREAT.
    reader = _bearer(_token(token_endpoint, practitioner_key, practitioner.principal_id, "user/Condition.rs"))
    read = records.GetRecord(records_pb2.GetRecordRequest(record_id=condition.record_id,
                                                          purpose=Purpose.PURPOSE_OF_USE_TREAT),
                             metadata=reader, timeout=30)
    assert json.loads(read.resource_json)["resourceType"] == "Condition"
    # Consent permits the Observation too, the token's scopes do not; the refusal does not name the type.
    with pytest.raises(grpc.RpcError) as out_of_scope:
        records.GetRecord(records_pb2.GetRecordRequest(record_id=observation.record_id,
                                                       purpose=Purpose.PURPOSE_OF_USE_TREAT),
                          metadata=reader, timeout=30)
    assert out_of_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "Observation" not in out_of_scope.value.details()  # type: ignore[attr-defined]
    assert practitioner.client.get_record(observation.record_id).resource_json  # its ordinary token still reads
    # The token binds its purpose: a read for another purpose is refused naming the field.
    with pytest.raises(grpc.RpcError) as wrong_purpose:
        records.GetRecord(records_pb2.GetRecordRequest(record_id=condition.record_id,
                                                       purpose=Purpose.PURPOSE_OF_USE_HRESCH),
                          metadata=reader, timeout=30)
    assert wrong_purpose.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert wrong_purpose.value.details().startswith("purpose")  # type: ignore[attr-defined]

    # The hospital's backend reads only once the patient names the hospital; then its system/ scopes apply.
    org_reader = _bearer(_token(token_endpoint, hospital_key, hospital.principal_id, "system/Condition.rs"))

    def org_read(record_id: str) -> grpc.StatusCode:
        return _code(lambda: records.GetRecord(records_pb2.GetRecordRequest(
            record_id=record_id, purpose=Purpose.PURPOSE_OF_USE_TREAT), metadata=org_reader, timeout=30))

    assert org_read(condition.record_id) == grpc.StatusCode.PERMISSION_DENIED  # consent names the practitioner only
    patient.client.grant_consent(
        permit([Purpose.PURPOSE_OF_USE_TREAT], organization_id=hospital.principal_id),
        permit([Purpose.PURPOSE_OF_USE_TREAT], organization_id=hospital.principal_id,
               categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
    read = records.GetRecord(records_pb2.GetRecordRequest(record_id=condition.record_id,
                                                          purpose=Purpose.PURPOSE_OF_USE_TREAT),
                             metadata=org_reader, timeout=30)
    assert json.loads(read.resource_json)["code"]["coding"][0]["code"] == "254837009"
    assert org_read(observation.record_id) == grpc.StatusCode.PERMISSION_DENIED  # out of system/Condition.rs
    # Its ordinary (unscoped) token does not read at all.
    assert _code(lambda: hospital.client.get_record(condition.record_id)) == grpc.StatusCode.PERMISSION_DENIED

    # The patient's accounting shows the SMART refusal as a denied read.
    reasons = [e.event.reason for e in patient.client.access_history()]
    assert any("SMART scopes" in reason for reason in reasons), reasons


def test_another_organisation_cannot_use_this_client_id_nor_a_deactivated_principal(
        network: LocalNetwork, token_endpoint: TestClient) -> None:
    hospital, other = new_hospital(network), new_hospital(network)
    hospital_key, other_key = new_client_key("ES384"), new_client_key("ES384")
    hospital.client.register_client_keys(public_jwks((hospital_key, "k1")))
    other.client.register_client_keys(public_jwks((other_key, "k1")))
    # The other organisation signs with its own registered key but names this hospital as client.
    forged = _token(token_endpoint, other_key, hospital.principal_id, "system/Condition.rs")
    assert (forged["status"], forged["error"]) == (401, "invalid_client")
    assert _token(token_endpoint, other_key, other.principal_id, "system/Condition.rs")["status"] == 200
    # A deactivated practitioner's client gets no token: the same answer as an unknown client.
    practitioner, practitioner_key = new_practitioner(network, hospital, "oncology"), new_client_key("ES384")
    practitioner.client.register_client_keys(public_jwks((practitioner_key, "k1")))
    assert _token(token_endpoint, practitioner_key, practitioner.principal_id, "user/Condition.rs")["status"] == 200
    hospital.client.deactivate_principal(practitioner.principal_id)
    refused = _token(token_endpoint, practitioner_key, practitioner.principal_id, "user/Condition.rs")
    assert (refused["status"], refused["error"]) == (401, "invalid_client")
    assert refused["error_description"] == forged["error_description"]
    # An organisation may not hold user/ scopes; unknown resource types are invalid_scope.
    for scope in ("user/Condition.rs", "system/Unicorn.rs"):
        refused = _token(token_endpoint, hospital_key, hospital.principal_id, scope)
        assert (refused["status"], refused["error"]) == (400, "invalid_scope")


def test_a_hospital_registers_its_client_with_the_cli(network: LocalNetwork, token_endpoint: TestClient,
                                                     tmp_path: pathlib.Path) -> None:
    hospital_key = tmp_path / "hospital.key"
    signer = new_key_file(hospital_key)
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        hospital = operator.register(Kind.PRINCIPAL_KIND_ORGANIZATION, "CLI Hospital", signer.public_key_bytes())
    name_key_file(hospital_key, hospital.principal_id)

    def carechain(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "carechain", *args, "--json"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    client_key = tmp_path / "smart-client.pem"
    made = carechain("smart", "keygen", "--out", str(client_key), "--alg", "RS384", "--kid", "k1")
    registered = carechain("smart", "register-keys", "--key-file", str(hospital_key), "--jwks", made["jwks_file"],
                           "--data-dir", str(network.layout.root))
    assert registered == {"client_id": hospital.principal_id, "key_ids": ["k1"]}
    token = _token(token_endpoint, load_client_key(client_key), hospital.principal_id, "system/*.read")
    assert token["status"] == 200 and token["scope"] == "system/*.rs"
