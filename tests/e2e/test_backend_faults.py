"""Backend outages during a stream of writes: fail fast naming the backend, never half-write, lose nothing acknowledged.

Each real server (OpenBao, MinIO, the whole etcd cluster) is stopped while a writer
keeps storing records, then restarted. Afterwards every acknowledged record must
read back byte-identical, and every record on the ledger must be whole (its key,
blob and audit trail present), acknowledged or not.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, records_of, start_network

from carechain.sdk import Purpose, permit
from carechain.sensitivity import SENSITIVE_CATEGORIES

# What the UNAVAILABLE message must name when each backend is down.
NAMED_AS = {"openbao": "vault", "minio": "s3", "etcd": "etcd"}


@pytest.fixture(scope="module")
def backed_network(tmp_path_factory):
    network = start_network(tmp_path_factory.mktemp("faults"), "backends", persistent_vault=True)
    try:
        yield network
    finally:
        network.stop()


class Writer(threading.Thread):
    """Stores records one after another until stopped, remembering what was acknowledged."""

    def __init__(self, client, patient_id: str, fhir_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.patient_id, self.fhir_id = client, patient_id, fhir_id
        self.acknowledged: list[tuple[str, bytes]] = []
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

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


def _server(network, backend: str):
    stack = network.backends
    return {"openbao": stack.openbao, "minio": stack.minio, "etcd": stack.etcd}[backend]


@pytest.mark.parametrize("backend", ["openbao", "minio", "etcd"])
def test_a_backend_outage_loses_nothing_acknowledged_and_half_writes_nothing(backed_network, backend: str) -> None:
    network = backed_network
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=sorted(SENSITIVE_CATEGORIES)))

    writer = Writer(hospital.client, patient.principal_id, fhir_id)
    writer.start()
    try:
        writer.wait_for(lambda: len(writer.acknowledged) >= 5, "writes before the outage")
        server = _server(network, backend)
        server.stop()
        try:
            writer.wait_for(lambda: len(writer.failures) >= 3, "writes to fail during the outage")
        finally:
            server.start()
        during = list(writer.failures)
        acknowledged_at_restart = len(writer.acknowledged)
        writer.wait_for(lambda: len(writer.acknowledged) >= acknowledged_at_restart + 5, "writes after the restart")
    finally:
        writer.done.set()
        writer.join(60)

    assert all(f.code() == grpc.StatusCode.UNAVAILABLE for f in during), [f.code() for f in during]
    assert any(NAMED_AS[backend] in f.details() for f in during), [f.details() for f in during]

    for record_id, raw in writer.acknowledged:
        assert reader.client.get_record(record_id).resource_json == raw, f"acknowledged record {record_id} lost"

    on_ledger = records_of(hospital.client, patient.principal_id)
    acknowledged_ids = {record_id for record_id, _ in writer.acknowledged}
    assert acknowledged_ids <= on_ledger
    for record_id in on_ledger - acknowledged_ids:
        # Committed while the caller saw an error (e.g. etcd committed after the client gave up):
        # allowed, but it must be whole, never half written.
        assert reader.client.get_record(record_id).resource_json
    for actor in (hospital, reader, patient):
        actor.client.close()
