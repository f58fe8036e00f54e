"""PrincipalStatus folds lifecycle transactions from the log; Authenticator refuses deactivated principals."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from ledger_fixtures import TIMEOUT, Net, onboarding, open_ledger, tx
from ledger_service_fixtures import ServiceStub, ledger_service

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unauthenticated, Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger import submission
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.patient_links import PatientLinkTable
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots


class Log:
    """ListTransactions over a list, paged like the ledger."""

    def __init__(self) -> None:
        self.entries: list[ledger_pb2.LoggedTransaction] = []

    def add(self, transaction: ledger_pb2.Transaction, valid: bool = True) -> None:
        self.entries.append(ledger_pb2.LoggedTransaction(
            log_index=len(self.entries), transaction=transaction, result=ledger_pb2.TransactionResult(valid=valid)))

    def __call__(self, request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
        page = self.entries[request.from_log_index:request.from_log_index + 2]  # small pages on purpose
        return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=len(self.entries))


class Metadata:
    def __init__(self, token: str) -> None:
        self.token = token

    def invocation_metadata(self):
        return [("authorization", f"Bearer {self.token}")]


def test_deactivations_and_rotations_are_folded_in_order_and_invalid_ones_ignored() -> None:
    net, log = Net(), Log()
    new_key = Ed25519Signer.generate("dr-1").public_key_bytes()
    log.add(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="dr-9")), valid=False)
    log.add(tx(net.identity, rotate_principal_key=ledger_pb2.RotatePrincipalKey(principal_id="dr-1",
                                                                               public_key=new_key)))
    log.add(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="dr-2")))
    status = PrincipalStatus(log)
    assert status.sync() == 3
    assert status.deactivated("dr-2") and not status.deactivated("dr-9") and not status.deactivated("dr-1")
    assert status.current_key("dr-1") == new_key and status.current_key("dr-2") is None
    assert status.sync() == 3  # nothing new: nothing changes


def test_patient_identity_links_and_unlinks_are_folded() -> None:
    net, log = Net(), Log()
    patient = Ed25519Signer.generate("pat-1")

    def link(linked: str, valid: bool = True) -> None:
        log.add(tx(patient, link_patient_identity=ledger_pb2.LinkPatientIdentity(
            network_patient_id="pat-1", linked_patient_id=linked, organization_id="org-2")), valid=valid)

    link("pat-2")
    link("pat-3")
    link("pat-9", valid=False)
    log.add(tx(net.identity, unlink_patient_identity=ledger_pb2.UnlinkPatientIdentity(
        network_patient_id="pat-1", linked_patient_id="pat-3")))
    status = PrincipalStatus(log)
    status.sync()
    assert status.network_patient("pat-2") == "pat-1" and status.network_patient("pat-3") == "pat-3"
    assert status.network_patient("pat-9") == "pat-9" and status.network_patient("pat-1") == "pat-1"
    assert status.linked_patients("pat-1") == ["pat-2"]
    # A snapshot's rows restore the same table.
    restored = PatientLinkTable(json.loads(json.dumps(status._links.rows())))
    assert restored.network_patient("pat-2") == "pat-1" and restored.linked_patients("pat-1") == ["pat-2"]


def test_a_deactivated_principals_live_token_stops_at_the_next_poll() -> None:
    net, log = Net(), Log()
    issuer = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    status = PrincipalStatus(log, poll_seconds=0.05).start()
    try:
        auth = Authenticator(TrustBundle({TOKEN_ISSUER_ID: issuer.public_key_bytes()}), audience("records"), status)
        caller = Caller("dr-2", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "org-1")
        token, _ = issue_token(issuer, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("records")), 60)
        assert auth.authenticate(Metadata(token)).principal_id == "dr-2"
        log.add(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="dr-2")))
        deadline = time.monotonic() + 2
        while not status.deactivated("dr-2") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(Unauthenticated) as raised:
            auth.authenticate(Metadata(token))
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED and "deactivated" in raised.value.message
    finally:
        status.close()


# --- following by push (WatchBlocks) against a real ledger service (issue 13) ----------------------


def test_a_deactivation_is_pushed_to_the_follower_without_polling(tmp_path) -> None:
    net = Net()
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net, "svc-records")
        # A poll interval far beyond the wait below: only the stream can deliver the deactivation in time.
        status = PrincipalStatus.following(lambda: stub, poll_seconds=600).start()
        try:
            deadline = time.monotonic() + 10
            while stub.calls.get("WatchBlocks", 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            polls_before = stub.calls.get("ListTransactions", 0)
            for onboard in onboarding(net)[0]:  # registers dr-1
                submission.submit(stub, onboard)
            submission.submit(stub, tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(
                principal_id="dr-1")))
            while not status.deactivated("dr-1") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert status.deactivated("dr-1")
            assert stub.calls.get("ListTransactions", 0) == polls_before  # pushed, not polled
        finally:
            status.close()


def test_a_ledger_without_watch_blocks_is_polled() -> None:
    net, log = Net(), Log()

    class NoStream(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNIMPLEMENTED

    def watch(_request):
        raise NoStream()

    status = PrincipalStatus(log, poll_seconds=0.05, watch_blocks=watch).start()
    try:
        log.add(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="dr-3")))
        deadline = time.monotonic() + 5
        while not status.deactivated("dr-3") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert status.deactivated("dr-3")
    finally:
        status.close()


def _deactivate(stub, net, principal_id: str) -> None:
    submission.submit(stub, tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(
        principal_id=principal_id)))


def test_a_restarted_status_resumes_from_its_snapshot_and_a_tampered_one_is_ignored(tmp_path) -> None:
    net = Net()
    signer = Ed25519Signer.generate("svc-records")
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net, "svc-records")
        for onboard in onboarding(net)[0]:
            submission.submit(stub, onboard)
        _deactivate(stub, net, "dr-1")
        snapshots = StatusSnapshots(tmp_path / "status.json", signer)
        first = PrincipalStatus.following(lambda: stub, poll_seconds=600, snapshots=snapshots).start()
        deadline = time.monotonic() + 10
        while not first.deactivated("dr-1") and time.monotonic() < deadline:
            time.sleep(0.01)
        saved_at = first.cursor
        first.close()  # saves the snapshot
        assert saved_at >= 4 and snapshots.read()["log_size"] == saved_at
        _deactivate(stub, net, "pat-1")  # while it was down

        counting = ServiceStub(channel, net, "svc-records")
        resumed = PrincipalStatus.following(lambda: counting, poll_seconds=600, snapshots=snapshots).start()
        try:
            while not resumed.deactivated("pat-1") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert resumed.deactivated("pat-1") and resumed.deactivated("dr-1")  # the snapshot's, and the new
            reads = [r.from_log_index for n, r in counting.requests if n == "ListTransactions"]
            watches = [r.from_height for n, r in counting.requests if n == "WatchBlocks"]
            assert reads and min(reads) == saved_at and watches and min(watches) > 0  # nothing from index 0
        finally:
            resumed.close()

        # The attacker removes dr-1 from the snapshot's deactivations, keeping the signature: ignored.
        envelope = json.loads(snapshots.path.read_text())
        body = json.loads(bytes.fromhex(envelope["body"]))
        body["deactivated"] = [p for p in body["deactivated"] if p != "dr-1"]
        envelope["body"] = json.dumps(body, separators=(",", ":"), sort_keys=True).encode().hex()
        snapshots.path.write_text(json.dumps(envelope))
        fresh = PrincipalStatus.following(lambda: stub, poll_seconds=600, snapshots=snapshots)
        assert fresh.resume() == 0
        assert fresh.sync() > 0 and fresh.deactivated("dr-1")  # a full read still sees it


def test_a_stream_ended_by_its_deadline_is_reopened_at_once_from_where_it_stopped(tmp_path) -> None:
    net = Net()
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net, "svc-records")
        starts: list[int] = []

        def short_lived(request):
            # Like a peer stub's stream at its deadline: one message, then Unavailable.
            starts.append(request.from_height)
            stream = stub.WatchBlocks(ledger_pb2.WatchBlocksRequest(from_height=request.from_height,
                                                                    heartbeat_ms=50))
            yield next(stream)
            stream.cancel()
            raise Unavailable("ledger service", "deadline")

        status = PrincipalStatus(stub.ListTransactions, poll_seconds=600, watch_blocks=short_lived).start()
        try:
            for onboard in onboarding(net)[0]:
                submission.submit(stub, onboard)
            _deactivate(stub, net, "dr-1")
            deadline = time.monotonic() + 10
            while not status.deactivated("dr-1") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert status.deactivated("dr-1") and len(starts) > 1  # reopened, not left to the 600 s poll
        finally:
            status.close()

@pytest.fixture
def own_ledger(tmp_path):
    """(net, ledger): an in-process ledger with org-1, dr-1 and pat-1 registered (log size 3)."""
    net = Net()
    ledger = open_ledger(tmp_path, net)
    try:
        for onboard in onboarding(net)[0]:
            ledger.submit(onboard, TIMEOUT)
        yield net, ledger
    finally:
        ledger.close()


class OwnLog:
    """A ledger's own log by pages, as the ledger service follows it, recording what was asked and served."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.read_from: list[int] = []
        self.folded: list[int] = []

    def __call__(self, request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
        self.read_from.append(request.from_log_index)
        page = self.ledger.list_transactions(request.from_log_index, request.limit)
        self.folded.extend(t.log_index for t in page)
        return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=self.ledger.log_size())


