"""Submitting transactions to the ledger from other services.

:func:`submit` sends a signed transaction and turns a ``valid=false`` verdict
into an exception, so callers (identity, consent, records, audit) treat a
contract-rule rejection like any other refusal:

- PermissionDenied when the validator's reason is about *who* may do it (the
  validator starts those reasons with ``"not permitted: "``, see
  :data:`carechain.ledger.contract.NOT_PERMITTED`);
- FailedPrecondition for every other reason (unknown ids, duplicates, wrong
  state, malformed payload).

Transport and admission errors (INVALID_ARGUMENT, ALREADY_EXISTS, ...) pass
through as the gRPC error (or :class:`carechain.core.errors.Unavailable` from a
:class:`carechain.runtime.peers.PeerStub`); from a batch (``SubmitTransactions``)
they come as the :class:`carechain.core.errors.CareChainError` of the same status
and message (:func:`verdict_error`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from carechain.core.crypto import Signer
from carechain.core.errors import (
    AlreadyExists,
    CareChainError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.batching import MicroBatcher

#: Transactions per SubmitTransactions call from a :class:`ServiceSubmitter`.
DEFAULT_MAX_BATCH = 128


def submit(
    ledger_stub: Any,
    tx: ledger_pb2.Transaction,
    timeout: float | None = None,
    ack: int = ledger_pb2.ACK_LEVEL_FINAL,
) -> ledger_pb2.SubmitTransactionResponse:
    """Submit tx; return the response when valid, raise PermissionDenied/FailedPrecondition otherwise.

    By default the answer waits until the transaction's block is final (signed
    by a quorum of validators); a single validator's blocks are final at commit.
    """
    request = ledger_pb2.SubmitTransactionRequest(transaction=tx, ack=ack)
    response = ledger_stub.SubmitTransaction(request) if timeout is None else ledger_stub.SubmitTransaction(
        request, timeout=timeout
    )
    if not response.valid:
        raise rejection(response.reason)
    return response


def rejection(reason: str) -> PermissionDenied | FailedPrecondition:
    """The error for a validator's reason (see the module docstring)."""
    if reason.startswith(NOT_PERMITTED):
        return PermissionDenied(f"ledger rejected the transaction: {reason.removeprefix(NOT_PERMITTED)}")
    return FailedPrecondition(f"ledger rejected the transaction: {reason}")


def verdict_error(code: int, message: str) -> CareChainError:
    """The error a SubmitTransactions verdict names: what SubmitTransaction would have raised, as a CareChainError."""
    status = _STATUS_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, why = message.partition(": ")
        return InvalidArgument(field, why) if why else InvalidArgument("transaction", message)
    if status == grpc.StatusCode.UNAVAILABLE:
        backend, _, why = message.partition(" unavailable: ")
        return Unavailable(backend, why) if why else Unavailable("ledger", message)
    error_class = _ERRORS.get(status)
    if error_class is not None:
        return error_class(message)
    error = CareChainError(message)
    error.code = status  # e.g. DEADLINE_EXCEEDED: keep the status the ledger answered
    return error


_STATUS_BY_VALUE = {status.value[0]: status for status in grpc.StatusCode}
_ERRORS: dict[grpc.StatusCode, type[CareChainError]] = {
    error_class.code: error_class
    for error_class in (PermissionDenied, FailedPrecondition, AlreadyExists, NotFound, Unauthenticated, DataLoss)
}


class ServiceSubmitter:
    """Signs transactions as one service and submits them: the one "sign, submit, read the verdict" step.

    ledger returns the ledger stub (e.g. ``lambda: peers.ledger``; called per submission). The answer
    of :meth:`submit` is always a valid (committed, by default final) transaction; a rejection raises
    PermissionDenied or FailedPrecondition (see :func:`submit`), so callers never re-check ``valid``.

    Group commit: concurrent :meth:`submit` calls (e.g. the records gateway's concurrent writes) share
    one ``SubmitTransactions`` call through a :class:`~carechain.runtime.batching.MicroBatcher`; each
    caller gets its own verdict or error, exactly as alone. A lone call is a plain ``SubmitTransaction``
    (so is everything when the ledger does not know ``SubmitTransactions`` yet).
    """

    def __init__(self, chain_id: str, signer: Signer, ledger: Callable[[], Any], timeout: float | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.chain_id = chain_id
        self.signer = signer
        self._ledger = ledger
        self._timeout = timeout
        self._max_batch = max_batch
        self._batchers: dict[int, MicroBatcher[ledger_pb2.Transaction, ledger_pb2.SubmitTransactionResponse]] = {}
        self._batchers_lock = threading.Lock()
        self._batch_rpc = True  # until the ledger answers UNIMPLEMENTED

    def transaction(self, **payload: object) -> ledger_pb2.Transaction:
        """A fresh transaction carrying payload (one ``TransactionBody`` field), signed as this service."""
        return sign_transaction(new_body(self.chain_id, self.signer.key_id, **payload), self.signer)

    def submit(self, tx: ledger_pb2.Transaction, ack: int = ledger_pb2.ACK_LEVEL_FINAL,
               ) -> ledger_pb2.SubmitTransactionResponse:
        """Submit an already signed transaction (this service's, or one a client signed)."""
        return self._batcher(ack).submit(tx)

    def sign_and_submit(self, **payload: object) -> ledger_pb2.SubmitTransactionResponse:
        """Sign payload as this service and submit it; the response of a valid transaction."""
        return self.submit(self.transaction(**payload))

    def _batcher(self, ack: int) -> MicroBatcher[ledger_pb2.Transaction, ledger_pb2.SubmitTransactionResponse]:
        with self._batchers_lock:
            batcher = self._batchers.get(ack)
            if batcher is None:
                batcher = MicroBatcher(f"ledger-submit-{ack}", lambda txs: self._flush(txs, ack), self._max_batch)
                self._batchers[ack] = batcher
            return batcher

    def _flush(self, txs: list[ledger_pb2.Transaction],
               ack: int) -> list[ledger_pb2.SubmitTransactionResponse | BaseException]:
        stub = self._ledger()
        submit_many = getattr(stub, "SubmitTransactions", None) if len(txs) > 1 and self._batch_rpc else None
        if submit_many is not None:
            request = ledger_pb2.SubmitTransactionsRequest(transactions=txs, ack=ack)
            try:
                answer = submit_many(request) if self._timeout is None else submit_many(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                    raise
                self._batch_rpc = False  # an older ledger: one call per transaction from now on
            else:
                if len(answer.verdicts) != len(txs):
                    raise Unavailable("ledger", f"{len(answer.verdicts)} verdicts for {len(txs)} transactions")
                return [_verdict_outcome(verdict) for verdict in answer.verdicts]
        outcomes: list[ledger_pb2.SubmitTransactionResponse | BaseException] = []
        for tx in txs:
            try:
                outcomes.append(submit(stub, tx, self._timeout, ack))
            except Exception as exc:  # noqa: BLE001 - that caller's own error
                outcomes.append(exc)
        return outcomes


def _verdict_outcome(verdict: ledger_pb2.TransactionVerdict) -> ledger_pb2.SubmitTransactionResponse | BaseException:
    if verdict.code:
        return verdict_error(verdict.code, verdict.message)
    if not verdict.response.valid:
        return rejection(verdict.response.reason)
    return verdict.response
