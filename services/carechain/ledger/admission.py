"""Admission: the checks a transaction passes before it is ordered, and the submitters waiting for its block.

:meth:`Admission.submit` decodes the body, refuses clinical metadata in clear
(an invalid transaction would still be stored with its contents), and checks
the chain id, that the signer is known (a trusted service or a registered
principal), its signature, and that the nonce is fresh (neither committed nor
pending in the order): nothing enters the order that cannot be authentic. It then appends the
transaction to the :class:`~carechain.ledger.ordering.Orderer` and waits until
the block cutter answers it through :meth:`Admission.finish` (committed, or an
error), or the timeout passes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from carechain.core.errors import AlreadyExists, CareChainError, InvalidArgument, PermissionDenied, Unavailable
from carechain.ledger import transactions
from carechain.ledger.contract import Validator, clinical_fields_in_clear
from carechain.ledger.ordering import Orderer
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.v1 import ledger_pb2


@dataclass(frozen=True)
class Committed:
    """Where and how a submitted transaction was committed."""

    transaction_hash: bytes
    height: int
    index: int
    log_index: int
    valid: bool
    reason: str

    final: bool = False

    def to_response(self) -> ledger_pb2.SubmitTransactionResponse:
        """As the SubmitTransaction reply."""
        return ledger_pb2.SubmitTransactionResponse(
            transaction_hash=self.transaction_hash.hex(),
            height=self.height,
            index=self.index,
            log_index=self.log_index,
            valid=self.valid,
            reason=self.reason,
            final=self.final,
        )


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    result: Committed | None = None
    error: CareChainError | None = None


class Admission:
    """Admission checks, pending nonces and the submitters waiting for their block."""

    def __init__(
        self, chain_id: str, store: LedgerStore, validator: Validator, orderer: Orderer, stopping: threading.Event
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.validator = validator
        self.orderer = orderer
        self._stopping = stopping
        # Guards the pending nonces and the waiters (gRPC handler threads submit, the cutter finishes), and
        # orders stop() against submit(): an entry is either ordered with its waiter registered before the
        # ledger stops (the cutter still cuts it) or refused.
        self._lock = threading.Lock()
        self._pending_nonces: set[tuple[str, bytes]] = set()
        self._waiters: dict[int, _Waiter] = {}

    def admit(self, tx: ledger_pb2.Transaction) -> ledger_pb2.TransactionBody:
        """Admission checks before ordering; raises the error the client should see."""
        body = transactions.decode_body(tx)
        in_clear = clinical_fields_in_clear(body)
        if in_clear:
            # Refused before ordering: an invalid transaction would still be stored, contents and all.
            raise InvalidArgument("transaction.body", in_clear)
        if body.chain_id != self.chain_id:
            raise InvalidArgument("transaction.body.chain_id", "is for another chain")
        key = self.validator.signer_key(tx.signer_id, self.store)
        if key is None:
            raise PermissionDenied("unknown signer: not a trusted service nor a registered principal")
        if not transactions.signature_valid(tx, key):
            raise InvalidArgument("transaction.signature", "not a valid Ed25519 signature by the signer")
        return body

    def submit(self, tx: ledger_pb2.Transaction, timeout: float) -> Committed:
        """Admit and order tx, then wait until its block is committed (Unavailable after timeout)."""
        body = self.admit(tx)
        nonce_key = (tx.signer_id, bytes(body.nonce))
        waiter = _Waiter()
        with self._lock:
            if self._stopping.is_set():
                raise Unavailable("ledger", "shutting down")
            if nonce_key in self._pending_nonces or self.store.nonce_used(*nonce_key):
                raise AlreadyExists("replayed nonce")
            self._pending_nonces.add(nonce_key)
            # Registered under the lock so the cutter cannot finish the entry before we listen.
            try:
                sequence = self.orderer.append(transactions.encode(tx))
            except BaseException:
                # Not acknowledged: the client may retry with the same nonce.
                self._pending_nonces.discard(nonce_key)
                raise
            self._waiters[sequence] = waiter
        if not waiter.done.wait(timeout):
            raise Unavailable("ledger", f"transaction not committed within {timeout:g}s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def finish(
        self,
        sequence: int,
        result: Committed | None,
        error: CareChainError | None,
        tx: ledger_pb2.Transaction | None = None,
    ) -> None:
        """Answer the submitter of order entry sequence (if it waits here) and release tx's pending nonce."""
        with self._lock:
            if tx is not None:
                try:
                    body = ledger_pb2.TransactionBody.FromString(tx.body)
                    self._pending_nonces.discard((tx.signer_id, bytes(body.nonce)))
                except Exception:  # noqa: BLE001, S110 - entries we never admitted have no pending nonce
                    pass
            waiter = self._waiters.pop(sequence, None)
        if waiter is not None:
            waiter.result, waiter.error = result, error
            waiter.done.set()

    def stop(self) -> None:
        """Refuse new submissions from now on (the stopping event is shared with the cutter and finalizer)."""
        with self._lock:
            self._stopping.set()

    def fail_waiters(self) -> None:
        """Answer every submitter still waiting with UNAVAILABLE (after the cutter stopped)."""
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.error = Unavailable("ledger", "shutting down")
            waiter.done.set()
