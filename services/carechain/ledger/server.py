"""The ledger gRPC service: LedgerService over one validator.

Every RPC needs a valid access token for ``carechain.ledger``; who may call what
is the :data:`ACCESS` table (docs/security.md): ledger-wide reads are for
services (validators included), the operator and auditors; a patient gets the
record entries and inclusion proofs of their own transactions and the
co-signed checkpoint, so ``verify_record_inclusion`` works for them.
SubmitTransaction answers only once the transaction's block is durably committed
(``ACK_LEVEL_COMMITTED``, the default) or final, i.e. signed by a quorum of
validators (``ACK_LEVEL_FINAL``), or UNAVAILABLE after ``rpc_timeout_seconds``
(or the call's own deadline, whichever is sooner). SubmitTransactions does the
same for many transactions at once, one verdict each (a refused one fails alone).

Configuration of a validator (:class:`carechain.runtime.config.LedgerSettings`):
``CARECHAIN_VALIDATOR_ID`` (default ``svc-ledger``), ``CARECHAIN_VALIDATORS``
(every validator id; default this one), ``CARECHAIN_QUORUM`` (default a
majority), ``CARECHAIN_PEER_ADDRESSES``; several validators need
``CARECHAIN_ORDERER=etcd``, which orders transactions, agrees block cuts and
carries the validators' header signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from carechain.core.errors import CareChainError, InvalidArgument, NotFound
from carechain.core.layout import TrustBundle, audience
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.ordering import Orderer
from carechain.ledger.queries import PageToken
from carechain.ledger.quorum import DEFAULT_VALIDATOR_ID, ValidatorSet
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime import metrics
from carechain.runtime.access import ANY, AccessTable, Allow, Scope
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import LedgerSettings
from carechain.runtime.etcd import EtcdClient
from carechain.runtime.logs import configure_logging
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.streams import limited_stream
from carechain.runtime.vault import validator_signer

DEFAULT_LIST_LIMIT = 500
MAX_LIST_LIMIT = 1000
#: Transactions per SubmitTransactions call.
MAX_SUBMIT_BATCH = 1000
# WatchBlocks: heartbeat bounds (ms) and what one stream message carries at most.
DEFAULT_HEARTBEAT_MS = 1000
MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS = 50, 30_000
WATCH_MAX_BLOCKS = 64
WATCH_MAX_BYTES = 2 * 1024 * 1024
SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"]
SERVICE_NAME = SERVICE.full_name


def transaction_patient(transaction: ledger_pb2.Transaction) -> str:
    """The patient a transaction is about ("" if none): its payload's patient_id, or a registered patient's id."""
    try:
        body = decode_body(transaction)
    except Exception:  # noqa: BLE001 - an undecodable transaction is nobody's
        return ""
    kind = body.WhichOneof("payload")
    if kind is None:
        return ""
    payload = getattr(body, kind)
    if kind == "register_principal":
        return str(payload.principal_id)
    if kind in ("link_patient_identity", "unlink_patient_identity"):
        return str(payload.network_patient_id)
    return str(getattr(payload, "patient_id", "") or "")


def _patient_owns(caller: Caller, patient_id: str, servicer: LedgerServicer) -> bool:
    """patient_id is the calling patient, or one of its patient principals linked to it (docs/network-identity.md)."""
    return bool(patient_id) and (patient_id == caller.principal_id
                                 or servicer.ledger.store.network_patient(patient_id) == caller.principal_id)


def _own_record(caller: Caller, request: ledger_pb2.GetRecordEntryRequest, servicer: LedgerServicer) -> None:
    entry = servicer.ledger.record_entry(request.record_id) if request.record_id else None
    if entry is None or not _patient_owns(caller, entry.record.patient_id, servicer):
        # The same answer as an unknown record: another patient's record ids cannot be probed.
        raise NotFound("no such record on the ledger")


def is_audit_anchor(transaction: ledger_pb2.Transaction) -> bool:
    """An AnchorAuditBatch (batch range and Merkle root only): public, so anyone can check their event's anchor."""
    try:
        return decode_body(transaction).WhichOneof("payload") == "anchor_audit_batch"
    except Exception:  # noqa: BLE001 - an undecodable transaction is no anchor
        return False


