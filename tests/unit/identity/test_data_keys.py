"""Data keys and patient key rotation (carechain.identity.data_keys) through in-process gRPC."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import threading

import grpc
import pytest
from identity_fixtures import (  # noqa: F401 - net is a fixture
    CONSENT,
    OPERATOR,
    RECORDS,
    Code,
    Kind,
    Network,
    _code,
    _details,
    decision_token,
    net,
    patient_caller,
    register_org,
    register_patient,
)

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import DecisionClaims
from carechain.core.layout import (
    DECISION_ISSUER_ID,
    audience,
)
from carechain.core.tokens import DECISION_TOKEN_TYPE, issue_token
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Caller

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


@pytest.mark.parametrize(("change", "claim"), [
    ({"act": None}, "act"),
    ({"pou": "TREAT"}, "pou"),
    ({"psn": None}, "psn"),
    ({"sub": 42}, "sub"),
])
def test_a_consent_signed_token_with_a_missing_or_mistyped_claim_releases_nothing(
        net: Network, patient: identity_pb2.Principal, change: dict, claim: str) -> None:
    # Even with consent's own signature: identity reads the typed decision claims, never a loose dict.
    key = generate(net, patient.principal_id, "rec-1")
    good = DecisionClaims("prac-x", "rec-1", patient.principal_id, common_pb2.PURPOSE_OF_USE_TREAT,
                          common_pb2.CONSENT_ACTION_ACCESS, consent_id="consent-1").to_claims()
    claims = {k: v for k, v in {**good, **change}.items() if v is not None}
    token = issue_token(net.consent, DECISION_TOKEN_TYPE, claims, 30)[0]
    with pytest.raises(grpc.RpcError) as refused:
        release(net, "rec-1", token)
    assert _code(refused) == Code.PERMISSION_DENIED
    assert _details(refused).startswith("decision token rejected: ") and f"claim {claim} " in _details(refused)
    assert release(net, "rec-1", decision_token(net, "rec-1", patient.principal_id)) == key.plaintext_key


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


# --- batches: GenerateDataKeys / ReleaseDataKeys ---------------------------------------


def generate_many(net: Network, items: list[tuple[str, str]], caller: Caller = RECORDS
                  ) -> list[identity_pb2.GenerateDataKeyResult]:
    return list(net.stub.GenerateDataKeys(identity_pb2.GenerateDataKeysRequest(items=[
        identity_pb2.GenerateDataKeyRequest(patient_id=p, record_id=r) for p, r in items]),
        metadata=net.as_(caller)).results)


def release_many(net: Network, items: list[tuple[str, str]], caller: Caller = RECORDS
                 ) -> list[identity_pb2.ReleaseDataKeyResult]:
    return list(net.stub.ReleaseDataKeys(identity_pb2.ReleaseDataKeysRequest(items=[
        identity_pb2.ReleaseDataKeyRequest(record_id=r, decision_token=t) for r, t in items]),
        metadata=net.as_(caller)).results)


def refusal(result: identity_pb2.GenerateDataKeyResult | identity_pb2.ReleaseDataKeyResult) -> tuple[Code, str]:
    assert result.WhichOneof("outcome") == "error", "expected this item to be refused"
    return next(c for c in Code if c.value[0] == result.error.code), result.error.message


def test_a_batch_of_data_keys_answers_each_record_as_the_single_call_would(net: Network,
                                                                          patient: identity_pb2.Principal) -> None:
    _, org = register_org(net, "Other Hospital")
    other = register_patient(net, org, "pat-other")[1]
    generate(net, patient.principal_id, "rec-taken")
    results = generate_many(net, [
        (patient.principal_id, "rec-1"), (other.principal_id, "rec-2"),
        (patient.principal_id, "rec-taken"),  # has a key already
        (patient.principal_id, "rec-1"),  # twice in one batch
        ("psn-" + "0" * 32, "rec-3"),  # no such patient
        (org.principal_id, "rec-4"),  # not a patient
        (patient.principal_id, "bad id!"), ("", "rec-5"),
        (patient.principal_id, "rec-6"),
    ])

    keys = {i: r.key for i, r in enumerate(results) if r.WhichOneof("outcome") == "key"}
    assert sorted(keys) == [0, 1, 8]
    assert keys[0].key_ref == identity_pb2.KeyReference(key_name=f"patient-{patient.principal_id}", key_version=1,
                                                        record_id="rec-1")
    assert keys[1].key_ref.key_name == f"patient-{other.principal_id}"
    assert len({k.plaintext_key for k in keys.values()}) == 3
    assert refusal(results[2]) == (Code.ALREADY_EXISTS, "record rec-taken already has a data key")
    assert refusal(results[3])[0] == Code.ALREADY_EXISTS
    assert refusal(results[4])[0] == Code.NOT_FOUND and refusal(results[5])[0] == Code.NOT_FOUND
    assert refusal(results[6])[0] == Code.INVALID_ARGUMENT and refusal(results[6])[1].startswith("record_id: ")
    assert refusal(results[7]) == (Code.INVALID_ARGUMENT, "patient_id: is required")
    # Each key is bound to its record and patient, exactly as one made alone.
    assert release(net, "rec-1", decision_token(net, "rec-1", patient.principal_id)) == keys[0].plaintext_key
    assert release(net, "rec-2", decision_token(net, "rec-2", other.principal_id)) == keys[1].plaintext_key


def test_a_bad_decision_token_fails_only_its_own_item(net: Network, patient: identity_pb2.Principal) -> None:
    records = [f"rec-{i}" for i in range(7)]
    made = {r.key.key_ref.record_id: r.key.plaintext_key
            for r in generate_many(net, [(patient.principal_id, r) for r in records])}
    used = decision_token(net, "rec-5", patient.principal_id)
    release(net, "rec-5", used)
    revoked = decision_token(net, "rec-6", patient.principal_id)
    net.revocations.revoked.add(revoked)
    good = decision_token(net, "rec-0", patient.principal_id)
    forged = decision_token(net, "rec-1", patient.principal_id, signer=Ed25519Signer.generate(DECISION_ISSUER_ID))
    results = release_many(net, [
        ("rec-0", good),
        ("rec-1", forged),
        ("rec-2", decision_token(net, "rec-3", patient.principal_id)),  # for another record
        ("rec-3", decision_token(net, "rec-3", patient.principal_id, ttl=-60)),  # expired
        ("rec-4", decision_token(net, "rec-4", "psn-" + "1" * 32)),  # for another patient
        ("rec-5", used),  # single use
        ("rec-6", revoked),  # consent revoked after the decision
        ("rec-0", good),  # the same token twice in one batch: the second use is refused
        ("rec-x", decision_token(net, "rec-x", patient.principal_id)),  # no such key
    ])

    assert results[0].key.plaintext_key == made["rec-0"]
    reasons = [refusal(r) for r in results[1:]]
    assert [code for code, _ in reasons] == [Code.PERMISSION_DENIED] * 7 + [Code.NOT_FOUND]
    assert reasons[0][1].startswith("decision token rejected: ")
    assert reasons[1][1] == "decision token is for a different record"
    assert "expired" in reasons[2][1]
    assert reasons[3][1] == "decision token is for a different patient than the record's"
    assert reasons[4][1] == reasons[6][1] == "decision token already used"
    assert reasons[5][1].startswith("consent revoked")
    # The refused items used none of their tokens: the ones that were valid still work alone.
    assert release(net, "rec-4", decision_token(net, "rec-4", patient.principal_id)) == made["rec-4"]


def test_a_release_batch_asks_consent_once_for_all_its_tokens(net: Network, patient: identity_pb2.Principal) -> None:
    records = [f"rec-{i}" for i in range(3)]
    made = {r.key.key_ref.record_id: r.key.plaintext_key
            for r in generate_many(net, [(patient.principal_id, r) for r in records])}
    tokens = [decision_token(net, r, patient.principal_id) for r in records]
    net.revocations.revoked.add(tokens[1])
    net.revocations.batches.clear()
    results = release_many(net, list(zip(records, tokens, strict=True)))
    assert net.revocations.batches == [3]  # one CheckDecisions for the batch, not one call per token
    assert results[0].key.plaintext_key == made["rec-0"] and results[2].key.plaintext_key == made["rec-2"]
    assert refusal(results[1])[1].startswith("consent revoked")


def test_only_the_records_service_calls_the_batches(net: Network, patient: identity_pb2.Principal) -> None:
    for caller in (CONSENT, patient_caller(patient), OPERATOR):
        with pytest.raises(grpc.RpcError) as generating:
            generate_many(net, [(patient.principal_id, "rec-1")], caller)
        with pytest.raises(grpc.RpcError) as releasing:
            release_many(net, [("rec-1", decision_token(net, "rec-1", patient.principal_id))], caller)
        assert _code(generating) == _code(releasing) == Code.PERMISSION_DENIED


@pytest.mark.parametrize("size", [0, 257])
def test_a_batch_holds_one_to_256_items(net: Network, patient: identity_pb2.Principal, size: int) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        generate_many(net, [(patient.principal_id, f"rec-{i}") for i in range(size)])
    assert _code(refused) == Code.INVALID_ARGUMENT and _details(refused).startswith("items: ")
    with pytest.raises(grpc.RpcError) as refused:
        release_many(net, [(f"rec-{i}", "t") for i in range(size)])
    assert _code(refused) == Code.INVALID_ARGUMENT and _details(refused).startswith("items: ")


def test_a_patients_key_is_created_once_at_registration_not_per_record(net: Network) -> None:
    assert net.keyring is not None
    _, org = register_org(net)
    patient = register_patient(net, org, "pat-once")[1]
    key_name = f"patient-{patient.principal_id}"
    assert net.keyring.creates == [key_name]  # registration made it
    assert net.keyring.key_info(key_name).latest_version == 1

    for i in range(3):
        generate(net, patient.principal_id, f"rec-{i}")
    generate_many(net, [(patient.principal_id, f"rec-b{i}") for i in range(5)])

    assert net.keyring.creates == [key_name]


def test_a_patient_whose_key_could_not_be_made_at_registration_gets_it_at_the_first_write(net: Network) -> None:
    assert net.keyring is not None
    _, org = register_org(net)
    net.keyring.down = True
    patient = register_patient(net, org, "pat-later")[1]  # registered all the same
    net.keyring.down = False

    key = generate(net, patient.principal_id, "rec-1")

    assert net.keyring.key_info(f"patient-{patient.principal_id}").latest_version == 1
    assert net.keyring.creates == [f"patient-{patient.principal_id}"] * 2
    assert release(net, "rec-1", decision_token(net, "rec-1", patient.principal_id)) == key.plaintext_key
