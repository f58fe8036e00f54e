"""Building blocks for end-to-end tests: principals registered through the real services."""

from __future__ import annotations

import json
import pathlib
import threading
import time
import uuid
from dataclasses import dataclass

import grpc

from carechain.client.sdk import CareChainClient, Kind
from carechain.core.crypto import Ed25519Signer
from carechain.dev.backends.stack import BackendStack
from carechain.dev.localnet import LocalNetwork
from carechain.ledger.transactions import decode_body, logged_transactions
from carechain.ledger.v1 import ledger_pb2

MODES = ("embedded", "backends")


def start_network(root: pathlib.Path, mode: str, persistent_vault: bool = False, validators: int = 1) -> LocalNetwork:
    """Start a network in one of MODES under root (validators > 1 needs mode "backends")."""
    backends = BackendStack(root / "backends", etcd_members=3, persistent_vault=persistent_vault) \
        if mode == "backends" else None
    network = LocalNetwork(root, backends=backends, validators=validators)
    network.start()
    return network


@dataclass
class Actor:
    """A registered principal and a client acting as it."""

    principal_id: str
    signer: Ed25519Signer
    client: CareChainClient


def register(network: LocalNetwork, registrar: CareChainClient, kind: int, name: str, **fields: str) -> Actor:
    key = Ed25519Signer.generate("pending")
    principal = registrar.register(kind, name, key.public_key_bytes(), **fields)
    signer = key.with_key_id(principal.principal_id)
    return Actor(principal.principal_id, signer, CareChainClient(network.endpoints, signer))


def new_hospital(network: LocalNetwork) -> Actor:
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        return register(network, operator, Kind.PRINCIPAL_KIND_ORGANIZATION, f"Hospital {uuid.uuid4().hex[:6]}")


def new_practitioner(network: LocalNetwork, hospital: Actor, specialty: str) -> Actor:
    return register(network, hospital.client, Kind.PRINCIPAL_KIND_PRACTITIONER, f"Dr. {specialty}", specialty=specialty)


def new_patient(network: LocalNetwork, hospital: Actor, fhir_patient_id: str | None = None) -> tuple[Actor, str]:
    fhir_id = fhir_patient_id or str(uuid.uuid4())
    return register(network, hospital.client, Kind.PRINCIPAL_KIND_PATIENT, "Patient", fhir_patient_id=fhir_id), fhir_id


def tamper_blob(network: LocalNetwork, content_sha256: str) -> None:
    """Change one byte of a stored ciphertext behind the storage service's back (file or S3 object)."""
    if network.backends is None:
        [blob] = [p for p in network.layout.service_dir("storage").rglob(content_sha256) if p.is_file()]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        return
    import io

    from carechain.storage.s3_blobstore import S3BlobStore

    client = network.backends.minio.client()
    bucket = "carechain-blobs"
    name = S3BlobStore.object_name(content_sha256)
    data = bytearray(client.get_object(bucket, name).read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(bucket, name, io.BytesIO(bytes(data)), len(data))


def token_issuer(network: LocalNetwork):
    """The identity service's real token-signing key (a file, or a Transit key used with the root token)."""
    if network.backends is None:
        return Ed25519Signer.from_file("svc-identity", network.layout.key_file("svc-identity"))
    import hvac

    from carechain.runtime.vault import VaultTransitSigner

    client = hvac.Client(url=network.backends.openbao.address, token=network.backends.openbao.root_token)
    return VaultTransitSigner(client, "svc-identity", key_id="svc-identity")


def operator_client(network: LocalNetwork) -> CareChainClient:
    """A client acting as the network operator (ledger-wide reads are not for members: docs/security.md)."""
    return CareChainClient(network.endpoints, network.layout.operator_signer())


def records_of(network: LocalNetwork, patient_id: str) -> set[str]:
    """Record ids registered on the ledger (validly) for a patient, as the operator reads them."""
    with operator_client(network) as client:
        return _records_of(client, patient_id)


def _records_of(client: CareChainClient, patient_id: str) -> set[str]:
    return {r.record_id for r in _registered_records(client) if r.patient_id == patient_id}


def _registered_records(client: CareChainClient) -> list[ledger_pb2.RegisterRecord]:
    """Every valid RegisterRecord on the ledger, in log order."""
    found = []
    for logged in logged_transactions(client.ledger):
        body = decode_body(logged.transaction)
        if logged.result.valid and body.WhichOneof("payload") == "register_record":
            found.append(body.register_record)
    return found


class RecordWriter(threading.Thread):
    """Stores records one after another until stopped, remembering what was acknowledged and what failed."""

    TIMEOUT = 300.0  # a ceiling on each condition wait (a loaded machine is slower), not a budget

    def __init__(self, client, patient_id: str, fhir_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.patient_id, self.fhir_id = client, patient_id, fhir_id
        self.acknowledged: list[tuple[str, bytes]] = []  # (record id, resource bytes)
        self.failures: list[grpc.RpcError] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            raw = json.dumps({
                "resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{self.fhir_id}"}, "valueQuantity": {"value": 72},
            }).encode()
            try:
                self.acknowledged.append((self.client.put_record(self.patient_id, raw).record_id, raw))
            except grpc.RpcError as exc:
                self.failures.append(exc)
                time.sleep(0.05)

    def wait_for(self, more: int, what: str) -> None:
        """Wait until `more` further writes are acknowledged."""
        self._wait(lambda: len(self.acknowledged), more, f"writes stalled {what}")

    def wait_failures(self, more: int, what: str = "writes kept succeeding") -> None:
        """Wait until `more` further writes have failed."""
        self._wait(lambda: len(self.failures), more, what)

    def _wait(self, count, more: int, message: str) -> None:
        target = count() + more
        deadline = time.monotonic() + self.TIMEOUT
        while count() < target:
            assert time.monotonic() < deadline, f"{message} ({len(self.failures)} failures)"
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop writing and wait for the thread."""
        self.done.set()
        self.join(self.TIMEOUT)


def ledger_records(network: LocalNetwork) -> dict[str, str]:
    """record id -> content sha256 of every valid RegisterRecord."""
    with operator_client(network) as client:
        return {r.record_id: r.content_sha256 for r in _registered_records(client)}