def _own_log_entry(caller: Caller, request: ledger_pb2.GetInclusionProofRequest, servicer: LedgerServicer) -> None:
    found = servicer.ledger.list_transactions(request.log_index, 1)
    if not found or found[0].log_index != request.log_index or not (
        _patient_owns(caller, transaction_patient(found[0].transaction), servicer)
        or is_audit_anchor(found[0].transaction)
    ):
        raise NotFound("no transaction of yours at this log index")


OWN_RECORD = Scope("own record", "own records only", _own_record)
OWN_LOG_ENTRY = Scope("own entry", "own transactions and audit batch anchors only", _own_log_entry)


def _ledger_wide(note: str = "") -> Allow:
    """Whole-ledger reads: services (validators included), the operator and auditors."""
    return Allow.of(service=ANY, operator=ANY, auditor=ANY, note=note)


# Who may call what (docs/security.md).
ACCESS = AccessTable(SERVICE, {
    "SubmitTransaction": Allow.of(service=ANY, note="patients' signed transactions go through consent"),
    "SubmitTransactions": Allow.of(service=ANY, note="as SubmitTransaction, many at once"),
    "GetChainHead": _ledger_wide(),
    "GetBlock": _ledger_wide("every transaction of the block"),
    "ListTransactions": _ledger_wide("every transaction"),
    "GetRecordEntry": Allow.of(patient=OWN_RECORD, service=ANY, operator=ANY, auditor=ANY,
                               note="another patient's record is NOT_FOUND"),
    "GetInclusionProof": Allow.of(patient=OWN_LOG_ENTRY, service=ANY, operator=ANY, auditor=ANY,
                                  note="the proof carries the whole transaction"),
    "GetConsistencyProof": Allow.everyone("tree hashes only: every client checks its remembered checkpoint"),
    "VerifyChain": _ledger_wide(),
    "GetCheckpoint": Allow.everyone("tree size, root, time, signatures: nothing patient-specific"),
    "GetEvidence": _ledger_wide("conflicting validator headers"),
    "WatchBlocks": _ledger_wide("every transaction of every final block (a stream: counts against the caps)"),
    # Search (issue 14): which records a patient has is released by consent record by record, through records.
    "ListPatientRecords": Allow.of(service=ANY, services=["records"], note="for SearchRecords; consent decides each"),
})


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """LedgerService RPCs: proto in, one :class:`Ledger` call, proto out (errors map to gRPC statuses)."""

    def __init__(self, ledger: Ledger, authenticator: Authenticator, commit_timeout_seconds: float) -> None:
        self.ledger = ledger
        self.auth = authenticator
        self.commit_timeout_seconds = commit_timeout_seconds

    def SubmitTransaction(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.SubmitTransactionRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.SubmitTransactionResponse:
        if not request.HasField("transaction"):
            raise InvalidArgument("transaction", "required")
        timeout, final = self._submission(request.ack, context)
        return self.ledger.submit(request.transaction, timeout, final=final).to_response()

    def SubmitTransactions(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.SubmitTransactionsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.SubmitTransactionsResponse:
        if not request.transactions:
            raise InvalidArgument("transactions", "required (at least one)")
        if len(request.transactions) > MAX_SUBMIT_BATCH:
            raise InvalidArgument("transactions", f"at most {MAX_SUBMIT_BATCH} per call")
        timeout, final = self._submission(request.ack, context)
        verdicts = []
        for outcome in self.ledger.submit_many(list(request.transactions), timeout, final=final):
            if isinstance(outcome, CareChainError):
                verdicts.append(ledger_pb2.TransactionVerdict(code=outcome.code.value[0], message=outcome.message))
            else:
                verdicts.append(ledger_pb2.TransactionVerdict(response=outcome.to_response()))
        return ledger_pb2.SubmitTransactionsResponse(verdicts=verdicts)

    def _submission(self, ack: int, context: grpc.ServicerContext) -> tuple[float, bool]:
        """(commit timeout, wait for finality) of a submission with this ack level."""
        if ack not in (ledger_pb2.ACK_LEVEL_UNSPECIFIED, ledger_pb2.ACK_LEVEL_COMMITTED, ledger_pb2.ACK_LEVEL_FINAL):
            raise InvalidArgument("ack", "unknown acknowledgement level")
        # The configured commit timeout, or the call's own deadline when that is sooner.
        timeout = self.commit_timeout_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining))
        return timeout, ack == ledger_pb2.ACK_LEVEL_FINAL

    def GetChainHead(  # noqa: N802
        self, request: ledger_pb2.GetChainHeadRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ChainHead:
        header, header_hash = self.ledger.head()
        return ledger_pb2.ChainHead(
            header=header, header_hash=header_hash, final_height=max(self.ledger.final_height(), 0),
            validator_id=self.ledger.validator_id,
        )

    def GetBlock(  # noqa: N802
        self, request: ledger_pb2.GetBlockRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.Block:
        return self._certified_block(request.height)

    def _certified_block(self, height: int) -> ledger_pb2.Block:
        block = self.ledger.block(height)
        certificate = self.ledger.certificate(height)
        if certificate is not None:
            block.certificate.CopyFrom(certificate)
        return block

    @limited_stream
    def WatchBlocks(  # noqa: N802
        self, request: ledger_pb2.WatchBlocksRequest, context: grpc.ServicerContext
    ) -> Iterator[ledger_pb2.WatchBlocksResponse]:
        """Final blocks from from_height on, as they become final; a heartbeat after heartbeat_ms of silence.

        Each block is read once per stream (O(new)); a follower verifies each certificate once.
        """
        heartbeat_ms = request.heartbeat_ms or DEFAULT_HEARTBEAT_MS
        if not MIN_HEARTBEAT_MS <= heartbeat_ms <= MAX_HEARTBEAT_MS:
            raise InvalidArgument("heartbeat_ms", f"must be between {MIN_HEARTBEAT_MS} and {MAX_HEARTBEAT_MS}")
        heartbeat = heartbeat_ms / 1000.0
        height = request.from_height
        while context.is_active():
            final = self.ledger.final_height()
            if final >= height:
                batch: list[ledger_pb2.Block] = []
                size = 0
                while height <= final and len(batch) < WATCH_MAX_BLOCKS and size < WATCH_MAX_BYTES:
                    block = self._certified_block(height)
                    batch.append(block)
                    size += block.ByteSize()
                    height += 1
                yield ledger_pb2.WatchBlocksResponse(blocks=batch, final_height=final)
                continue
            started = time.monotonic()
            if not self.ledger.wait_final(height, heartbeat):
                # wait_final also returns at once while the ledger shuts down: never spin.
                time.sleep(max(0.0, heartbeat - (time.monotonic() - started)))
                if context.is_active():
                    yield ledger_pb2.WatchBlocksResponse(final_height=max(self.ledger.final_height(), 0))

    def GetCheckpoint(  # noqa: N802
        self, request: ledger_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.Checkpoint:
        return self.ledger.checkpoint(request.height)

    def GetEvidence(  # noqa: N802
        self, request: ledger_pb2.GetEvidenceRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetEvidenceResponse:
        limit = _page_size(request.page_size, "page_size")
        start = PageToken.decode(request.page_token, "evidence").position if request.page_token else 0
        # Evidence is rare (a misbehaving validator), so the store's list is sliced here.
        evidence = self.ledger.evidence(request.from_height)
        page = evidence[start:start + limit]
        more = start + limit < len(evidence)
        return ledger_pb2.GetEvidenceResponse(
            evidence=page, next_page_token=PageToken("evidence", start + limit).encode() if more else "")

    def ListTransactions(  # noqa: N802
        self, request: ledger_pb2.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ListTransactionsResponse:
        limit = _page_size(request.limit, "limit")
        log_size = self.ledger.log_size()
        start = request.from_log_index
        if request.page_token:
            start = PageToken.decode(request.page_token, "log").position
            if start > log_size:
                raise InvalidArgument("page_token", "is not a token of this ledger's log")
        page = self.ledger.list_transactions(start, limit)
        end = page[-1].log_index + 1 if page else start
        return ledger_pb2.ListTransactionsResponse(
            transactions=page, log_size=log_size,
            next_page_token=PageToken("log", end).encode() if end < log_size else "",
        )

    def GetRecordEntry(  # noqa: N802
        self, request: ledger_pb2.GetRecordEntryRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.RecordEntry:
        if not request.record_id:
            raise InvalidArgument("record_id", "required")
        return self.ledger.record_entry(request.record_id, request.version)

    def ListPatientRecords(  # noqa: N802
        self, request: ledger_pb2.ListPatientRecordsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ListPatientRecordsResponse:
        if not request.patient_id:
            raise InvalidArgument("patient_id", "required")
        limit = _page_size(request.page_size, "page_size")
        start = request.from_log_index
        if request.page_token:
            start = PageToken.decode(request.page_token, "patient-records").position
        # SQLite integers stop at 2^63; no log gets there.
        entries, following = self.ledger.patient_records(request.patient_id, min(start, 2**62), limit)
        return ledger_pb2.ListPatientRecordsResponse(
            entries=entries,
            next_page_token=PageToken("patient-records", following).encode() if following is not None else "")

    def GetInclusionProof(  # noqa: N802
        self, request: ledger_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.InclusionProof:
        return self.ledger.inclusion_proof(request.log_index, request.tree_size)

    def GetConsistencyProof(  # noqa: N802
        self, request: ledger_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ConsistencyProof:
        return self.ledger.consistency_proof(request.first_size, request.second_size)

    def VerifyChain(  # noqa: N802
        self, request: ledger_pb2.VerifyChainRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.VerifyChainResponse:
        if not request.HasField("trusted_checkpoint"):
            return self.ledger.verify().to_response()
        # Incremental: from the caller's checkpoint, once its certificate of the configured set checks out.
        return verify_chain(self.ledger.store, self.ledger.trust, self.ledger.validators,
                            trusted=request.trusted_checkpoint).to_response()


def _page_size(requested: int, field: str) -> int:
    """The page size asked for (0: the default), at most MAX_LIST_LIMIT."""
    if requested > MAX_LIST_LIMIT:
        raise InvalidArgument(field, f"must be at most {MAX_LIST_LIMIT}")
    return requested or DEFAULT_LIST_LIMIT


def validator_set(settings: LedgerSettings) -> ValidatorSet:
    """The validator set settings name (default: this validator alone, quorum 1)."""
    own = settings.validator_id or DEFAULT_VALIDATOR_ID
    members = [m for m in settings.validators.split(",") if m.strip()] or [own]
    try:
        return ValidatorSet.of(members, settings.quorum)
    except ValueError as exc:
        raise InvalidArgument("CARECHAIN_QUORUM", str(exc)) from exc


def build(settings: LedgerSettings) -> tuple[Register, list[Callable[[], None]]]:
    """Open the chain under settings.data_dir and return (register, closers)."""
    signer = validator_signer(settings)
    trust = TrustBundle.load(settings.trust_dir)
    validators = validator_set(settings)
    orderer = build_orderer(settings)
    try:
        ledger = Ledger.open(
            settings.data_dir,
            settings.chain_id,
            signer,
            trust,
            orderer=orderer,
            block_max_transactions=settings.block_max_transactions,
            block_max_wait_ms=settings.block_max_wait_ms,
            validators=validators,
            finality_poll_seconds=settings.finality_poll_ms / 1000.0,
            tx_max_skew_ms=settings.tx_max_skew_ms,
        )
    except BaseException:
        if orderer is not None:
            orderer.close()
        raise
    def own_log(request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
        return ledger_pb2.ListTransactionsResponse(
            transactions=ledger.list_transactions(request.from_log_index, request.limit or DEFAULT_LIST_LIMIT),
            log_size=ledger.log_size(),
        )

    # The ledger follows its own committed log (no network hop) for deactivated principals' tokens,
    # resuming from its signed snapshot (checked against its own blocks) rather than re-reading the log.
    principal_status = PrincipalStatus(own_log, snapshots=StatusSnapshots.in_data_dir(settings.data_dir, signer),
                                       get_block=ledger.block).start()
    servicer = LedgerServicer(
        ledger, Authenticator(trust, audience("ledger"), principal_status), settings.rpc_timeout_seconds
    )
    unobserve = metrics.observe_ledger(ledger.validator_id, lambda: ledger.head()[0].height, ledger.final_height,
                                       lambda: len(ledger.store.evidence()))

    register = register_servicer(ledger_pb2_grpc.add_LedgerServiceServicer_to_server, servicer, ACCESS, servicer.auth)

    # The ledger first (it cuts what is ordered), then the orderer it was given.
    return register, [unobserve, principal_status.close, ledger.close] + (
        [orderer.close] if orderer is not None else [])


def build_orderer(settings: LedgerSettings) -> Orderer | None:
    """The orderer settings.orderer names; None for the ledger's own in-process orderer."""
    if settings.orderer == "etcd":
        client = EtcdClient.from_settings(settings)
        return EtcdOrderer(client, settings.etcd_prefix, settings.chain_id, owns_client=True)
    return None


def main() -> None:
    """Run the ledger service from CARECHAIN_* environment variables."""
    settings = LedgerSettings()
    configure_logging("ledger", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, closers = build(settings)
    run_service("ledger", settings, register, closers)
