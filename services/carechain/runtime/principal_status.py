"""Principal lifecycle as every service sees it: deactivations and key rotations, followed from the ledger.

``DeactivatePrincipal`` and ``RotatePrincipalKey`` are ledger transactions (see
:mod:`carechain.ledger.contract`). Each service keeps a :class:`PrincipalStatus`
that follows the committed log in a background thread (``ListTransactions``
from its cursor, every ``poll_seconds``, default 1 s) and folds the valid
lifecycle transactions. Token checks (:class:`carechain.runtime.auth.Authenticator`)
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
from collections.abc import Callable

from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.runtime.principal_status")

ListTransactions = Callable[[ledger_pb2.ListTransactionsRequest], ledger_pb2.ListTransactionsResponse]
DEFAULT_POLL_SECONDS = 1.0
# Deadline of one ListTransactions call: a hung ledger must not hold up IssueToken for long.
CALL_TIMEOUT_SECONDS = 2.0
PAGE_SIZE = 500


class PrincipalStatus:
    """Deactivated principals and rotated public keys as of a ledger log position."""

    def __init__(self, list_transactions: ListTransactions, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        self._list = list_transactions
        self._poll = poll_seconds
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._cursor = 0
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

        return cls(list_transactions, poll_seconds)

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
                    self._cursor += 1
                if not response.transactions or self._cursor >= response.log_size:
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
                self.sync()
                if self._down:
                    log.info("following principal lifecycle on the ledger again")
                self._down = False
            except Exception as exc:  # noqa: BLE001 - keep following; the known set stays in force
                if not self._down:
                    log.warning("cannot read principal lifecycle from the ledger; retrying",
                                extra={"problem": type(exc).__name__})
                self._down = True
            self._stop.wait(self._poll)

    def close(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # daemon thread; a call in flight ends by its own deadline
