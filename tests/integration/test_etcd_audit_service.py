"""The audit service built with audit_store=etcd, on the shared real cluster, through gRPC."""

from __future__ import annotations

import time
import uuid

import grpc

from carechain.audit.server import build
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import AuditSettings
from carechain.runtime.server import start_service

pytest_plugins = ["servers_etcd"]

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)


def metadata(caller: Caller) -> list[tuple[str, str]]:
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
    return [("authorization", f"Bearer {token}")]


def settings_for(tmp_path, etcd_cluster, etcd_prefix) -> AuditSettings:
    trust_dir = tmp_path / "trust"
    write_public_key(trust_dir / f"{TOKEN_ISSUER_ID}.pub", IDENTITY.public_key_bytes())
    return AuditSettings(
        listen_address="127.0.0.1:0", data_dir=tmp_path / "audit", trust_dir=trust_dir, chain_id="audit-chain",
        audit_store="etcd", **etcd_cluster.client_settings(), etcd_prefix=etcd_prefix, shutdown_grace_seconds=0,
    )


def test_events_recorded_through_the_service_are_in_etcd_and_survive_a_restart(tmp_path, etcd_cluster, etcd_prefix,
                                                                               etcd_client):
    settings = settings_for(tmp_path, etcd_cluster, etcd_prefix)
    records = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
    event = audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=int(time.time() * 1000) - 5_000, service="records", actor_id="prac-1",
        patient_id="pat-1",
        action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
    )
    receipts = []
    for _ in range(2):  # the second service instance sees the first one's trail (and stays idempotent)
        register, closers = build(settings)
        running = start_service("audit", settings, register, closers)
        try:
            with grpc.insecure_channel(running.address) as channel:
                stub = audit_pb2_grpc.AuditServiceStub(channel)
                receipts.append(stub.RecordEvent(audit_pb2.RecordEventRequest(event=event),
                                                 metadata=metadata(records), timeout=10))
                history = stub.GetAccessHistory(audit_pb2.GetAccessHistoryRequest(patient_id="pat-1"),
                                                metadata=metadata(records), timeout=10)
                verdict = stub.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(),
                                                metadata=metadata(records), timeout=10)
        finally:
            running.stop()
        assert [s.event for s in history.events] == [event]
        assert verdict.ok and verdict.events_checked == 1
    assert receipts[0] == receipts[1] and receipts[0].sequence == 1
    assert etcd_client.get(f"{etcd_prefix}/audit-chain/audit/events/{1:020d}") is not None
    assert not (tmp_path / "audit" / "audit.sqlite3").exists()


def test_etcd_backed_service_seals_batches_proves_events_streams_and_raises_alerts(tmp_path, etcd_cluster,
                                                                                  etcd_prefix):
    from carechain.audit.hashchain import verify_event_proof

    settings = settings_for(tmp_path, etcd_cluster, etcd_prefix).model_copy(
        update={"batch_max_seconds": 0.0, "anchor_batches": False})
    records = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
    operator = Caller("operator", c.PRINCIPAL_KIND_OPERATOR)
    patient = Caller("psn-1", c.PRINCIPAL_KIND_PATIENT)
    register, closers = build(settings)
    running = start_service("audit", settings, register, closers)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            receipts = [
                stub.RecordEvent(audit_pb2.RecordEventRequest(event=audit_pb2.AuditEvent(
                    event_id=str(uuid.uuid4()), service="records", actor_id="prac-1", patient_id="psn-1",
                    action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS, alert=i == 2,
                    purpose=c.PURPOSE_OF_USE_ETREAT if i == 2 else c.PURPOSE_OF_USE_TREAT,
                )), metadata=metadata(records), timeout=10)
                for i in range(3)
            ]
            deadline = time.monotonic() + 120
            while True:  # the background sealer seals within a round (batch_max_seconds=0)
                try:
                    proof = stub.GetEventProof(audit_pb2.GetEventProofRequest(sequence=3), metadata=metadata(patient),
                                               timeout=10)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and time.monotonic() < deadline
                    time.sleep(0.1)
            verify_event_proof(proof, receipts[2].event_hash)
            assert not proof.anchored
            streamed = list(stub.StreamEvents(audit_pb2.StreamEventsRequest(after_sequence=1, replay_only=True),
                                              metadata=metadata(operator), timeout=10))
            assert [s.sequence for s in streamed] == [2, 3]
            [note] = stub.ListNotifications(audit_pb2.ListNotificationsRequest(), metadata=metadata(patient),
                                            timeout=10).notifications
            assert note.event.sequence == 3
            [item] = stub.ListReviewItems(audit_pb2.ListReviewItemsRequest(), metadata=metadata(operator),
                                          timeout=10).items
            resolved = stub.ResolveReviewItem(audit_pb2.ResolveReviewItemRequest(item_id=item.item_id, note="ok"),
                                              metadata=metadata(operator), timeout=10)
            assert resolved.status == audit_pb2.REVIEW_STATUS_RESOLVED and resolved.resolution_sequence == 4
            verdict = stub.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(), metadata=metadata(operator),
                                            timeout=10)
            assert verdict.ok and verdict.events_checked == 4 and verdict.batches_checked >= 1
    finally:
        running.stop()
