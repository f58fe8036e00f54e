"""Consent resumes from its signed snapshot (not from genesis) against a real ledger, and refuses a tampered one."""

from __future__ import annotations

import hashlib
import json
import uuid

import grpc
import pytest
from ledger_fixtures import CHAIN, Kind, Net, onboarding, register, tx
from ledger_fixtures import policy as ledger_policy
from ledger_service_fixtures import ServiceStub, ledger_service

from carechain.common.v1 import common_pb2
from carechain.consent.rules import attest_policy
from carechain.consent.snapshot import ConsentSnapshots
from carechain.consent.state import ConsentState
from carechain.core.crypto import Ed25519Signer
from carechain.ledger import submission, transactions
from carechain.ledger.linking import attest_link
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.reader import VerifiedLedgerReader
from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.keyring import LocalKeyring


@pytest.fixture
def world(tmp_path):
    net = Net()
    keyring = LocalKeyring(tmp_path / "keyring")
    keyring.create_key(LEDGER_METADATA_KEY)
    sealer = LedgerSealer(keyring, CHAIN)
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net)
        txs, keys = onboarding(net)
        for t in txs:
            assert submission.submit(stub, t).valid
        yield net, sealer, stub, keys, channel, tmp_path


def add_record(net, sealer, stub, record_id: str) -> None:
    record = ledger_pb2.RegisterRecord(
        record_id=record_id, patient_id="pat-1", organization_id="org-1", content_sha256="ab" * 32,
        content_size=10, key_name="patient-key", key_version=1, version=1)
    metadata = ledger_pb2.RecordMetadata(resource_type="Condition", categories=[common_pb2.SENSITIVITY_CATEGORY_NORMAL],
                                         author_id="dr-1")
    record.sealed_metadata.CopyFrom(sealer.seal_record(record, metadata))
    assert submission.submit(stub, tx(net.records, register_record=record)).valid


def add_grant(net, sealer, stub, patient: Ed25519Signer) -> str:
    consent_id = str(uuid.uuid4())
    policy = ledger_policy()
    grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id="pat-1",
                                    sealed_policy=sealer.seal_policy(consent_id, "pat-1", policy))
    grant.policy_attestation = attest_policy(net.consent, CHAIN, consent_id, "pat-1", grant.sealed_policy)
    assert submission.submit(stub, tx(patient, grant_consent=grant)).valid
    return consent_id


def follower(stub, net, sealer):
    reader = VerifiedLedgerReader(stub, CHAIN, net.trust, ValidatorSet.single())
    return ConsentState(sealer), reader


def exported(state, reader) -> dict:
    data = state.export(reader.export_position)
    assert data is not None
    return data


def test_a_restarted_consent_resumes_from_its_snapshot_and_ends_as_a_full_replay(world):
    net, sealer, stub, keys, channel, tmp_path = world
    add_record(net, sealer, stub, "r-1")
    first = add_grant(net, sealer, stub, keys["pat-1"])
    state, reader = follower(stub, net, sealer)
    state.sync(reader.list_transactions)
    snapshots = ConsentSnapshots(tmp_path / "consent-snapshot.json", net.consent)
    assert snapshots.save(state, reader)
    saved_at = state.cursor
    snapshot_height = open_body(snapshots.path, sealer)["reader"]["height"]
    # More history after the snapshot: a record and a revocation of the first grant.
    add_record(net, sealer, stub, "r-2")
    assert submission.submit(stub, tx(keys["pat-1"], revoke_consent=ledger_pb2.RevokeConsent(
        consent_id=first, patient_id="pat-1"))).valid

    counting = ServiceStub(channel, net)
    resumed, resumed_reader = follower(counting, net, sealer)
    assert snapshots.load(resumed, resumed_reader) == saved_at
    resumed.sync(resumed_reader.list_transactions)
    # Only the snapshot's own block (its check) and newer blocks were read: nothing from genesis.
    assert counting.block_heights and min(counting.block_heights) == snapshot_height - 1

    replayed, replay_reader = follower(ServiceStub(channel, net), net, sealer)
    replayed.sync(replay_reader.list_transactions)
    assert resumed.cursor == replayed.cursor > saved_at
    assert exported(resumed, resumed_reader) == exported(replayed, replay_reader)
    assert resumed.record("r-2") is not None and resumed.consent(first).revoked_log_index > 0


def open_body(path, sealer) -> dict:
    """The snapshot's body, opened with the metadata key (which the records service holds too)."""
    sealed = ledger_pb2.SealedData.FromString(bytes.fromhex(json.loads(path.read_text())["body"]))
    return json.loads(sealer.open_local("consent-snapshot", sealed))


def reseal(path, sealer, body: dict, signer: Ed25519Signer | None = None) -> None:
    """Replace the snapshot's body by body, sealed again; re-signed by signer, else the old signature stays."""
    envelope = json.loads(path.read_text())
    plaintext = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    sealed = transactions.encode(sealer.seal_local("consent-snapshot", plaintext))
    envelope["body"] = sealed.hex()
    if signer is not None:
        envelope["signature"] = signer.sign(b"carechain-consent-snapshot/v1\n" + hashlib.sha256(sealed).digest()).hex()
    path.write_text(json.dumps(envelope))


