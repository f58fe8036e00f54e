"""Short micro-measurement of identity data keys and storage blobs (issue 13): CPU-ms, Vault requests, fsyncs.

Runs the identity and storage servicers in this process behind real gRPC (embedded backends, or identity on a
real OpenBao dev server with ``--vault``) and prints, per operation: process CPU ms (caller and server together,
from time.process_time) and OpenBao HTTP requests (counted at the hvac adapter); run it under
``strace -f -c -e trace=fsync,fdatasync,syncfs`` to count syncs. ``--batch`` calls through the batching clients
the records gateway uses (identity.data_key_client, storage.blob_client): concurrent calls share batch RPCs.

    .venv/bin/python scripts/measure_keys_blobs.py [--vault] [--batch] [-n 200] [--clients 16]

Not a benchmark: a quick before/after figure for one component; never assert on it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "unit")]

import grpc  # noqa: E402

from carechain.core.crypto import Ed25519Signer  # noqa: E402
from carechain.core.layout import DECISION_ISSUER_ID, OPERATOR_ID, TOKEN_ISSUER_ID, TrustBundle  # noqa: E402
from carechain.identity.server import IdentityServicer, register_identity  # noqa: E402
from carechain.identity.sqlite_registry import Registry  # noqa: E402
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402
from carechain.runtime import vault as vault_module  # noqa: E402
from carechain.runtime.config import IdentitySettings, StorageSettings  # noqa: E402
from carechain.runtime.keyring import LocalKeyring  # noqa: E402
from carechain.runtime.server import start_service  # noqa: E402
from carechain.storage.server import StorageServicer  # noqa: E402
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc  # noqa: E402

PATIENTS = 8
VAULT_REQUESTS = [0]
_original_request = vault_module._SessionAdapter.request


def _counting_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    VAULT_REQUESTS[0] += 1
    return _original_request(self, *args, **kwargs)


vault_module._SessionAdapter.request = _counting_request  # type: ignore[method-assign]


def _serve_identity(tmp: pathlib.Path, use_vault: bool, identity_pem: bytes, trusted: dict[str, bytes]):  # type: ignore[no-untyped-def]
    from identity_fixtures import FakeLedger

    identity = Ed25519Signer.from_pem(TOKEN_ISSUER_ID, identity_pem)
    ledger = FakeLedger(identity.public_key_bytes())
    if use_vault:
        from servers_openbao import shared_bootstrap

        from carechain.identity.vault_registry import VaultRegistry
        from carechain.runtime.vault_keyring import VaultTransitKeyManager

        boot = shared_bootstrap()
        client = vault_module.vault_client(boot.settings("identity"))
        registry, keyring = VaultRegistry(client), VaultTransitKeyManager(client)
    else:
        registry, keyring = Registry(tmp / "identity"), LocalKeyring(tmp / "identity" / "keyring")
    settings = IdentitySettings(listen_address="127.0.0.1:0", data_dir=tmp / "identity", chain_id="test-chain",
                                max_workers=32, shutdown_grace_seconds=0)
    servicer = IdentityServicer(signer=identity, trust=TrustBundle(trusted), registry=registry, keys=keyring,
                                ledger=ledger, chain_id="test-chain", token_ttl_seconds=600, challenge_ttl_seconds=30)
    return start_service("identity", settings, register_identity(servicer), [])


def _serve_storage(tmp: pathlib.Path, use_vault: bool, identity_pem: bytes, trusted: dict[str, bytes]):  # type: ignore[no-untyped-def]
    from carechain.runtime.server import register_servicer
    from carechain.storage.file_blobstore import LocalBlobStore
    from carechain.storage.server import ACCESS

    servicer = StorageServicer(LocalBlobStore(tmp / "blobs"), TrustBundle(trusted))
    settings = StorageSettings(listen_address="127.0.0.1:0", data_dir=tmp, max_workers=32, shutdown_grace_seconds=0)
    register = register_servicer(storage_pb2_grpc.add_StorageServiceServicer_to_server, servicer, ACCESS,
                                 servicer._auth)
    return start_service("storage", settings, register, [])


def _child(serve, tmp, use_vault, identity_pem, trusted, started, stop) -> None:  # type: ignore[no-untyped-def]
    running = serve(tmp, use_vault, identity_pem, trusted)
    started.put(running.address)
    stop.wait()
    running.stop()


class _Server:
    """A servicer in this process, or (split) in a child process whose CPU is measured apart."""

    def __init__(self, serve, tmp: pathlib.Path, use_vault: bool, identity: Ed25519Signer,  # type: ignore[no-untyped-def]
                 trusted: dict[str, bytes], split: bool) -> None:
        self.pid: int | None = None
        if not split:
            self._running = serve(tmp, use_vault, identity.private_pem(), trusted)
            self.address = self._running.address
            return
        context = multiprocessing.get_context("spawn")
        started, self._stop = context.Queue(), context.Event()
        self._process = context.Process(target=_child, args=(serve, tmp, use_vault, identity.private_pem(), trusted,
                                                             started, self._stop), daemon=True)
        self._process.start()
        self.address = started.get(timeout=60)
        self.pid = self._process.pid

    def cpu_seconds(self) -> float:
        """The child's CPU time so far (0 in this process's mode: it is in process_time)."""
        if self.pid is None:
            return 0.0
        fields = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.pid is None:
            self._running.stop()
        else:
            self._stop.set()
            self._process.join(30)


def _identity(tmp: pathlib.Path, use_vault: bool, split: bool):  # type: ignore[no-untyped-def]
    from identity_fixtures import RECORDS, FakeLedger, Network, register_org, register_patient

    identity = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    operator = Ed25519Signer.generate(OPERATOR_ID)
    consent = Ed25519Signer.generate(DECISION_ISSUER_ID)
    trusted = {TOKEN_ISSUER_ID: identity.public_key_bytes(), OPERATOR_ID: operator.public_key_bytes(),
               DECISION_ISSUER_ID: consent.public_key_bytes()}
    server = _Server(_serve_identity, tmp, use_vault, identity, trusted, split)
    channel = grpc.insecure_channel(server.address)
    net = Network(identity_pb2_grpc.IdentityServiceStub(channel), identity, operator, consent,
                  FakeLedger(identity.public_key_bytes()), None)
    _, org = register_org(net)
    patients = [register_patient(net, org, fhir_id=uuid.uuid4().hex)[1].principal_id for _ in range(PATIENTS)]
    return net, net.as_(RECORDS), patients, server


def _storage(tmp: pathlib.Path, split: bool):  # type: ignore[no-untyped-def]
    from identity_fixtures import Kind

    from carechain.core.layout import audience
    from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
    from carechain.runtime.auth import Caller, caller_claims

    identity = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    server = _Server(_serve_storage, tmp, False, identity, {TOKEN_ISSUER_ID: identity.public_key_bytes()}, split)
    caller = Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE)
    token = issue_token(identity, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("storage")), 600)[0]
    channel = grpc.insecure_channel(server.address)
    return storage_pb2_grpc.StorageServiceStub(channel), [("authorization", f"Bearer {token}")], server


class _with_metadata:  # noqa: N801 - a stub wrapper, named like a function
    """A stub whose every call carries the caller's token (as carechain.runtime.peers does)."""

    def __init__(self, stub: object, metadata: list[tuple[str, str]]) -> None:
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self._stub, name)
        return lambda request: method(request, metadata=self._metadata)


