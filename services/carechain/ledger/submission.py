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
:class:`carechain.runtime.peers.PeerStub`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carechain.core.crypto import Signer
from carechain.core.errors import FailedPrecondition, PermissionDenied
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.transactions import new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2


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


class ServiceSubmitter:
    """Signs transactions as one service and submits them: the one "sign, submit, read the verdict" step.

    ledger returns the ledger stub (e.g. ``lambda: peers.ledger``; called per submission). The answer
    of :meth:`submit` is always a valid (committed, by default final) transaction; a rejection raises
    PermissionDenied or FailedPrecondition (see :func:`submit`), so callers never re-check ``valid``.
    """

    def __init__(self, chain_id: str, signer: Signer, ledger: Callable[[], Any], timeout: float | None = None) -> None:
        self.chain_id = chain_id
        self.signer = signer
        self._ledger = ledger
        self._timeout = timeout

    def transaction(self, **payload: object) -> ledger_pb2.Transaction:
        """A fresh transaction carrying payload (one ``TransactionBody`` field), signed as this service."""
        return sign_transaction(new_body(self.chain_id, self.signer.key_id, **payload), self.signer)

    def submit(self, tx: ledger_pb2.Transaction, ack: int = ledger_pb2.ACK_LEVEL_FINAL,
               ) -> ledger_pb2.SubmitTransactionResponse:
        """Submit an already signed transaction (this service's, or one a client signed)."""
        return submit(self._ledger(), tx, self._timeout, ack)

    def sign_and_submit(self, **payload: object) -> ledger_pb2.SubmitTransactionResponse:
        """Sign payload as this service and submit it; the response of a valid transaction."""
        return self.submit(self.transaction(**payload))
