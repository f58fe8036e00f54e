"""Backend outages during a stream of writes: fail fast naming the backend, never half-write, lose nothing acknowledged.

Each real server (OpenBao, MinIO, the whole etcd cluster) is stopped while a writer
keeps storing records, then restarted. Afterwards every acknowledged record must
read back byte-identical, and every record on the ledger must be whole (its key,
blob and audit trail present), acknowledged or not.
"""

from __future__ import annotations

import grpc
import pytest
from helpers import RecordWriter, new_hospital, new_patient, new_practitioner, records_of, start_network

from carechain.client.sdk import Purpose, permit
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

# What the UNAVAILABLE message must name when each backend is down.
NAMED_AS = {"openbao": "vault", "minio": "s3", "etcd": "etcd"}


@pytest.fixture(scope="module")
def backed_network(tmp_path_factory):
    network = start_network(tmp_path_factory.mktemp("faults"), "backends", persistent_vault=True)
    try:
        yield network
    finally:
        network.stop()


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
                                        categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))

    writer = RecordWriter(hospital.client, patient.principal_id, fhir_id)
    writer.start()
    try:
        writer.wait_for(5, "before the outage")
        server = _server(network, backend)
        server.stop()
        try:
            writer.wait_failures(3, "writes did not fail during the outage")
        finally:
            server.start()
        during = list(writer.failures)
        writer.wait_for(5, "after the restart")
    finally:
        writer.stop()

    assert all(f.code() == grpc.StatusCode.UNAVAILABLE for f in during), [f.code() for f in during]
    assert any(NAMED_AS[backend] in f.details() for f in during), [f.details() for f in during]

    for record_id, raw in writer.acknowledged:
        assert reader.client.get_record(record_id).resource_json == raw, f"acknowledged record {record_id} lost"

    on_ledger = records_of(network, patient.principal_id)
    acknowledged_ids = {record_id for record_id, _ in writer.acknowledged}
    assert acknowledged_ids <= on_ledger
    for record_id in on_ledger - acknowledged_ids:
        # Committed while the caller saw an error (e.g. etcd committed after the client gave up):
        # allowed, but it must be whole, never half written.
        assert reader.client.get_record(record_id).resource_json
    for actor in (hospital, reader, patient):
        actor.client.close()