def test_a_status_polling_its_own_ledger_saves_when_due_and_a_restart_folds_only_what_is_new(
        tmp_path, own_ledger) -> None:
    # As the ledger service wires it: its own log by pages (no stream), its own blocks to check the snapshot.
    net, ledger = own_ledger
    ledger.submit(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="dr-1")),
                  TIMEOUT)
    own_log = OwnLog(ledger)
    snapshots = StatusSnapshots.in_data_dir(tmp_path / "data", Ed25519Signer.generate("svc-ledger"))
    snapshots.every = 2
    first = PrincipalStatus(own_log, poll_seconds=0.01, snapshots=snapshots, get_block=ledger.block).start()
    deadline = time.monotonic() + 10
    while snapshots.read() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.close()
    assert snapshots.read()["log_size"] == 4 and first.deactivated("dr-1")  # saved while polling
    ledger.submit(tx(net.identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="pat-1")),
                  TIMEOUT)

    own_log.folded.clear()
    resumed = PrincipalStatus(own_log, poll_seconds=600, snapshots=snapshots, get_block=ledger.block)
    assert resumed.resume() == 4
    assert resumed.sync() == 5
    assert own_log.folded == [4]  # one transaction replayed: the one committed since the snapshot
    assert resumed.deactivated("dr-1") and resumed.deactivated("pat-1")


