"""RecordsService: the gRPC API partner hospitals call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc

from carechain.common.v1 import common_pb2
from carechain.consent.v1 import policy_pb2
from carechain.core.errors import CareChainError, PermissionDenied
from carechain.core.layout import TrustBundle, audience
from carechain.identity.v1 import identity_pb2
from carechain.labels.security_labels import security_label_messages
from carechain.ledger.sealing import metadata_sealer
from carechain.ledger.submission import ServiceSubmitter
from carechain.records.bulk import BulkImporter
from carechain.records.erasure import Eraser, RetentionPolicy
from carechain.records.gateway import (
    ReadRecord,
    RecordsGateway,
    StoredRecord,
    handling_label_codings,
    organization_of,
)
from carechain.records.large_records import LargeRecords
from carechain.records.patient_relay import PatientRelay
from carechain.records.reconcile import BackgroundReconciler, Reconciler
from carechain.records.search import RecordSearch
from carechain.records.summary import PatientSummaries, SummaryCounts
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.records.versions import RecordVersions
from carechain.runtime.access import ANY, AccessTable, Allow, Scope, caller
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import RecordsSettings
from carechain.runtime.delegates import consent_delegates
from carechain.runtime.logs import configure_logging
from carechain.runtime.peers import service_peers
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.streams import current_limiter, limited_stream
from carechain.runtime.vault import service_signer

SERVICE = records_pb2.DESCRIPTOR.services_by_name["RecordsService"]
SERVICE_NAME = SERVICE.full_name


def _may_erase(caller: Caller, request: records_pb2.EraseRecordsRequest, servicer: RecordsServicer) -> None:
    servicer.eraser().authorize(caller, request.patient_id)


_ERASER = Scope("own or delegated", "own, or as an active delegate (the operator where policy allows)", _may_erase)


def _consents_of_patient(caller: Caller, request: object, servicer: RecordsServicer) -> None:
    servicer.patient_relay().authorize(caller, request.patient_id)  # type: ignore[attr-defined]


def _accounting_of_patient(caller: Caller, request: object, servicer: RecordsServicer) -> None:
    servicer.patient_relay().authorize(caller, request.patient_id, accounting=True)  # type: ignore[attr-defined]


_PATIENT_READ = Scope("own or delegated", "own, or as an active delegate", _consents_of_patient)
_ACCOUNTING_READ = Scope("own or as guardian", "own, or as the patient's active guardian (45 CFR 164.502(g))",
                         _accounting_of_patient)


def _smart_system_token(reader: Caller, request: object, servicer: object) -> None:
    if not reader.scope:
        raise PermissionDenied("an organisation reads records only with a SMART system/ access token "
                               "(docs/fhir-smart.md)")


# An organisation reads as a SMART Backend Services client: its token's scopes limit what it reads.
_SMART_SYSTEM_TOKEN = Scope("SMART system token", "with a SMART `system/` access token", _smart_system_token)

# Who may call what (docs/security.md). Which records a practitioner (or an organisation) may read is the
# patient's consent, decided per record by the consent service.
ACCESS = AccessTable(SERVICE, {
    "PutRecord": Allow.of(practitioner=ANY, organization=ANY, note="for patients registered with the network"),
    "GetRecord": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                          note="only what the patient's consent permits"),
    "Reconcile": Allow.of(operator=ANY, note="counts only; removes what crashed writes left behind"),
    # Bulk and large records: the callers of PutRecord / GetRecord, each resource checked as one of those.
    "ImportBundle": Allow.of(practitioner=ANY, organization=ANY, note="each entry as a PutRecord"),
    "ImportRecords": Allow.of(practitioner=ANY, organization=ANY, note="each resource as a PutRecord"),
    "PutRecordStream": Allow.of(practitioner=ANY, organization=ANY, note="as PutRecord, the data streamed"),
    "GetRecordStream": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                                note="as GetRecord, the data streamed"),
    # Versions (records.versions): amended by the author only; history under the read's consent decision.
    "UpdateRecord": Allow.of(practitioner=ANY, organization=ANY,
                             note="only the authoring organization and its practitioners"),
    "ListRecordVersions": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                                   note="metadata, only what the patient's consent permits"),
    # Search and summary: the callers of GetRecord; consent decides every record, strangers are denied.
    "SearchRecords": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                              note="metadata of permitted records, a withheld count"),
    "GetPatientSummary": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                                  note="each record as a GetRecord"),
    "GetPatientSummaryBundle": Allow.of(practitioner=ANY, organization=_SMART_SYSTEM_TOKEN,
                                        note="as GetPatientSummary, one FHIR Bundle"),
    # Erasure (records.erasure): the operator only where CARECHAIN_OPERATOR_ERASURE allows.
    "EraseRecords": Allow.of(patient=_ERASER, practitioner=_ERASER, operator=_ERASER,
                             note="retention holds refuse; answers a receipt (the tombstone's proof)"),
    # The FHIR gateway's POST /token: relayed to identity, which verifies the signed assertion (the proof).
    "ExchangeClientAssertion": Allow.anonymous("SMART Backend Services: relayed to identity's ExchangeClientAssertion"),
    # The FHIR gateway's Consent and AuditEvent (records.patient_relay): people acting for themselves or a patient.
    "SubmitConsent": Allow.of(patient=ANY, practitioner=ANY,
                              note="consent verifies the JWS: signed by the caller, for itself or its patient"),
    "ListPatientConsents": Allow.of(patient=_PATIENT_READ, practitioner=_PATIENT_READ),
    "ExportAccessHistory": Allow.of(patient=_ACCOUNTING_READ, practitioner=_ACCOUNTING_READ,
                                    note="the accounting of disclosures, via audit as svc-records"),
})


class RecordsServicer(records_pb2_grpc.RecordsServiceServicer):
    """Authenticates callers and hands requests to the gateway flows."""

    def __init__(self, gateway: RecordsGateway, authenticator: Authenticator, reconciler: Reconciler,
                 importer: BulkImporter | None = None, large: LargeRecords | None = None,
                 search: RecordSearch | None = None, summaries: PatientSummaries | None = None,
                 eraser: Eraser | None = None,
                 exchange: Callable[[identity_pb2.ExchangeClientAssertionRequest], identity_pb2.ClientAccessToken]
                 | None = None, relay: PatientRelay | None = None) -> None:
        self._gateway = gateway
        self._exchange_client_assertion = exchange
        self._relay = relay
        self._search = search
        self._summaries = summaries
        self._eraser = eraser
        self._auth = authenticator
        self._reconciler = reconciler
        self._importer = importer
        self._large = large
        self._versions = RecordVersions(gateway)

    def PutRecord(self, request: records_pb2.PutRecordRequest, context: grpc.ServicerContext
                  ) -> records_pb2.PutRecordResponse:
        return _put_response(self._gateway.put_record(caller(context), request.patient_id, request.resource_json))

    def UpdateRecord(self, request: records_pb2.UpdateRecordRequest, context: grpc.ServicerContext
                     ) -> records_pb2.PutRecordResponse:
        return _put_response(self._versions.update(caller(context), request.record_id, request.resource_json,
                                                   request.if_version))

    def ListRecordVersions(self, request: records_pb2.ListRecordVersionsRequest, context: grpc.ServicerContext
                           ) -> records_pb2.ListRecordVersionsResponse:
        return self._versions.history(caller(context), request.record_id, request.purpose, request.page_size,
                                      request.page_token)

    def GetRecord(self, request: records_pb2.GetRecordRequest, context: grpc.ServicerContext
                  ) -> records_pb2.GetRecordResponse:
        record = self._gateway.get_record(
            caller(context), request.record_id, request.purpose, request.action, request.break_glass,
            request.break_glass_reason, version=request.version, provenance_json=request.provenance,
        )
        return _read_response(record)

    def Reconcile(self, request: records_pb2.ReconcileRequest, context: grpc.ServicerContext
                  ) -> records_pb2.ReconcileReport:
        return self._reconciler.run(dry_run=request.dry_run)

    def ImportBundle(self, request: records_pb2.ImportBundleRequest, context: grpc.ServicerContext
                     ) -> records_pb2.ImportBundleResponse:
        return self._bulk().import_bundle(caller(context), request.bundle_json, list(request.patient_ids))

    @limited_stream
    def ImportRecords(self, requests: Iterator[records_pb2.ImportRecordsRequest], context: grpc.ServicerContext
                      ) -> Iterator[records_pb2.ImportResult]:
        yield from self._bulk().import_stream(caller(context), requests)

    def PutRecordStream(self, requests: Iterator[records_pb2.PutRecordStreamRequest], context: grpc.ServicerContext
                        ) -> records_pb2.PutRecordResponse:
        with _stream_slot(context):
            stored = self._large_records().put(caller(context), requests)
        return _put_response(stored)

    @limited_stream
    def GetRecordStream(self, request: records_pb2.GetRecordRequest, context: grpc.ServicerContext
                        ) -> Iterator[records_pb2.GetRecordStreamResponse]:
        large = self._large_records()
        reader = caller(context)
        record = large.get(reader, request)
        yield records_pb2.GetRecordStreamResponse(header=_read_response(record))
        audit_fields = {"actor_id": reader.principal_id, "organization_id": organization_of(reader),
                        "patient_id": record.patient_id, "record_id": record.record_id, "purpose": request.purpose,
                        "resource_type": record.resource_type, "categories": record.categories}
        for data in large.stream(reader, record, request.action, audit_fields):
            yield records_pb2.GetRecordStreamResponse(data=data)

    def SearchRecords(self, request: records_pb2.SearchRecordsRequest, context: grpc.ServicerContext
                      ) -> records_pb2.SearchRecordsResponse:
        if self._search is None:
            raise Unimplemented("search is not configured on this server")
        return self._search.search(caller(context), request)

    @limited_stream
    def GetPatientSummary(self, request: records_pb2.PatientSummaryRequest, context: grpc.ServicerContext
                          ) -> Iterator[records_pb2.PatientSummaryResponse]:
        for item in self._patient_summaries().reads(caller(context), request):
            if isinstance(item, SummaryCounts):
                yield records_pb2.PatientSummaryResponse(end=item.message())
            else:
                yield records_pb2.PatientSummaryResponse(record=_read_response(item))

    def GetPatientSummaryBundle(self, request: records_pb2.PatientSummaryRequest, context: grpc.ServicerContext
                                ) -> records_pb2.PatientSummaryBundle:
        return self._patient_summaries().bundle(caller(context), request)

    def _patient_summaries(self) -> PatientSummaries:
        if self._summaries is None:
            raise Unimplemented("patient summaries are not configured on this server")
        return self._summaries

    def EraseRecords(self, request: records_pb2.EraseRecordsRequest, context: grpc.ServicerContext
                     ) -> records_pb2.ErasureReceipt:
        return self.eraser().erase(caller(context), request)

    def ExchangeClientAssertion(self, request: identity_pb2.ExchangeClientAssertionRequest,
                                context: grpc.ServicerContext) -> identity_pb2.ClientAccessToken:
        # Identity's answer (a token or its refusal) passes through unchanged (runtime.server passes peer statuses on).
        return self._exchange(request)

    def SubmitConsent(self, request: records_pb2.SubmitConsentRequest, context: grpc.ServicerContext
                      ) -> records_pb2.PatientConsent:
        return self.patient_relay().submit_consent(caller(context), request)

    def ListPatientConsents(self, request: records_pb2.ListPatientConsentsRequest, context: grpc.ServicerContext
                            ) -> records_pb2.ListPatientConsentsResponse:
        return self.patient_relay().list_consents(caller(context), request)

    def ExportAccessHistory(self, request: records_pb2.ExportAccessHistoryRequest, context: grpc.ServicerContext
                            ) -> records_pb2.ExportAccessHistoryResponse:
        return self.patient_relay().export_access_history(caller(context), request)

    def patient_relay(self) -> PatientRelay:
        """The consent and accounting relays of the FHIR gateway (UNIMPLEMENTED on a server built without)."""
        if self._relay is None:
            raise Unimplemented("the FHIR gateway relays are not configured on this server")
        return self._relay

    def eraser(self) -> Eraser:
        """The erasure flow (UNIMPLEMENTED on a server built without it)."""
        if self._eraser is None:
            raise Unimplemented("erasure is not configured on this server")
        return self._eraser

    def _exchange(self, request: identity_pb2.ExchangeClientAssertionRequest) -> identity_pb2.ClientAccessToken:
        if self._exchange_client_assertion is None:
            raise Unimplemented("SMART token exchange is not configured on this server")
        return self._exchange_client_assertion(request)

    def _bulk(self) -> BulkImporter:
        if self._importer is None:
            raise Unimplemented("bulk import is not configured on this server")
        return self._importer

    def _large_records(self) -> LargeRecords:
        if self._large is None:
            raise Unimplemented("large records are not configured on this server")
        return self._large


class Unimplemented(CareChainError):
    """This server was built without the component an RPC needs."""

    code = grpc.StatusCode.UNIMPLEMENTED


def _stream_slot(context: grpc.ServicerContext) -> contextlib.AbstractContextManager[None]:
    """A slot of the server's stream cap for a long client stream (limited_stream is for server streams)."""
    limiter = current_limiter()
    return limiter.slot(caller(context).principal_id) if limiter is not None else contextlib.nullcontext()


