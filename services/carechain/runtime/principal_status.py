"""Principal lifecycle as every service sees it: deactivations, key rotations and patient identity links,
followed from the ledger.

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

With a :class:`StatusSnapshots` (``following(..., snapshots=...)``), the set,
the keys and the position (cursor, block height and header hash) are saved,
signed by the service's key, every :data:`SNAPSHOT_EVERY_TRANSACTIONS` and at
close; :meth:`PrincipalStatus.start` resumes from it only if the signature
verifies and the ledger's block at that height has that header hash and log
size (otherwise it is ignored and the log is read from index 0), so a restart
reads only what is new.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError, IntegrityError, Unavailable
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.patient_links import PatientLinkTable
from carechain.runtime.signed_file import SignedFile

log = logging.getLogger("carechain.runtime.principal_status")

ListTransactions = Callable[[ledger_pb2.ListTransactionsRequest], ledger_pb2.ListTransactionsResponse]
WatchBlocks = Callable[[ledger_pb2.WatchBlocksRequest], Iterator[ledger_pb2.WatchBlocksResponse]]
GetBlock = Callable[[int], ledger_pb2.Block]
SNAPSHOT_EVERY_TRANSACTIONS = 5000
#: Conventional file name under a service's data directory.
SNAPSHOT_FILE = "principal-status-snapshot.json"
_SNAPSHOT_DOMAIN = b"carechain-principal-status-snapshot/v1\n"


class StatusSnapshots:
    """A signed file holding a PrincipalStatus and the ledger position it reflects (module docstring)."""

    def __init__(self, path: pathlib.Path, signer: Signer | Callable[[], Signer], public_key: bytes | None = None,
                 every: int = SNAPSHOT_EVERY_TRANSACTIONS) -> None:
        """public_key verifies snapshots (default: the signer's own key); signer may be a function returning it."""
        self.path = pathlib.Path(path)
        self._file = SignedFile(self.path, signer, _SNAPSHOT_DOMAIN, public_key)
        self.every = every

    @classmethod
    def in_data_dir(cls, data_dir: pathlib.Path, signer: Signer | Callable[[], Signer]) -> StatusSnapshots:
        """The service's snapshot file (:data:`SNAPSHOT_FILE` under its data directory), signed by its key."""
        return cls(pathlib.Path(data_dir) / SNAPSHOT_FILE, signer)

    def write(self, data: dict[str, Any]) -> None:
        """Sign and write data atomically (0600)."""
        self._file.write(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())

    def read(self) -> dict[str, Any] | None:
        """The signed data, or None (no file, unreadable, or a signature that does not verify)."""
        try:
            body = self._file.read()
            if body is None:
                return None
            data = json.loads(body)
            if not isinstance(data, dict):
                raise IntegrityError("principal status snapshot: the body is not an object")
        except (CareChainError, ValueError) as exc:  # CareChainError: also a signer not reachable yet
            problem = exc.message if isinstance(exc, CareChainError) else type(exc).__name__
            log.warning("principal status snapshot refused; reading the log from the start",
                        extra={"problem": problem})
            return None
        return data


DEFAULT_POLL_SECONDS = 1.0
# Deadline of one ListTransactions call: a hung ledger must not hold up IssueToken for long.
CALL_TIMEOUT_SECONDS = 2.0
PAGE_SIZE = 500
# How long one WatchBlocks stream lives before it is reopened (from where it stopped).
STREAM_SECONDS = 300.0


class PrincipalStatus:
    """Deactivated principals and rotated public keys as of a ledger log position."""

    def __init__(self, list_transactions: ListTransactions, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 watch_blocks: WatchBlocks | None = None, snapshots: StatusSnapshots | None = None,
                 get_block: GetBlock | None = None) -> None:
        """watch_blocks opens a ``WatchBlocks`` stream (None: poll list_transactions only); snapshots (with
        get_block, to check a snapshot against the ledger) lets a restart resume instead of reading from 0."""
        self._list = list_transactions
        self._watch = watch_blocks
        self._snapshots = snapshots
        self._get_block = get_block
        # (height, header hash) of the last block folded whole, when the cursor is at its end.
        self._boundary: tuple[int, bytes, int] | None = None
        self._saved_cursor = 0
        self._poll = poll_seconds
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._cursor = 0
        # A height whose blocks hold no transaction below the cursor: where a stream may start.
        self._next_height = 0
        self._stream: object | None = None  # the open stream, cancelled by close()
        self._deactivated: set[str] = set()
        self._keys: dict[str, bytes] = {}
        self._links = PatientLinkTable()  # docs/network-identity.md
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False
        # A snapshot waiting for the ledger to be reachable, so it can be checked (then resumed from).
        self._resume_pending = False

    @classmethod
    def following(cls, ledger: Callable[[], object], poll_seconds: float = DEFAULT_POLL_SECONDS,
                  snapshots: StatusSnapshots | None = None) -> PrincipalStatus:
        """A status that follows the LedgerService stub ledger() returns (called per request, so it may be lazy)."""

        def list_transactions(request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
            return ledger().ListTransactions(request, timeout=CALL_TIMEOUT_SECONDS)  # type: ignore[attr-defined]

        def watch_blocks(request: ledger_pb2.WatchBlocksRequest) -> Iterator[ledger_pb2.WatchBlocksResponse]:
            # An explicit deadline: a peer stub's default (the unary RPC timeout) would end the stream in seconds.
            return ledger().WatchBlocks(request, timeout=STREAM_SECONDS)  # type: ignore[attr-defined, no-any-return]

        def get_block(height: int) -> ledger_pb2.Block:
            return ledger().GetBlock(ledger_pb2.GetBlockRequest(height=height),  # type: ignore[attr-defined, no-any-return]
                                     timeout=CALL_TIMEOUT_SECONDS)

        return cls(list_transactions, poll_seconds, watch_blocks, snapshots, get_block)

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

    def network_patient(self, patient_id: str) -> str:
        """The network identity patient_id is linked to (LinkPatientIdentity), or patient_id itself."""
        with self._lock:
            return self._links.network_patient(patient_id)

    def linked_patients(self, network_patient_id: str) -> list[str]:
        """The patient principals linked to network_patient_id, in link order (itself excluded)."""
        with self._lock:
            return self._links.linked_patients(network_patient_id)

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
                        self._fold_transaction(tx, result.valid)
                        with self._lock:
                            self._cursor += 1
                self._next_height = header.height + 1
                if self._cursor == header.log_size:
                    self._boundary = (header.height, _header_hash(block.header), header.log_size)
            return self._cursor

    # --- snapshots -------------------------------------------------------------------------------

    def save_snapshot(self) -> bool:
        """Write a snapshot if the cursor is at the end of a block folded from the stream; True if written."""
        if self._snapshots is None:
            return False
        with self._sync_lock, self._lock:
            if (self._boundary is None or self._boundary[2] != self._cursor) and self._get_block is not None \
                    and self._cursor:
                # Caught up by pages: the block of the last folded transaction tells whether it ends there.
                try:
                    block = self._get_block(self._next_height)
                except (grpc.RpcError, CareChainError):
                    return False
                header = ledger_pb2.BlockHeader.FromString(block.header)
                if header.log_size == self._cursor:
                    self._boundary = (header.height, _header_hash(block.header), header.log_size)
            if self._boundary is None or self._boundary[2] != self._cursor:
                return False
            height, header_hash, log_size = self._boundary
            data = {"height": height, "header_hash": header_hash.hex(), "log_size": log_size,
                    "deactivated": sorted(self._deactivated),
                    "keys": {p: base64.b64encode(k).decode() for p, k in sorted(self._keys.items())},
                    "links": self._links.rows()}
        self._snapshots.write(data)
        self._saved_cursor = log_size
        return True

    def resume(self) -> int:
        """Resume from a valid snapshot (see the module docstring); returns the cursor (0 when not resumed)."""
        if self._snapshots is None or self._get_block is None:
            return self._cursor
        data = self._snapshots.read()
        if data is None:
            return self._cursor
        try:
            height, log_size = int(data["height"]), int(data["log_size"])
            try:
                block = self._get_block(height)
            except (grpc.RpcError, Unavailable) as exc:
                if _transient(exc):  # the ledger is not up yet: check the snapshot once it is
                    self._resume_pending = True
                    return self._cursor
                raise
            self._resume_pending = False
            header = ledger_pb2.BlockHeader.FromString(block.header)
            if _header_hash(block.header) != bytes.fromhex(data["header_hash"]) or header.log_size != log_size:
                log.warning("principal status snapshot is not of this ledger's chain; reading the log from the start")
                return self._cursor
            deactivated = {str(p) for p in data["deactivated"]}
            keys = {str(p): base64.b64decode(k, validate=True) for p, k in data["keys"].items()}
            links = PatientLinkTable(data.get("links", ()))
        except (grpc.RpcError, CareChainError, ValueError, KeyError, TypeError) as exc:
            self._resume_pending = False
            log.warning("principal status snapshot not used; reading the log from the start",
                        extra={"problem": type(exc).__name__})
            return self._cursor
        with self._sync_lock, self._lock:
            if self._cursor:
                return self._cursor  # already following: a snapshot only replaces a fresh status
            self._cursor, self._next_height = log_size, height + 1
            self._deactivated, self._keys, self._links = deactivated, keys, links
            self._boundary = (height, _header_hash(block.header), log_size)
            self._saved_cursor = log_size
        log.info("principal status resumed from its snapshot", extra={"log_size": log_size})
        return log_size

    def _save_if_due(self) -> None:
        if self._snapshots is not None and self.cursor - self._saved_cursor >= self._snapshots.every:
            try:
                self.save_snapshot()
            except (OSError, CareChainError):
                log.warning("principal status snapshot not saved")

    def _fold(self, logged: ledger_pb2.LoggedTransaction) -> None:
        self._fold_transaction(logged.transaction, logged.result.valid)

    def _fold_transaction(self, transaction: ledger_pb2.Transaction, valid: bool) -> None:
        if not valid:
            return
        body = ledger_pb2.TransactionBody()
        try:
            body.ParseFromString(transaction.body)
        except Exception:  # noqa: BLE001 - a valid transaction always parses
            return
        kind = body.WhichOneof("payload")
        with self._lock:
            if kind == "deactivate_principal":
                self._deactivated.add(body.deactivate_principal.principal_id)
            elif kind == "rotate_principal_key":
                self._keys[body.rotate_principal_key.principal_id] = bytes(body.rotate_principal_key.public_key)
            else:
                self._links.fold(body)

    def start(self) -> PrincipalStatus:
        """Resume from a snapshot if there is a valid one, then follow the ledger in a daemon thread until close."""
        self.resume()
        self._thread = threading.Thread(target=self._run, name="principal-status", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._resume_pending and not self._cursor:
                self.resume()
                if self._resume_pending:  # still unreachable: do not read from index 0 meanwhile
                    self._stop.wait(self._poll)
                    continue
            try:
                self.sync()  # catch up by pages (also after a broken stream), then follow by push
                self._save_if_due()
                if self._down:
                    log.info("following principal lifecycle on the ledger again")
                self._down = False
                if self._watch is not None and self._follow_stream():
                    continue  # a live stream ended (its deadline, a reconnect): reopen at once
            except Exception as exc:  # noqa: BLE001 - keep following; the known set stays in force
                if not self._down and not self._stop.is_set():  # (closing: the channel closes under it)
                    log.warning("cannot read principal lifecycle from the ledger; retrying",
                                extra={"problem": type(exc).__name__})
                self._down = True
            self._stop.wait(self._poll)

    def _follow_stream(self) -> bool:
        """Fold final blocks pushed by WatchBlocks until the stream ends, fails or close() cancels it.

        True when the stream delivered something before it ended (reopen it at once); errors of a stream
        that never delivered propagate (the caller logs once and polls).
        """
        assert self._watch is not None
        received = False
        try:
            stream = self._watch(ledger_pb2.WatchBlocksRequest(from_height=self._next_height))
            self._stream = stream
            if self._stop.is_set():
                return False
            for message in stream:
                received = True
                self.fold_blocks(message.blocks)
                self._save_if_due()
                if self._stop.is_set():
                    return False
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                log.info("the ledger has no WatchBlocks; following by polling")
                self._watch = None
            elif code != grpc.StatusCode.CANCELLED and not received:
                raise
        except LookupError:
            pass  # a gap: the next sync() pages from the cursor
        except Exception:
            if not received:  # e.g. the peer stub's Unavailable: the ledger is down
                raise
        finally:
            self._stream = None
        return received and not self._stop.is_set()

    def close(self) -> None:
        """Stop following."""
        self._stop.set()
        stream = self._stream
        if stream is not None and hasattr(stream, "cancel"):
            stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)  # daemon thread; a call in flight ends by its own deadline
        if self._snapshots is not None:
            try:
                self.save_snapshot()  # the next start resumes here
            except (OSError, CareChainError):
                log.warning("principal status snapshot not saved at close")


def _transient(exc: Exception) -> bool:
    """Whether a failed call says the ledger is not reachable (yet), rather than refusing the request."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, Unavailable)


def _header_hash(header: bytes) -> bytes:
    return hashlib.sha256(header).digest()