def test_a_snapshot_beyond_the_ledger_head_is_ignored(tmp_path, own_ledger) -> None:
    _, ledger = own_ledger
    snapshots = StatusSnapshots.in_data_dir(tmp_path / "data", Ed25519Signer.generate("svc-ledger"))
    # Signed by the right key, but of a longer history than this ledger holds (e.g. a restored backup).
    snapshots.write({"height": 9, "header_hash": "00" * 32, "log_size": 40, "deactivated": [], "keys": {}})
    status = PrincipalStatus(Log(), snapshots=snapshots, get_block=ledger.block)
    assert status.resume() == 0


def test_a_snapshot_is_checked_once_the_ledger_is_reachable_instead_of_reading_from_index_0(
        tmp_path, own_ledger) -> None:
    _, ledger = own_ledger
    snapshots = StatusSnapshots.in_data_dir(tmp_path / "data", Ed25519Signer.generate("svc-audit"))
    own_log = OwnLog(ledger)
    read_from = own_log.read_from

    first = PrincipalStatus(own_log, snapshots=snapshots, get_block=ledger.block)
    first.sync()
    assert first.save_snapshot()
    read_from.clear()
    down = [True]

    def get_block(height: int) -> ledger_pb2.Block:
        if down[0]:
            raise Unavailable("ledger", "connection refused")
        return ledger.block(height)

    later = PrincipalStatus(own_log, poll_seconds=0.01, snapshots=snapshots, get_block=get_block).start()
    try:
        time.sleep(0.1)
        assert later.cursor == 0 and read_from == []  # waiting for the ledger, not replaying meanwhile
        down[0] = False
        deadline = time.monotonic() + 10
        while not read_from and time.monotonic() < deadline:
            time.sleep(0.01)
        assert read_from and min(read_from) == 3  # resumed at the snapshot, then read what is new
    finally:
        later.close()
