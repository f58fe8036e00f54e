"""kill -9 of the real backends in the middle of a write stream, then reconcile.

OpenBao (persistent Raft storage), MinIO and a majority of a 3-member etcd cluster are each
killed with SIGKILL while a writer keeps storing small records, then started again. After
the grace period one reconciliation pass must leave exactly what the ledger references:
every acknowledged record reads back byte-identical, every object under ``blobs/`` and every
wrapped data key in OpenBao belongs to a record on the ledger, nothing is left under
``incoming/``, and the ledger and audit chains verify.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import hvac
import pytest
from helpers import RecordWriter, ledger_records, new_hospital, new_patient, new_practitioner, operator_client

from carechain.client.sdk import Purpose, permit
from carechain.dev.backends.stack import BackendStack
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

GRACE_SECONDS = 10.0
BUCKET = "carechain-blobs"  # StorageSettings.s3_bucket's default


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill9")
    local = LocalNetwork(root, backends=BackendStack(root / "backends", etcd_members=3, persistent_vault=True),
                         extra_env={"CARECHAIN_RECONCILE_GRACE_SECONDS": str(GRACE_SECONDS),
                                    "CARECHAIN_RECONCILE_INTERVAL_SECONDS": "0"})
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _kill_and_restart(network: LocalNetwork, backend: str, writer: RecordWriter) -> None:
    stack = network.backends
    if backend == "etcd":
        # A majority: the cluster loses quorum, so the writes in flight are cut off.
        for index in (0, 1):
            stack.etcd.kill_member(index)
        writer.wait_failures(1, "writes kept succeeding without an etcd quorum")
        for index in (0, 1):
            stack.etcd.start_member(index)
        return
    server = {"openbao": stack.openbao, "minio": stack.minio}[backend]
    server.kill()
    writer.wait_failures(1, f"writes kept succeeding with {backend} killed")
    server.restart()


def _reconcile(network: LocalNetwork) -> dict[str, int]:
    """Run `carechain admin reconcile` and parse its counts."""
    done = subprocess.run(
        [sys.executable, "-m", "carechain", "admin", "reconcile", "--data-dir", str(network.layout.root)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {label: int(value) for label, value in re.findall(r"^  (.+): (\d+)$", done.stdout, re.MULTILINE)}


# Its own ceiling (network start, crashes, restarts, the grace period, teardown): minutes on 2 loaded cores.
@pytest.mark.timeout(1200)
def test_kill9_of_each_backend_mid_stream_loses_nothing_and_leaves_nothing(network: LocalNetwork) -> None:
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
    writer = RecordWriter(hospital.client, patient.principal_id, fhir_id)
    writer.start()
    try:
        writer.wait_for(2, "before the first crash")
        for backend in ("openbao", "minio", "etcd"):
            _kill_and_restart(network, backend, writer)
            writer.wait_for(2, f"after {backend} came back")
    finally:
        writer.stop()

    time.sleep(GRACE_SECONDS + 1)  # what the crashes left must be older than the grace period
    report = _reconcile(network)
    assert report["abandoned write attempts"] >= 1, report
    ledger = ledger_records(network)

    for record_id, raw in writer.acknowledged:
        assert reader.client.get_record(record_id).resource_json == raw, f"acknowledged record {record_id} lost"
    minio = network.backends.minio.client()
    blobs = {o.object_name.removeprefix("blobs/") for o in minio.list_objects(BUCKET, prefix="blobs/")}
    assert blobs == set(ledger.values())
    assert not list(minio.list_objects(BUCKET, prefix="incoming/", recursive=True))
    vault = hvac.Client(url=network.backends.openbao.address, token=network.backends.openbao.root_token)
    listed = vault.secrets.kv.v2.list_secrets(path="identity/datakeys", mount_point="carechain")["data"]["keys"]
    assert set(listed) == set(ledger)
    with operator_client(network) as operator:
        chain = operator.verify_chain()
        assert chain.ok, chain.problem
        audit = operator.verify_audit()
        assert audit.ok, audit
    again = _reconcile(network)
    assert {k: v for k, v in again.items() if k != "records on the ledger"} == {
        k: 0 for k in again if k != "records on the ledger"}
    for actor in (hospital, reader, patient):
        actor.client.close()
