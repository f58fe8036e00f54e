"""Admission: the checks a transaction passes before it is ordered, and the submitters waiting for its block.

:meth:`Admission.submit` decodes the body, refuses clinical metadata in clear
(an invalid transaction would still be stored with its contents), and checks
the chain id, that the signer is known (a trusted service or a registered
principal), its signature, and that the nonce is fresh (neither committed nor
pending in the order): nothing enters the order that cannot be authentic. It then appends the
transaction to the :class:`~carechain.ledger.ordering.Orderer` and waits until
the block cutter answers it through :meth:`Admission.finish` (committed, or an
error), or the timeout passes. :meth:`Admission.submit_many` does the same for a
batch (``SubmitTransactions``): each transaction is checked alone, the admitted
ones are appended together, and each gets its own outcome.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from carechain.core import merkle
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


#: One transaction's outcome in a batch submission: where it was committed, or the error its submitter sees.
Outcome = Committed | CareChainError


@dataclass
class _Waiter:
    nonce_key: tuple[str, bytes]
    done: threading.Event = field(default_factory=threading.Event)
    result: Committed | None = None
    error: CareChainError | None = None


class Admission:
    """Admission checks, pending nonces and the submitters waiting for their block.

    Waiters are keyed by the transaction's RFC 9162 leaf hash (of its exact bytes), which the cutter
    computes anyway, so a submitter is registered *before* its append and no lock is held while the
    orderer works (an etcd round trip): concurrent submissions reach the orderer together and are
    ordered as one batch.
    """

    def __init__(
        self, chain_id: str, store: LedgerStore, validator: Validator, orderer: Orderer, stopping: threading.Event
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.validator = validator
        self.orderer = orderer
        self._stopping = stopping
        # Guards the pending nonces, the waiters and the count of appends in progress (gRPC handler threads
        # submit, the cutter finishes). stop() waits for the appends in progress: an entry is either ordered
        # before the ledger stops (the cutter still cuts it) or refused.
        self._lock = threading.Condition()
        self._pending_nonces: set[tuple[str, bytes]] = set()
        self._waiters: dict[bytes, _Waiter] = {}
        self._appending = 0

    @property
    def waiting(self) -> int:
        """Submitted transactions not answered yet (pending nonces and waiters are bounded by this)."""
        with self._lock:
            return max(len(self._waiters), len(self._pending_nonces))

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
        outcome = self.submit_many([tx], timeout)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_many(self, txs: list[ledger_pb2.Transaction], timeout: float) -> list[Outcome]:
        """Admit each of txs exactly as if submitted alone, order the admitted ones in one append, and wait.

        One outcome per transaction, in order: a refusal (its own reason) or timeout concerns that
        transaction alone. Raises only when nothing can be submitted (shutting down, the orderer failed).
        """
        deadline = time.monotonic() + timeout
        outcomes: list[Outcome | None] = [None] * len(txs)
        checked: list[tuple[int, tuple[str, bytes]]] = []
        for position, tx in enumerate(txs):
            try:
                body = self.admit(tx)
            except CareChainError as exc:
                outcomes[position] = exc
                continue
            checked.append((position, (tx.signer_id, bytes(body.nonce))))
        admitted: list[tuple[int, bytes, bytes, _Waiter]] = []  # (position, entry, leaf hash, waiter)
        with self._lock:
            if self._stopping.is_set():
                raise Unavailable("ledger", "shutting down")
            for position, nonce_key in checked:
                if nonce_key in self._pending_nonces or self.store.nonce_used(*nonce_key):
                    outcomes[position] = AlreadyExists("replayed nonce")
                    continue
                entry = transactions.encode(txs[position])
                leaf = merkle.leaf_hash(entry)
                waiter = _Waiter(nonce_key)
                # Registered before the append, so the cutter cannot finish the entry before we listen.
                self._pending_nonces.add(nonce_key)
                self._waiters[leaf] = waiter
                admitted.append((position, entry, leaf, waiter))
            if admitted:
                self._appending += 1
        if admitted:
            try:
                self.orderer.append_many([entry for _, entry, _, _ in admitted])
            except BaseException:
                # Not acknowledged: the client may retry with the same nonce.
                with self._lock:
                    for _, _, leaf, waiter in admitted:
                        self._forget(leaf, waiter)
                raise
            finally:
                with self._lock:
                    self._appending -= 1
                    self._lock.notify_all()
        for position, _, _, waiter in admitted:
            outcomes[position] = self._wait(waiter, deadline, timeout)
        return [outcome for outcome in outcomes if outcome is not None]

    @staticmethod
    def _wait(waiter: _Waiter, deadline: float, timeout: float) -> Outcome:
        # On timeout the waiter stays registered: the entry is ordered, and the cutter releases its nonce
        # when it commits it (or fails the cut).
        if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
            return Unavailable("ledger", f"transaction not committed within {timeout:g}s")
        if waiter.error is not None:
            return waiter.error
        assert waiter.result is not None
        return waiter.result

    def _forget(self, leaf: bytes, waiter: _Waiter) -> None:
        """Drop a waiter and its pending nonce (caller holds the lock)."""
        self._pending_nonces.discard(waiter.nonce_key)
        if self._waiters.get(leaf) is waiter:
            del self._waiters[leaf]

    def finish(self, leaf: bytes, result: Committed | None, error: CareChainError | None) -> None:
        """Answer the submitter of the entry with this leaf hash (if it waits here) and release its pending nonce."""
        with self._lock:
            waiter = self._waiters.pop(leaf, None)
            if waiter is not None:
                self._pending_nonces.discard(waiter.nonce_key)
        if waiter is not None:
            waiter.result, waiter.error = result, error
            waiter.done.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new submissions from now on and wait for appends in progress (the event is shared)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping.set()
            while self._appending and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())

    def fail_waiters(self) -> None:
        """Answer every submitter still waiting with UNAVAILABLE (after the cutter stopped)."""
        with self._lock:
            waiters, self._waiters = self._waiters, {}
            self._pending_nonces.clear()
        for waiter in waiters.values():
            waiter.error = Unavailable("ledger", "shutting down")
            waiter.done.set()
