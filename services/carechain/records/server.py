"""RecordsService: the gRPC API partner hospitals call."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.layout import TrustBundle, audience
from carechain.labels.security_labels import security_label_messages
from carechain.ledger.sealing import metadata_sealer
from carechain.records.gateway import RecordsGateway, handling_label_codings
from carechain.records.reconcile import BackgroundReconciler, Reconciler
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.runtime.access import ANY, AccessTable, Allow, caller
from carechain.runtime.auth import Authenticator
from carechain.runtime.config import RecordsSettings
from carechain.runtime.peers import service_peers
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.vault import service_signer

SERVICE = records_pb2.DESCRIPTOR.services_by_name["RecordsService"]
SERVICE_NAME = SERVICE.full_name

# Who may call what (docs/security.md). Which records a practitioner may read is the
# patient's consent, decided per record by the consent service.
ACCESS = AccessTable(SERVICE, {
    "PutRecord": Allow.of(practitioner=ANY, organization=ANY, note="for patients registered with the network"),
    "GetRecord": Allow.of(practitioner=ANY, note="only what the patient's consent permits"),
    "Reconcile": Allow.of(operator=ANY, note="counts only; removes what crashed writes left behind"),
})


class RecordsServicer(records_pb2_grpc.RecordsServiceServicer):
    """Authenticates callers and hands requests to the gateway flows."""

    def __init__(self, gateway: RecordsGateway, authenticator: Authenticator, reconciler: Reconciler) -> None:
        self._gateway = gateway
        self._auth = authenticator
        self._reconciler = reconciler

    def PutRecord(self, request: records_pb2.PutRecordRequest, context: grpc.ServicerContext
                  ) -> records_pb2.PutRecordResponse:
        stored = self._gateway.put_record(caller(context), request.patient_id, request.resource_json)
        return records_pb2.PutRecordResponse(
            record_id=stored.record_id,
            version=stored.version,
            categories=stored.categories,
            content_sha256=stored.content_sha256,
            ledger_log_index=stored.log_index,
            security_labels=security_label_messages(stored.categories),
        )

    def GetRecord(self, request: records_pb2.GetRecordRequest, context: grpc.ServicerContext
                  ) -> records_pb2.GetRecordResponse:
        record = self._gateway.get_record(
            caller(context), request.record_id, request.purpose, request.action, request.break_glass,
            request.break_glass_reason,
        )
        return records_pb2.GetRecordResponse(
            record_id=record.record_id,
            resource_json=record.resource_json,
            categories=record.categories,
            patient_id=record.patient_id,
            resource_type=record.resource_type,
            decision_id=record.decision_id,
            break_glass=record.break_glass,
            break_glass_expires_at_ms=record.break_glass_expires_at_ms,
            redisclosure_notice=record.redisclosure_notice,
            security_labels=[*security_label_messages(record.categories),
                             *(common_pb2.SecurityLabel(**c) for c in handling_label_codings(record.handling_labels))],
            labelled_resource_json=record.labelled_resource_json,
        )

    def Reconcile(self, request: records_pb2.ReconcileRequest, context: grpc.ServicerContext
                  ) -> records_pb2.ReconcileReport:
        return self._reconciler.run(dry_run=request.dry_run)


def build(settings: RecordsSettings) -> tuple[Register, list[Callable[[], None]]]:
    """Wire the records service from its settings."""
    signer = service_signer(settings, "records")
    trust = TrustBundle.load(settings.trust_dir)
    peers = service_peers(settings, signer)
    principal_status = PrincipalStatus.following(lambda: peers.ledger).start()
    gateway = RecordsGateway(peers, signer, settings.chain_id, settings.max_record_bytes, metadata_sealer(settings),
                             commit_deadline_seconds=settings.reconcile_grace_seconds / 2,
                             principal_status=principal_status)
    reconciler = Reconciler(peers, settings.reconcile_grace_seconds)
    background = BackgroundReconciler(reconciler, settings.reconcile_interval_seconds).start()
    servicer = RecordsServicer(gateway, Authenticator(trust, audience("records"), principal_status), reconciler)
    add = records_pb2_grpc.add_RecordsServiceServicer_to_server
    register = register_servicer(add, servicer, ACCESS, servicer._auth)
    return register, [background.close, gateway.close, principal_status.close, peers.close]


def main() -> None:
    """Run the records service from CARECHAIN_* environment variables."""
    settings = RecordsSettings()
    register, on_stop = build(settings)
    run_service("records", settings, register, on_stop)
