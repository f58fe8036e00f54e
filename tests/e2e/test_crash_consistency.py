"""Nothing half-written: kill -9 of each service in the middle of a write stream, then reconcile.

Embedded backends. A writer keeps storing small records while each of the six services in
turn is killed with SIGKILL (no shutdown at all) and started again. After the grace period
one `carechain admin reconcile` pass must leave exactly what the ledger says exists: every
acknowledged record reads back byte-identical, every blob and wrapped data key belongs to a
record on the ledger, no temporary upload is left, every audited write attempt is closed
(SUCCESS when on the ledger, FAILED otherwise), and the ledger and audit chains verify. A
second pass finds nothing (idempotent).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import (
    RecordWriter,
    ledger_records,
    new_hospital,
    new_patient,
    new_practitioner,
    operator_client,
    records_of,
)

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Purpose, permit
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

GRACE_SECONDS = 8.0  # writes give up after half of it: generous for a loaded 2-core machine
# Services whose death makes the write in flight fail after it created a data key or a blob.
FAILS_MID_WRITE = ("storage", "ledger")
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    local = LocalNetwork(tmp_path_factory.mktemp("crash"), extra_env={
        "CARECHAIN_RECONCILE_GRACE_SECONDS": str(GRACE_SECONDS),
        "CARECHAIN_RECONCILE_INTERVAL_SECONDS": "0",  # passes only when the test asks: deterministic counts
    })
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _reconcile(network: LocalNetwork, *extra: str) -> dict[str, int]:
    """Run `carechain admin reconcile` and parse its counts."""
    done = subprocess.run(
        [sys.executable, "-m", "carechain", "admin", "reconcile", "--data-dir", str(network.layout.root), *extra],
        capture_output=True, text=True, timeout=300, env=os.environ,
    )
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^  (.+): (\d+)$", done.stdout, re.MULTILINE))
    return {label: int(value) for label, value in counts.items()}




def _stored_blobs(network: LocalNetwork) -> set[str]:
    blobs = network.layout.service_dir("storage") / "blobs"
    return {p.name for p in blobs.glob("*/*") if SHA256_NAME.match(p.name)}


def _stored_data_keys(network: LocalNetwork) -> set[str]:
    database = network.layout.service_dir("identity") / "identity.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT record_id FROM data_keys")}


def _write_events(network: LocalNetwork) -> list[audit_pb2.AuditEvent]:
    with operator_client(network) as client:
        return [stored.event for stored in client.stream_audit_events(service="records", replay_only=True)
                if stored.event.action == audit_pb2.AUDIT_ACTION_WRITE]


# Its own ceiling (network start, crashes, restarts, the grace period, teardown): minutes on 2 loaded cores.
@pytest.mark.timeout(900)
def test_kill9_of_every_service_mid_stream_leaves_nothing_half_written(network: LocalNetwork) -> None:
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
    # What a storage crash in the middle of an upload leaves behind.
    leftover = network.layout.service_dir("storage") / "blobs" / "incoming" / "blob-crashed-upload"
    leftover.write_bytes(b"partial ciphertext")

    writer = RecordWriter(hospital.client, patient.principal_id, fhir_id)
    writer.start()
    try:
        writer.wait_for(2, "before the first crash")
        for service in ("storage", "ledger", "identity", "audit", "consent", "records"):
            network.kill_service(service)
            if service in FAILS_MID_WRITE:
                writer.wait_failures(1, f"writes kept succeeding with {service} killed")
            network.start_service(service)
            writer.wait_for(2, f"after {service} came back")
    finally:
        writer.stop()
    assert writer.failures, "no write was cut short by a crash"

    # Everything the crashes left is younger than the grace period until it has passed.
    time.sleep(GRACE_SECONDS + 1)
    first = _reconcile(network)
    ledger = ledger_records(network)
    assert first["abandoned write attempts"] >= 1, first
    assert first["orphan data keys"] >= 1, first  # at least the write cut off by the storage crash
    assert first["stale temporary uploads"] >= 1, first
    assert first["records on the ledger"] == len(ledger)

    acknowledged = {record_id for record_id, _ in writer.acknowledged}
    assert acknowledged <= set(ledger)
    for record_id, raw in writer.acknowledged:
        assert reader.client.get_record(record_id, Purpose.PURPOSE_OF_USE_TREAT).resource_json == raw, record_id
    for record_id in records_of(network, patient.principal_id) - acknowledged:
        # Committed while the caller saw an error: allowed, but whole.
        assert reader.client.get_record(record_id, Purpose.PURPOSE_OF_USE_TREAT).resource_json

    # Nothing but what the ledger references.
    assert _stored_blobs(network) == set(ledger.values())
    assert _stored_data_keys(network) == set(ledger)
    assert not list((network.layout.service_dir("storage") / "blobs" / "incoming").iterdir())
    events = _write_events(network)
    attempted = {e.record_id for e in events if e.outcome == audit_pb2.AUDIT_OUTCOME_ATTEMPTED}
    committed = {e.record_id for e in events if e.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS}
    failed = {e.record_id for e in events if e.outcome == audit_pb2.AUDIT_OUTCOME_FAILED}
    assert committed == set(ledger) & attempted, "a WRITE/SUCCESS event for a record that is not on the ledger"
    assert attempted - set(ledger) <= failed, "an attempted write that never committed is not closed"
    assert set(ledger) <= attempted

    with operator_client(network) as operator:
        chain = operator.verify_chain()
        assert chain.ok, chain.problem
        audit = operator.verify_audit()
        assert audit.ok, audit
    # Idempotent: a second pass finds nothing more.
    second = _reconcile(network)
    assert {k: v for k, v in second.items() if k != "records on the ledger"} == {
        k: 0 for k in second if k != "records on the ledger"}
    for actor in (hospital, reader, patient):
        actor.client.close()