def test_a_tampered_snapshot_is_refused_and_the_state_replays_from_genesis(world):
    net, sealer, stub, keys, channel, tmp_path = world
    add_record(net, sealer, stub, "r-1")
    consent_id = add_grant(net, sealer, stub, keys["pat-1"])
    assert submission.submit(stub, tx(keys["pat-1"], revoke_consent=ledger_pb2.RevokeConsent(
        consent_id=consent_id, patient_id="pat-1"))).valid
    state, reader = follower(stub, net, sealer)
    state.sync(reader.list_transactions)
    snapshots = ConsentSnapshots(tmp_path / "consent-snapshot.json", net.consent)
    assert snapshots.save(state, reader)
    original = snapshots.path.read_text()

    # No snapshot shows a policy or a category in clear.
    assert "pat-1" not in original and "dr-1" not in original
    # A holder of the metadata key (not of consent's signing key) drops the revoked consent: refused.
    body = open_body(snapshots.path, sealer)
    body["state"]["consents"] = []
    reseal(snapshots.path, sealer, body)
    fresh, fresh_reader = follower(stub, net, sealer)
    assert snapshots.load(fresh, fresh_reader) is None
    assert fresh.cursor == 0 and fresh_reader.export_position(lambda _: None, 0)["height"] == 0
    fresh.sync(fresh_reader.list_transactions)  # a full replay still sees the revocation
    assert fresh.consent(consent_id).revoked_log_index > 0

    # The untouched file loads; one signed by another key under the same id (a re-signed edit) does not.
    snapshots.path.write_text(original)
    assert snapshots.load(*follower(stub, net, sealer)) == state.cursor
    forger = ConsentSnapshots(snapshots.path, Ed25519Signer.generate(net.consent.key_id))
    assert forger.save(state, reader)
    assert snapshots.load(*follower(stub, net, sealer)) is None


def test_a_validly_signed_snapshot_of_another_history_is_refused(world):
    net, sealer, stub, keys, channel, tmp_path = world
    add_record(net, sealer, stub, "r-1")
    state, reader = follower(stub, net, sealer)
    state.sync(reader.list_transactions)
    snapshots = ConsentSnapshots(tmp_path / "consent-snapshot.json", net.consent)
    assert snapshots.save(state, reader)
    body = open_body(snapshots.path, sealer)
    body["reader"]["previous_hash"] = "AA" * 22 + "A="  # a header hash this ledger never had
    reseal(snapshots.path, sealer, body, signer=net.consent)
    fresh, fresh_reader = follower(stub, net, sealer)
    assert snapshots.load(fresh, fresh_reader) is None and fresh.cursor == 0


def test_principal_kind_is_kept_across_a_snapshot(world):
    net, sealer, stub, keys, channel, tmp_path = world
    state, reader = follower(stub, net, sealer)
    state.sync(reader.list_transactions)
    snapshots = ConsentSnapshots(tmp_path / "consent-snapshot.json", net.consent)
    assert snapshots.save(state, reader)
    resumed, resumed_reader = follower(stub, net, sealer)
    assert snapshots.load(resumed, resumed_reader) == state.cursor
    assert resumed.principal("dr-1") == state.principal("dr-1")
    assert resumed.principal("dr-1").kind == Kind.PRINCIPAL_KIND_PRACTITIONER


def test_patient_links_survive_a_snapshot_in_the_state_and_in_the_verifying_reader(world):
    net, sealer, stub, keys, channel, tmp_path = world
    for principal_id, kind, org in (("org-2", Kind.PRINCIPAL_KIND_ORGANIZATION, ""),
                                    ("pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-2")):
        registration, keys[principal_id] = register(net, principal_id, kind, org)
        assert submission.submit(stub, registration).valid
    link = attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")
    assert submission.submit(stub, tx(keys["pat-1"], link_patient_identity=link)).valid
    state, reader = follower(stub, net, sealer)
    state.sync(reader.list_transactions)
    snapshots = ConsentSnapshots(tmp_path / "consent-snapshot.json", net.consent)
    assert snapshots.save(state, reader)
    # After the snapshot, an unlink: the resumed reader re-runs the contract rules on it, which needs the link.
    assert submission.submit(stub, tx(keys["org-2"], unlink_patient_identity=ledger_pb2.UnlinkPatientIdentity(
        network_patient_id="pat-1", linked_patient_id="pat-2"))).valid

    resumed, resumed_reader = follower(ServiceStub(channel, net), net, sealer)
    snapshots.load(resumed, resumed_reader)
    assert resumed.network_patient("pat-2") == "pat-1"  # as the snapshot left it
    resumed.sync(resumed_reader.list_transactions)  # verifies the unlink's block: no IntegrityError
    assert resumed.network_patient("pat-2") == "pat-2" and resumed.linked_patients("pat-1") == []
