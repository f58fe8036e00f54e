"""Issue 13: a verified token is not verified again, yet everything that must be checked per call still is.

Attacks through a real in-process server (start_service, access table, Authenticator with a
PrincipalStatus): an expired token the server has cached, a deactivated principal's cached token, a
cached token for another audience, tampered tokens that share a prefix with a cached one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator

import grpc
import pytest
from ledger_fixtures import Net, tx
from runtime_fixtures import IDENTITY, TRUST

from carechain.common.v1 import common_pb2
from carechain.core.layout import audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, CLOCK_SKEW_SECONDS, issue_token
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.access import ANY, AccessTable, Allow
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import register_servicer, start_service
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

DOCTOR = Caller("dr-1", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "org-1")
TABLE = AccessTable(storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
                    {"StatBlob": Allow.of(practitioner=ANY, service=ANY)})


class Log:
    """The committed log PrincipalStatus follows (ListTransactions over a list)."""

    def __init__(self) -> None:
        self.entries: list[ledger_pb2.LoggedTransaction] = []

    def deactivate(self, principal_id: str) -> None:
        transaction = tx(Net().identity, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id=principal_id))
        self.entries.append(ledger_pb2.LoggedTransaction(
            log_index=len(self.entries), transaction=transaction, result=ledger_pb2.TransactionResult(valid=True)))

    def __call__(self, request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
        return ledger_pb2.ListTransactionsResponse(transactions=self.entries[request.from_log_index:],
                                                   log_size=len(self.entries))


class Stat(storage_pb2_grpc.StorageServiceServicer):
    def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
        return storage_pb2.BlobRef(sha256=request.sha256, size=1)


class Server:
    def __init__(self, authenticator: Authenticator, stub: storage_pb2_grpc.StorageServiceStub) -> None:
        self.auth = authenticator
        self.stub = stub

    def call(self, token: str) -> tuple[grpc.StatusCode, str]:
        try:
            self.stub.StatBlob(storage_pb2.StatBlobRequest(sha256="a"), timeout=10,
                               metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""


@contextlib.contextmanager
def _server(service_audience: str, status: PrincipalStatus | None = None) -> Iterator[Server]:
    authenticator = Authenticator(TRUST, service_audience, status)
    running = start_service("storage", StorageSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_servicer(storage_pb2_grpc.add_StorageServiceServicer_to_server, Stat(), TABLE,
                                              authenticator))
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield Server(authenticator, storage_pb2_grpc.StorageServiceStub(channel))
    finally:
        running.stop()


@pytest.fixture()
def log() -> Log:
    return Log()


@pytest.fixture()
def server(log: Log) -> Iterator[Server]:
    with _server(audience("storage"), PrincipalStatus(log)) as running:
        yield running


def _token(caller: Caller = DOCTOR, service: str = "storage", ttl: float = 60) -> tuple[str, int]:
    return issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience(service)), ttl)


def test_a_token_is_verified_once_and_then_answered_from_the_cache(server: Server) -> None:
    token, _ = _token()
    assert server.call(token) == (grpc.StatusCode.OK, "")
    assert server.auth._tokens.remembered(token), "the verified token was not remembered"
    assert server.call(token) == (grpc.StatusCode.OK, "")


def test_a_cached_token_past_its_expiry_is_refused(server: Server) -> None:
    # Already past exp, but within the clock-skew leeway: valid for about 1.5 s more.
    token, expires_at_ms = _token(ttl=-(CLOCK_SKEW_SECONDS - 1.5))
    assert server.call(token) == (grpc.StatusCode.OK, "")
    assert server.auth._tokens.remembered(token)
    time.sleep(max(0.0, expires_at_ms / 1000 + CLOCK_SKEW_SECONDS - time.time()) + 0.1)
    assert server.call(token) == (grpc.StatusCode.UNAUTHENTICATED, "token has expired")
    assert server.call(token) == (grpc.StatusCode.UNAUTHENTICATED, "token has expired")  # and stays refused


def test_a_deactivated_principals_cached_token_is_refused_at_once(server: Server, log: Log) -> None:
    token, _ = _token()
    other, _ = _token(Caller("dr-2", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "org-1"))
    assert server.call(token) == (grpc.StatusCode.OK, "") and server.call(other) == (grpc.StatusCode.OK, "")
    log.deactivate("dr-1")
    server.auth.principal_status.sync()  # the follower's next poll
    assert server.call(token) == (grpc.StatusCode.UNAUTHENTICATED, "the principal was deactivated")
    assert server.call(other) == (grpc.StatusCode.OK, "")  # nobody else is affected


def test_a_token_cached_by_one_service_is_refused_by_another(server: Server) -> None:
    token, _ = _token(service="records")
    with _server(audience("records")) as records:
        assert records.call(token) == (grpc.StatusCode.OK, "")
        assert records.auth._tokens.remembered(token)
    assert server.call(token) == (grpc.StatusCode.UNAUTHENTICATED, "token audience is not carechain.storage")
    assert not server.auth._tokens.remembered(token)


def _flip_last_bit(segment: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_tampered_tokens_sharing_a_prefix_with_a_cached_one_are_refused(server: Server) -> None:
    token, _ = _token()
    assert server.call(token) == (grpc.StatusCode.OK, "")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    promoted = base64.urlsafe_b64encode(json.dumps({**claims, "kind": "PRINCIPAL_KIND_OPERATOR"}).encode())
    tampered = {
        "signature bit flipped": f"{header}.{payload}.{_flip_last_bit(signature)}",
        "signature truncated": f"{header}.{payload}.{signature[:-2]}",
        "bytes appended": token + "AAAA",
        "claims changed": f"{header}.{promoted.rstrip(b'=').decode()}.{signature}",
    }
    for what, forged in tampered.items():
        code, details = server.call(forged)
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{what}: {code}"
        assert not server.auth._tokens.remembered(forged), f"{what}: a refused token was remembered"
        assert server.call(forged)[0] == grpc.StatusCode.UNAUTHENTICATED, f"{what}: accepted the second time"
    assert server.call(token) == (grpc.StatusCode.OK, "")  # the genuine one still works


def test_the_access_table_is_still_checked_for_a_cached_token(server: Server) -> None:
    patient, _ = _token(Caller("pat-1", common_pb2.PRINCIPAL_KIND_PATIENT, "org-1"))
    for _ in range(2):  # the second time its verification comes from the cache
        code, details = server.call(patient)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "patient" in details
    assert server.auth._tokens.remembered(patient)
