"""Principal lifecycle as every service sees it: deactivations and key rotations, followed from the ledger.

``DeactivatePrincipal`` and ``RotatePrincipalKey`` are ledger transactions (see
:mod:`carechain.ledger.contract`). Each service keeps a :class:`PrincipalStatus`
that follows the log in a background thread and folds the valid lifecycle
transactions. It follows by push: ``WatchBlocks`` streams each final block once,
as it becomes final, so following costs O(new transactions) and no polling; if
the stream fails it reconnects, polling ``ListTransactions`` from its cursor
every ``poll_seconds`` (default 1 s) in between, and a ledger without
``WatchBlocks`` (UNIMPLEMENTED) is polled. Token checks (:class:`carechain.runtime.auth.Authenticator`)
then consult it in memory, with no network round trip per call: a deactivated
principal's live tokens stop working on every service within one poll
interval plus the ledger's commit time (documented bound: 2 s). Identity uses
it too, to refuse tokens for a deactivated principal and to check proofs of
possession against the current (rotated) key.

If the ledger cannot be read, the last known set stays in force (and keeps
growing once it can be read again); it never shrinks, since a deactivation is
final.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import grpc

from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.runtime.principal_status")

ListTransactions = Callable[[ledger_pb2.ListTransactionsRequest], ledger_pb2.ListTransactionsResponse]
WatchBlocks = Callable[[ledger_pb2.WatchBlocksRequest], Iterator[ledger_pb2.WatchBlocksResponse]]
DEFAULT_POLL_SECONDS = 1.0
# Deadline of one ListTransactions call: a hung ledger must not hold up IssueToken for long.
CALL_TIMEOUT_SECONDS = 2.0
PAGE_SIZE = 500


class PrincipalStatus:
    """Deactivated principals and rotated public keys as of a ledger log position."""

    def __init__(self, list_transactions: ListTransactions, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 watch_blocks: WatchBlocks | None = None) -> None:
        """watch_blocks opens a ``WatchBlocks`` stream (None: poll list_transactions only)."""
        self._list = list_transactions
        self._watch = watch_blocks
        self._poll = poll_seconds
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._cursor = 0
        # A height whose blocks hold no transaction below the cursor: where a stream may start.
        self._next_height = 0
        self._stream: object | None = None  # the open stream, cancelled by close()
        self._deactivated: set[str] = set()
        self._keys: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False

    @classmethod
    def following(cls, ledger: Callable[[], object], poll_seconds: float = DEFAULT_POLL_SECONDS) -> PrincipalStatus:
        """A status that follows the LedgerService stub ledger() returns (called per request, so it may be lazy)."""

        def list_transactions(request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
            return ledger().ListTransactions(request, timeout=CALL_TIMEOUT_SECONDS)  # type: ignore[attr-defined]

        def watch_blocks(request: ledger_pb2.WatchBlocksRequest) -> Iterator[ledger_pb2.WatchBlocksResponse]:
            return ledger().WatchBlocks(request)  # type: ignore[attr-defined, no-any-return]

        return cls(list_transactions, poll_seconds, watch_blocks)

    @property
    def cursor(self) -> int:
        """Log index of the next transaction to fold (= number folded)."""
        with self._lock:
            return self._cursor

    # --- reading -------------------------------------------------------------------------------

    def deactivated(self, principal_id: str) -> bool:
        """True once a DeactivatePrincipal for principal_id was committed (and seen)."""
        with self._lock:
            return principal_id in self._deactivated

    def current_key(self, principal_id: str) -> bytes | None:
        """The principal's public key from its latest RotatePrincipalKey, or None if never rotated."""
        with self._lock:
            return self._keys.get(principal_id)

    # --- following the ledger ------------------------------------------------------------------

    def sync(self) -> int:
        """Fold everything committed since the cursor; returns the new cursor. Errors propagate."""
        with self._sync_lock:
            while True:
                response = self._list(ledger_pb2.ListTransactionsRequest(from_log_index=self._cursor, limit=PAGE_SIZE))
                for logged in response.transactions:
                    if logged.log_index != self._cursor:
                        continue  # overlap (or a gap the next page fills): fold strictly in order
                    self._fold(logged)
                    with self._lock:
                        self._cursor += 1
                    # Its block may hold more transactions: a stream starts at that block (overlap skipped).
                    self._next_height = logged.height
                if not response.transactions or self._cursor >= response.log_size:
                    return self._cursor

    def fold_blocks(self, blocks: Iterator[ledger_pb2.Block] | list[ledger_pb2.Block]) -> int:
        """Fold the transactions of consecutive blocks (from a WatchBlocks stream); returns the new cursor.

        Transactions below the cursor are skipped; a block starting beyond it (a gap) raises LookupError,
        and the follower falls back to ListTransactions from the cursor.
        """
        with self._sync_lock:
            for block in blocks:
                header = ledger_pb2.BlockHeader.FromString(block.header)
                first = header.log_size - len(block.transactions)
                if first > self._cursor:
                    raise LookupError(f"block {header.height} starts at log index {first}, beyond {self._cursor}")
                for offset, (tx, result) in enumerate(zip(block.transactions, block.results, strict=True)):
                    if first + offset == self._cursor:
                        self._fold(ledger_pb2.LoggedTransaction(log_index=first + offset, height=header.height,
                                                                transaction=tx, result=result))
                        with self._lock:
                            self._cursor += 1
                self._next_height = header.height + 1
            return self._cursor

    def _fold(self, logged: ledger_pb2.LoggedTransaction) -> None:
        if not logged.result.valid:
            return
        body = ledger_pb2.TransactionBody()
        try:
            body.ParseFromString(logged.transaction.body)
        except Exception:  # noqa: BLE001 - a valid transaction always parses
            return
        kind = body.WhichOneof("payload")
        with self._lock:
            if kind == "deactivate_principal":
                self._deactivated.add(body.deactivate_principal.principal_id)
            elif kind == "rotate_principal_key":
                self._keys[body.rotate_principal_key.principal_id] = bytes(body.rotate_principal_key.public_key)

    def start(self) -> PrincipalStatus:
        """Follow the ledger in a daemon thread until :meth:`close`."""
        self._thread = threading.Thread(target=self._run, name="principal-status", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()  # catch up by pages (also after a broken stream), then follow by push
                if self._down:
                    log.info("following principal lifecycle on the ledger again")
                self._down = False
                if self._watch is not None:
                    self._follow_stream()
            except Exception as exc:  # noqa: BLE001 - keep following; the known set stays in force
                if not self._down:
                    log.warning("cannot read principal lifecycle from the ledger; retrying",
                                extra={"problem": type(exc).__name__})
                self._down = True
            self._stop.wait(self._poll)

    def _follow_stream(self) -> None:
        """Fold final blocks pushed by WatchBlocks until the stream ends, fails or close() cancels it."""
        assert self._watch is not None
        try:
            stream = self._watch(ledger_pb2.WatchBlocksRequest(from_height=self._next_height))
            self._stream = stream
            if self._stop.is_set():
                return
            for message in stream:
                self.fold_blocks(message.blocks)
                if self._stop.is_set():
                    return
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                log.info("the ledger has no WatchBlocks; following by polling")
                self._watch = None
            elif code != grpc.StatusCode.CANCELLED:
                raise
        except LookupError:
            pass  # a gap: the next sync() pages from the cursor
        finally:
            self._stream = None

    def close(self) -> None:
        """Stop following."""
        self._stop.set()
        stream = self._stream
        if stream is not None and hasattr(stream, "cancel"):
            stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)  # daemon thread; a call in flight ends by its own deadline