def _put_response(stored: StoredRecord) -> records_pb2.PutRecordResponse:
    """A committed write (a new record or a new version) as PutRecord answers it."""
    return records_pb2.PutRecordResponse(
        record_id=stored.record_id, version=stored.version, categories=stored.categories,
        content_sha256=stored.content_sha256, ledger_log_index=stored.log_index,
        security_labels=security_label_messages(stored.categories), patient_id=stored.patient_id)


def _read_response(record: ReadRecord) -> records_pb2.GetRecordResponse:
    """A permitted read as GetRecord answers it (and GetRecordStream's header, with the attachment's size)."""
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
        attachment_size=record.attachment.size if record.attachment is not None else 0,
        record_version=record.record_version,
        versioned_resource_json=record.versioned_resource_json,
        provenance_json=record.provenance_json,
    )


def build(settings: RecordsSettings) -> tuple[Register, list[Callable[[], None]]]:
    """Wire the records service from its settings."""
    signer = service_signer(settings, "records")
    trust = TrustBundle.load(settings.trust_dir)
    peers = service_peers(settings, signer)
    # Resumes from its signed snapshot: a restart reads only the lifecycle transactions since.
    principal_status = PrincipalStatus.following(
        lambda: peers.ledger, snapshots=StatusSnapshots.in_data_dir(settings.data_dir, signer)).start()
    gateway = RecordsGateway(peers, signer, settings.chain_id, settings.max_record_bytes, metadata_sealer(settings),
                             commit_deadline_seconds=settings.reconcile_grace_seconds / 2,
                             principal_status=principal_status)
    reconciler = Reconciler(peers, settings.reconcile_grace_seconds)
    background = BackgroundReconciler(reconciler, settings.reconcile_interval_seconds).start()
    importer = BulkImporter(gateway, lambda: peers.identity, settings.max_record_bytes)
    large = LargeRecords(gateway, peers, settings.max_record_bytes)
    search = RecordSearch(gateway, lambda: peers.ledger)
    summaries = PatientSummaries(gateway, search)
    eraser = Eraser(gateway, peers, ServiceSubmitter(settings.chain_id, signer, lambda: peers.ledger),
                    consent_delegates(peers.consent),
                    RetentionPolicy(settings.retention_hold_days, dict(settings.retention_hold_rules)),
                    operator_erasure=settings.operator_erasure)
    relay = PatientRelay(peers, consent_delegates(peers.consent),
                         consent_delegates(peers.consent, policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN))
    servicer = RecordsServicer(gateway, Authenticator(trust, audience("records"), principal_status), reconciler,
                               importer, large, search, summaries, eraser,
                               exchange=lambda request: peers.identity.ExchangeClientAssertion(request), relay=relay)
    add = records_pb2_grpc.add_RecordsServiceServicer_to_server
    register = register_servicer(add, servicer, ACCESS, servicer._auth)
    return register, [background.close, importer.close, summaries.close, gateway.close, principal_status.close,
                      peers.close]


def main() -> None:
    """Run the records service from CARECHAIN_* environment variables."""
    settings = RecordsSettings()
    configure_logging("records", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, on_stop = build(settings)
    run_service("records", settings, register, on_stop)
