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

from collections.abc import Callable

import grpc

from carechain.core.errors import CareChainError, InvalidArgument, NotFound
from carechain.core.layout import TrustBundle, audience
from carechain.ledger.chain import Ledger
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.ordering import Orderer
from carechain.ledger.quorum import DEFAULT_VALIDATOR_ID, ValidatorSet
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime import metrics
from carechain.runtime.access import ANY, AccessTable, Allow, Scope
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import LedgerSettings
from carechain.runtime.etcd import EtcdClient
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.vault import validator_signer

DEFAULT_LIST_LIMIT = 500
MAX_LIST_LIMIT = 1000
#: Transactions per SubmitTransactions call.
MAX_SUBMIT_BATCH = 1000
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
    return str(getattr(payload, "patient_id", "") or "")


def _own_record(caller: Caller, request: ledger_pb2.GetRecordEntryRequest, servicer: LedgerServicer) -> None:
    entry = servicer.ledger.record_entry(request.record_id) if request.record_id else None
    if entry is None or entry.record.patient_id != caller.principal_id:
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
        transaction_patient(found[0].transaction) == caller.principal_id or is_audit_anchor(found[0].transaction)
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
        block = self.ledger.block(request.height)
        certificate = self.ledger.certificate(request.height)
        if certificate is not None:
            block.certificate.CopyFrom(certificate)
        return block

    def GetCheckpoint(  # noqa: N802
        self, request: ledger_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.Checkpoint:
        return self.ledger.checkpoint(request.height)

    def GetEvidence(  # noqa: N802
        self, request: ledger_pb2.GetEvidenceRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetEvidenceResponse:
        return ledger_pb2.GetEvidenceResponse(evidence=self.ledger.evidence(request.from_height))

    def ListTransactions(  # noqa: N802
        self, request: ledger_pb2.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ListTransactionsResponse:
        limit = request.limit or DEFAULT_LIST_LIMIT
        if limit > MAX_LIST_LIMIT:
            raise InvalidArgument("limit", f"must be at most {MAX_LIST_LIMIT}")
        log_size = self.ledger.log_size()
        return ledger_pb2.ListTransactionsResponse(
            transactions=self.ledger.list_transactions(request.from_log_index, limit), log_size=log_size
        )

    def GetRecordEntry(  # noqa: N802
        self, request: ledger_pb2.GetRecordEntryRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.RecordEntry:
        if not request.record_id:
            raise InvalidArgument("record_id", "required")
        return self.ledger.record_entry(request.record_id)

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
        return self.ledger.verify().to_response()


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

    # The ledger follows its own committed log (no network hop) for deactivated principals' tokens.
    principal_status = PrincipalStatus(own_log).start()
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
    register, closers = build(settings)
    run_service("ledger", settings, register, closers)
