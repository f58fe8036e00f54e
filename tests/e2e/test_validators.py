"""Three ledger validators (separate processes) on a 3-member etcd: crashes, catch-up, etcd outages, proofs.

During one steady stream of record writes (records -> ledger through the failover
address of all validators, each write acknowledged only once its block is final):
kill -9 a validator (writes go on and stay final), restart it (it catches up), wipe
a validator's store and start it again (it rejoins from the order), kill one etcd
member (writes go on), kill a second (writes fail with UNAVAILABLE), restore. At the
end every acknowledged record is registered exactly once in every validator's chain,
the chains are identical and verify, and a client proves a record's inclusion against
a checkpoint co-signed by a quorum without trusting the validator it asks.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import uuid

import grpc
import pytest
from helpers import RecordWriter, new_hospital, new_patient, start_network

from carechain.client.sdk import CareChainClient
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2

TIMEOUT = 300  # a ceiling on condition waits, not a budget: a loaded machine is slower


@pytest.fixture(scope="module")
def validators_network(tmp_path_factory):
    network = start_network(tmp_path_factory.mktemp("validators"), "backends", validators=3)
    try:
        yield network
    finally:
        network.stop()


def validator_client(network, name: str) -> CareChainClient:
    """A client whose ledger calls go to one validator only."""
    endpoints = dataclasses.replace(network.endpoints, ledger=network.listen_addresses[name])
    return CareChainClient(endpoints, network.layout.operator_signer())


def head(network, name: str) -> ledger_pb2.ChainHead:
    with validator_client(network, name) as client:
        return client.ledger.GetChainHead(ledger_pb2.GetChainHeadRequest(), timeout=10)


def wait_caught_up(network, name: str, height: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            current = head(network, name)
            if current.header.height >= height and current.final_height >= height:
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"{name} did not catch up to block {height}"
        time.sleep(0.1)


def registered_records(client: CareChainClient) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    start = 0
    while True:
        page = client.ledger.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=start, limit=1000),
                                              timeout=30)
        for logged in page.transactions:
            body = decode_body(logged.transaction)
            if body.WhichOneof("payload") == "register_record" and logged.result.valid:
                counts[body.register_record.record_id] += 1
        start += len(page.transactions)
        if not page.transactions or start >= page.log_size:
            return counts


# Its own generous ceiling (not the global 300 s): the steps wait on conditions, and on a loaded
# 2-core machine the whole sequence takes minutes.
@pytest.mark.timeout(1500)
def test_writes_stay_final_through_validator_crashes_and_etcd_outages(validators_network):
    network = validators_network
    etcd = network.backends.etcd
    hospital = new_hospital(network)
    patient, fhir_id = new_patient(network, hospital)
    writer = RecordWriter(hospital.client, patient.principal_id, fhir_id)
    writer.start()
    try:
        writer.wait_for(5, "at the start")

        # A validator crashes: the others keep a quorum, the failover address moves on.
        network.kill_service("ledger")
        writer.wait_for(10, "with validator-1 killed")
        assert head(network, "ledger-2").final_height >= 1
        network.start_service("ledger")
        wait_caught_up(network, "ledger", head(network, "ledger-2").header.height)
        writer.wait_for(5, "after validator-1 restarted")

        # A validator loses its whole store and rejoins: it replays the order and checks every certificate.
        network.stop_service("ledger-3")
        shutil.rmtree(network.layout.service_dir("ledger-3"))
        network.start_service("ledger-3")
        wait_caught_up(network, "ledger-3", head(network, "ledger").header.height)

        # One etcd member of three down: Raft keeps a quorum.
        etcd.kill_member(0)
        writer.wait_for(5, "with one etcd member down")
        # Two down: no quorum, no ordering; writes fail, nothing is falsely acknowledged.
        etcd.kill_member(1)
        writer.wait_failures(3)
        failures_before = len(writer.failures)
        writer.wait_failures(2)
        assert {f.code() for f in writer.failures[failures_before:]} <= {grpc.StatusCode.UNAVAILABLE}
        etcd.start_member(0)
        etcd.start_member(1)
        writer.wait_for(5, "after etcd was restored")
    finally:
        writer.stop()

    acknowledged = [record_id for record_id, _ in writer.acknowledged]
    assert len(set(acknowledged)) == len(acknowledged)
    final_height = head(network, "ledger").header.height
    chains = {}
    for name in network.validator_names:
        wait_caught_up(network, name, final_height)
        with validator_client(network, name) as client:
            counts = registered_records(client)
            assert all(counts[record_id] == 1 for record_id in acknowledged), f"{name} misses or repeats a record"
            assert all(count == 1 for count in counts.values())
            verdict = client.verify_chain()
            assert verdict.ok, f"{name}: {verdict.problem}"
            chains[name] = [
                client.ledger.GetBlock(ledger_pb2.GetBlockRequest(height=h), timeout=10).header
                for h in range(final_height + 1)
            ]
    assert chains["ledger"] == chains["ledger-2"] == chains["ledger-3"]

    # `carechain ledger verify` on validator-2's copy, cross-checked against the two others.
    verify = subprocess.run(
        [sys.executable, "-m", "carechain", "ledger", "verify", "--data-dir", str(network.layout.root),
         "--validator", "ledger-2", "--peer", network.listen_addresses["ledger"],
         "--peer", network.listen_addresses["ledger-3"]],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "chain OK" in verify.stdout and verify.stdout.count("same headers") == 2

    # A client proves a record is in the co-signed log, asking one validator and trusting none.
    with validator_client(network, "ledger-2") as client:
        proof = client.verify_record_inclusion(acknowledged[-1])
        assert proof.record_id == acknowledged[-1]
        assert len(proof.checkpoint.signers) >= 2
        first = client.checkpoint()
        writer_tail = hospital.client.put_record(patient.principal_id, json.dumps({
            "resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "valueQuantity": {"value": 70},
        }).encode())
        assert writer_tail.record_id
        client.verify_consistency(first, client.checkpoint())