def _measure(name: str, n: int, clients: int, one, vault_before: int, server: _Server) -> None:  # type: ignore[no-untyped-def]
    cpu, served, wall = time.process_time(), server.cpu_seconds(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    cpu, served, wall = time.process_time() - cpu, server.cpu_seconds() - served, time.monotonic() - wall
    split = f" (caller {1000 * cpu / n:.2f} + server {1000 * served / n:.2f})" if server.pid else ""
    print(f"{name:<18} {1000 * (cpu + served) / n:6.2f} CPU-ms/op{split}  "
          f"{(VAULT_REQUESTS[0] - vault_before) / n:5.2f} Vault req/op  ({n} ops, {clients} clients, {n / wall:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", action="store_true", help="identity on a real OpenBao dev server")
    parser.add_argument("--batch", action="store_true", help="use the batch RPCs (GenerateDataKeys, ...)")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--only", choices=["keys", "blobs"], default=None)
    parser.add_argument("--split", action="store_true",
                        help="servers in a child process: caller and server CPU apart (Vault requests not counted)")
    args = parser.parse_args()
    from identity_fixtures import decision_token

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="carechain-measure-"))
    if args.only != "blobs":
        net, md, patients, running = _identity(tmp, args.vault, args.split)
        records = [f"rec-{uuid.uuid4().hex}" for _ in range(args.n)]
        keys = _with_metadata(net.stub, md)
        if args.batch:
            from carechain.identity.data_key_client import DataKeyClient

            client = DataKeyClient(lambda: keys)
        vault_before = VAULT_REQUESTS[0]

        def generate(i: int) -> None:
            patient_id = patients[i % PATIENTS]
            if args.batch:
                client.generate(patient_id, records[i])
            else:
                keys.GenerateDataKey(identity_pb2.GenerateDataKeyRequest(patient_id=patient_id, record_id=records[i]))

        tokens = [decision_token(net, records[i], patients[i % PATIENTS], ttl=600) for i in range(args.n)]

        def release(i: int) -> None:
            if args.batch:
                client.release(records[i], tokens[i])
            else:
                keys.ReleaseDataKey(identity_pb2.ReleaseDataKeyRequest(record_id=records[i], decision_token=tokens[i]))

        _measure("GenerateDataKey", args.n, args.clients, generate, vault_before, running)
        _measure("ReleaseDataKey", args.n, args.clients, release, VAULT_REQUESTS[0], running)
        running.stop()
    if args.only != "keys":
        stub, md, running = _storage(tmp, args.split)

        blobs_stub = _with_metadata(stub, md)
        if args.batch:
            from carechain.storage.blob_client import BlobClient

            blob_client = BlobClient(lambda: blobs_stub)
        blobs = [os.urandom(4096) for _ in range(args.n)]
        refs: list[str] = [""] * args.n

        def put(i: int) -> None:
            if args.batch:
                ref = blob_client.put(blobs[i])
            else:
                ref = blobs_stub.PutBlob(iter([storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata()),
                                               storage_pb2.PutBlobRequest(chunk=blobs[i])]))
            refs[i] = ref.sha256

        def get(i: int) -> None:
            if args.batch:
                blob_client.get(refs[i], len(blobs[i]))
            else:
                b"".join(c.data for c in blobs_stub.GetBlob(storage_pb2.GetBlobRequest(sha256=refs[i])))

        _measure("PutBlob (4 KiB)", args.n, args.clients, put, 0, running)
        _measure("GetBlob (4 KiB)", args.n, args.clients, get, 0, running)
        running.stop()


if __name__ == "__main__":
    main()
