"""Erasure on real OpenBao, MinIO and etcd: the six services on a BackendStack, looked at behind their backs.

After EraseRecords the record's wrapped data key is gone from OpenBao's KV v2 (metadata and every
version), its ciphertext object from MinIO, the tombstone is on the etcd-ordered ledger and the erasure in
the etcd audit trail. An erasure interrupted after its tombstone (identity down while it runs) leaves
the key and blob, and the reconciler destroys them on its next pass.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import hvac
import pytest

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import CareChainClient, Kind, Purpose, permit
from carechain.core.crypto import Ed25519Signer
from carechain.dev.backends.stack import BackendStack
from carechain.dev.localnet import LocalNetwork
from carechain.records.v1 import records_pb2
from carechain.storage.s3_blobstore import S3BlobStore

BUCKET = "carechain-blobs"


@dataclass
class Ward:
    network: LocalNetwork
    operator: CareChainClient
    hospital: CareChainClient
    doctor: CareChainClient
    patient: CareChainClient
    fhir_id: str


def _register(registrar: CareChainClient, network: LocalNetwork, kind: int, name: str,
              **fields: str) -> CareChainClient:
    key = Ed25519Signer.generate("pending")
    principal = registrar.register(kind, name, key.public_key_bytes(), **fields)
    return CareChainClient(network.endpoints, key.with_key_id(principal.principal_id))


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ward]:
    root = tmp_path_factory.mktemp("erasure-backends")
    network = LocalNetwork(root, backends=BackendStack(root / "backends", etcd_members=1, persistent_vault=False))
    network.start()
    clients: list[CareChainClient] = []
    try:
        operator = CareChainClient(network.endpoints, network.layout.operator_signer())
        hospital = _register(operator, network, Kind.PRINCIPAL_KIND_ORGANIZATION, "Hospital")
        doctor = _register(hospital, network, Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Onc", specialty="oncology")
        fhir_id = str(uuid.uuid4())
        patient = _register(hospital, network, Kind.PRINCIPAL_KIND_PATIENT, "Patient", fhir_patient_id=fhir_id)
        clients = [operator, hospital, doctor, patient]
        patient.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=doctor.principal_id))
        yield Ward(network, operator, hospital, doctor, patient, fhir_id)
    finally:
        for client in clients:
            client.close()
        network.stop()


def _condition(fhir_id: str) -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "onsetDateTime": "2024-02-02"}


def _vault(network: LocalNetwork) -> hvac.Client:
    openbao = network.backends.openbao
    return hvac.Client(url=openbao.address, token=openbao.root_token)


def _data_key_exists(network: LocalNetwork, record_id: str) -> bool:
    """Whether OpenBao's KV v2 holds any version (or metadata) of the record's wrapped data key."""
    try:
        _vault(network).secrets.kv.v2.read_secret_metadata(f"identity/datakeys/{record_id}", mount_point="carechain")
    except hvac.exceptions.InvalidPath:
        return False
    return True


def _blob_exists(network: LocalNetwork, content_sha256: str) -> bool:
    """Whether MinIO has a current object under the blob's content address."""
    client = network.backends.minio.client()
    names = {o.object_name for o in client.list_objects(BUCKET, prefix=S3BlobStore.object_name(content_sha256))}
    return S3BlobStore.object_name(content_sha256) in names


def test_an_erasure_destroys_the_key_in_openbao_and_the_object_in_minio(ward: Ward) -> None:
    stored = ward.hospital.put_record(ward.patient.principal_id, _condition(ward.fhir_id))
    kept = ward.hospital.put_record(ward.patient.principal_id, _condition(ward.fhir_id))
    assert _data_key_exists(ward.network, stored.record_id) and _blob_exists(ward.network, stored.content_sha256)

    receipt = ward.patient.erase_records(ward.patient.principal_id, [stored.record_id])
    assert receipt.erased_count == 1 and ward.patient.verify_erasure_receipt(receipt).log_index == receipt.log_index
    assert not _data_key_exists(ward.network, stored.record_id), "crypto-shredded: no version of the key is left"
    assert not _blob_exists(ward.network, stored.content_sha256)
    assert _data_key_exists(ward.network, kept.record_id) and _blob_exists(ward.network, kept.content_sha256)

    with pytest.raises(grpc.RpcError) as refused:
        ward.doctor.get_record(stored.record_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == f"record erased on {receipt.erased_on}"
    erasures = [e.event for e in ward.patient.access_history() if e.event.action == audit_pb2.AUDIT_ACTION_ERASE]
    assert {e.outcome for e in erasures} == {audit_pb2.AUDIT_OUTCOME_ATTEMPTED, audit_pb2.AUDIT_OUTCOME_SUCCESS}
    assert ward.operator.verify_chain().ok and ward.operator.verify_audit().ok


def test_the_reconciler_finishes_an_erasure_whose_peers_failed_after_the_tombstone(ward: Ward) -> None:
    stored = ward.hospital.put_record(ward.patient.principal_id, _condition(ward.fhir_id))
    # The patient's records token is fetched before identity goes down (an erasure naming nothing is refused).
    with pytest.raises(grpc.RpcError) as empty:
        ward.patient.erase_records(ward.patient.principal_id)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ward.network.stop_service("identity")
    try:
        # Identity is down: the tombstone commits (the erasure's commit point) but no key can be deleted.
        receipt = ward.patient.erase_records(ward.patient.principal_id, [stored.record_id], verify=False)
    finally:
        ward.network.start_service("identity")
    assert receipt.erased_count == 1 and ward.patient.verify_erasure_receipt(receipt)
    assert _data_key_exists(ward.network, stored.record_id) and _blob_exists(ward.network, stored.content_sha256)
    with pytest.raises(grpc.RpcError) as refused:
        ward.doctor.get_record(stored.record_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, "erased from the tombstone on"

    report = _reconcile_once_identity_answers(ward)
    assert report.erased_leftovers == 1
    assert not _data_key_exists(ward.network, stored.record_id)
    assert not _blob_exists(ward.network, stored.content_sha256)
    assert ward.operator.records.Reconcile(records_pb2.ReconcileRequest(), timeout=120).erased_leftovers == 0


def _reconcile_once_identity_answers(ward: Ward) -> records_pb2.ReconcileReport:
    """A reconciler pass, retried while records' channel to the restarted identity is still backing off."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return ward.operator.records.Reconcile(records_pb2.ReconcileRequest(), timeout=120)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.5)
