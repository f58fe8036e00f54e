"""Reading the ledger as a consumer that trusts no single validator.

:class:`VerifiedLedgerReader` is what services that apply ledger data (the
consent service) read through instead of ``ListTransactions``. It fetches whole
blocks (``GetBlock``) in order and hands out a block's transactions only after

1. the header decodes, is for the configured chain and the expected height, and
   links to the previous verified header (``previous_header_hash``);
2. the block's transactions hash to ``transactions_root``, its results to
   ``results_hash``, and the log grows by exactly its transactions
   (``log_size``, RFC 9162 ``log_root``);
3. every transaction's Ed25519 signature is checked and the contract rules are
   re-run (:meth:`carechain.ledger.contract.Validator.apply` over the reader's
   own replayed state at the block's timestamp: signer keys of registered
   principals, nonces, who may sign what, creation-time skew, svc-consent's
   policy attestations); a verdict that differs from the block's is a forgery;
4. a quorum certificate of the configured validator set (keys from the trust
   bundle, set and quorum from settings: never from the ledger being read)
   covers the block, or a later block that links back to it
   (:func:`carechain.ledger.quorum.check_certificate`).

A block that fails any check raises IntegrityError (DATA_LOSS) naming the
height and the check, and the reader starts over from genesis on the next
call (it may then be talking to an honest validator). Blocks that pass 1-3
but are not certified yet are held back until a certificate arrives.

Following by push (:meth:`VerifiedLedgerReader.watch`): a thread holds a
``WatchBlocks`` stream, which sends each final block once with its certificate,
so each block and certificate is checked once and a caught-up
:meth:`~VerifiedLedgerReader.list_transactions` makes no call at all while the
stream is live (a message, or a heartbeat, within three heartbeat intervals).
Otherwise (no stream yet, stream broken, a ledger without ``WatchBlocks``) it
reads new blocks with ``GetChainHead`` and ``GetBlock`` as before; the stream
reconnects from the next unverified height.
So one lying validator cannot make a consumer apply a transaction: with one
validator it cannot forge a patient's signature or break a contract rule,
and with several it cannot produce a quorum certificate on its own.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from carechain.core import merkle
from carechain.core.errors import IntegrityError
from carechain.core.layout import TrustBundle
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger import state as ledger_state
from carechain.ledger.contract import DEFAULT_MAX_SKEW_MS, Validator
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.state import EmptyState, PendingState
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.ledger.reader")

#: WatchBlocks heartbeat asked for, and how long to wait before reconnecting a broken stream.
WATCH_HEARTBEAT_MS = 1000
WATCH_RETRY_SECONDS = 1.0
#: How long one stream lives before it is reopened (an explicit deadline: a peer stub's default is the unary one).
WATCH_STREAM_SECONDS = 300.0


@dataclass
class _Position:
    """Where verification stands: the next height, the last header hash and the log tree so far."""

    height: int = 0
    previous_hash: bytes = blocks.GENESIS_PREVIOUS_HASH
    frontier: merkle.Frontier = field(default_factory=merkle.Frontier)


class VerifiedLedgerReader:
    """Verified transactions of a ledger, in log order (see the module docstring); thread-safe."""

    def __init__(self, ledger: Any, chain_id: str, trust: TrustBundle, validators: ValidatorSet,
                 timeout: float = 30.0, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> None:
        """max_skew_ms must be the validators' tx_max_skew_ms (their verdicts are re-computed with it)."""
        self._ledger = ledger
        self._max_skew_ms = max_skew_ms
        self._chain_id = chain_id
        self._trust = trust
        self._validators = validators
        self._timeout = timeout
        self._lock = threading.Lock()
        self._live_until = 0.0  # monotonic time until which the push stream counts as live
        self._reset()

    def _reset(self) -> None:
        self._validator = Validator(self._chain_id, self._trust, self._max_skew_ms)
        self._state = ReplayedContractState()
        self._position = _Position()
        self._uncertified: list[tuple[int, bytes, list[ledger_pb2.LoggedTransaction]]] = []
        self._verified: list[ledger_pb2.LoggedTransaction] = []
        self._verified_from = 0  # log index of self._verified[0]

    def list_transactions(self, request: ledger_pb2.ListTransactionsRequest) -> ledger_pb2.ListTransactionsResponse:
        """Like ``LedgerService.ListTransactions``, but only verified, certified transactions.

        log_size in the answer is the verified log size. Raises IntegrityError when
        the ledger's answer fails verification, and the gRPC error when it is down.
        """
        with self._lock:
            start = request.from_log_index
            if start < self._verified_from:
                self._reset()  # a consumer started over: so do we
            self._drop_before(start)
            if not self._verified and not self._stream_live():
                try:
                    self._read_new_blocks()
                except IntegrityError:
                    self._reset()
                    raise
                self._drop_before(start)
            limit = request.limit or 500
            page = self._verified[:limit]
            return ledger_pb2.ListTransactionsResponse(
                transactions=page, log_size=self._verified_from + len(self._verified)
            )

    def _stream_live(self) -> bool:
        return time.monotonic() < self._live_until

    # --- following by push -------------------------------------------------------------------

    def watch(self, heartbeat_ms: int = WATCH_HEARTBEAT_MS) -> Callable[[], None]:
        """Follow the ledger's WatchBlocks stream in a daemon thread (reconnecting); returns the stopper."""
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def run() -> None:
            failing = False
            while not stop.is_set():
                received = [False]
                try:
                    self._follow_stream(heartbeat_ms, stop, holder, received)
                    failing = False
                    continue  # ended cleanly (a gap, or the reader started over): reopen at once
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                        log.info("the ledger has no WatchBlocks; reading blocks on demand")
                        return
                    if exc.code() != grpc.StatusCode.CANCELLED and not failing:  # type: ignore[attr-defined]
                        log.warning("ledger block stream broken; reconnecting",
                                    extra={"problem": exc.code().name})  # type: ignore[attr-defined]
                    failing = True
                except IntegrityError as exc:
                    log.error("ledger block stream failed verification; starting over",
                              extra={"problem": exc.message})
                    failing = True
                except Exception as exc:  # noqa: BLE001 - keep following; on-demand reads still work
                    if not received[0]:
                        log.warning("ledger block stream failed; reconnecting", extra={"problem": type(exc).__name__})
                    failing = True
                with self._lock:
                    self._live_until = 0.0
                if not received[0]:  # a stream that delivered and ended (its deadline) reopens at once
                    stop.wait(WATCH_RETRY_SECONDS)

        thread = threading.Thread(target=run, name="ledger-block-watch", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            stream = holder.get("stream")
            if stream is not None and hasattr(stream, "cancel"):  # a peer stub's stream ends by its deadline
                stream.cancel()
            thread.join(timeout=1)

        return close

    def _follow_stream(self, heartbeat_ms: int, stop: threading.Event, holder: dict[str, Any],
                       received: list[bool]) -> None:
        """Take the blocks of one WatchBlocks stream, from the next unverified height, until it ends."""
        with self._lock:
            start = self._position.height
        stream = self._ledger.WatchBlocks(ledger_pb2.WatchBlocksRequest(from_height=start,
                                                                      heartbeat_ms=heartbeat_ms),
                                          timeout=WATCH_STREAM_SECONDS)
        holder["stream"] = stream
        try:
            if stop.is_set():
                return
            for message in stream:
                received[0] = True
                with self._lock:
                    for block in message.blocks:
                        height = ledger_pb2.BlockHeader.FromString(block.header).height
                        if height < self._position.height:
                            continue  # already verified (read on demand meanwhile)
                        if height > self._position.height:
                            return  # the reader started over or missed a block: reconnect from its position
                        try:
                            self._take(block)
                        except IntegrityError:
                            self._reset()
                            raise
                    self._live_until = time.monotonic() + 3 * heartbeat_ms / 1000.0
                if stop.is_set():
                    return
        finally:
            holder.pop("stream", None)

    def _drop_before(self, log_index: int) -> None:
        drop = min(max(0, log_index - self._verified_from), len(self._verified))
        del self._verified[:drop]
        self._verified_from += drop

    # --- reading and checking blocks ---------------------------------------------------------

    def _read_new_blocks(self) -> None:
        if self._uncertified:
            self._recheck_last_uncertified()
        head = self._ledger.GetChainHead(ledger_pb2.GetChainHeadRequest(), timeout=self._timeout)
        while self._position.height <= head.header.height:
            try:
                block = self._ledger.GetBlock(ledger_pb2.GetBlockRequest(height=self._position.height),
                                              timeout=self._timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    return  # another validator behind the same address is not there yet
                raise
            self._take(block)

    def _recheck_last_uncertified(self) -> None:
        """A block read before it was final may have its certificate now."""
        height, header, _ = self._uncertified[-1]
        block = self._ledger.GetBlock(ledger_pb2.GetBlockRequest(height=height), timeout=self._timeout)
        if block.header != header:
            raise IntegrityError(f"ledger block {height}: the header changed since it was read")
        if block.HasField("certificate"):
            self._certify(block)

    def _take(self, block: ledger_pb2.Block) -> None:
        position = self._position
        height = position.height
        header, leaves = self._check_structure(block, height)
        first_log_index = position.frontier.size
        logged = []
        for index, (tx, stored) in enumerate(zip(block.transactions, block.results, strict=True)):
            log_index = first_log_index + index
            # Re-run signature, nonce and contract rules: a forged or rule-breaking transaction the
            # ledger marked valid (or an honest one it marked invalid) is caught here.
            result = self._validator.apply(tx, self._state, log_index, block_time_ms=header.timestamp_ms)
            if (result.valid, result.reason) != (stored.valid, stored.reason):
                raise IntegrityError(
                    f"ledger block {height}: transaction {index} has the verdict valid={stored.valid}, "
                    f"but re-checking its signature and the contract rules gives valid={result.valid}"
                )
            logged.append(ledger_pb2.LoggedTransaction(log_index=log_index, height=height, transaction=tx,
                                                       result=stored))
        for leaf in leaves:
            position.frontier.append(leaf)
        if header.log_size != position.frontier.size or header.log_root != position.frontier.root():
            raise IntegrityError(f"ledger block {height}: log_size or log_root does not match the transactions")
        position.height = height + 1
        position.previous_hash = blocks.header_hash(block.header)
        self._uncertified.append((height, bytes(block.header), logged))
        if block.HasField("certificate"):
            self._certify(block)

    def _check_structure(self, block: ledger_pb2.Block, height: int) -> tuple[ledger_pb2.BlockHeader, list[bytes]]:
        """The decoded header and the block's leaf hashes, once the structure checks pass."""
        try:
            header = ledger_pb2.BlockHeader.FromString(block.header)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            raise IntegrityError(f"ledger block {height}: the header does not decode") from exc
        if header.chain_id != self._chain_id or header.height != height:
            raise IntegrityError(f"ledger block {height}: the header is for another chain or height")
        if header.previous_header_hash != self._position.previous_hash:
            raise IntegrityError(f"ledger block {height}: previous_header_hash does not link to block {height - 1}")
        if len(block.results) != len(block.transactions):
            raise IntegrityError(f"ledger block {height}: transactions and results differ in number")
        leaves = [merkle.leaf_hash(transactions.encode(tx)) for tx in block.transactions]
        if header.transactions_root != merkle.root(leaves):
            raise IntegrityError(f"ledger block {height}: transactions_root does not match its transactions")
        if header.results_hash != blocks.results_hash(list(block.results)):
            raise IntegrityError(f"ledger block {height}: results_hash does not match its results")
        return header, leaves

    def _certify(self, block: ledger_pb2.Block) -> None:
        """Release every held block up to block once its quorum certificate checks out."""
        try:
            quorum.check_certificate(block.header, block.certificate, self._trust, self._validators)
        except IntegrityError as exc:
            height = ledger_pb2.BlockHeader.FromString(block.header).height
            raise IntegrityError(f"ledger block {height}: {exc.message}") from exc
        # The certified header links back through every held one (checked in _check_structure).
        for _, _, logged in self._uncertified:
            self._verified.extend(logged)
        self._uncertified.clear()


    # --- snapshots (the consumer's, e.g. carechain.consent.snapshot) ------------------------------

    def export_position(self, fold: Callable[[ledger_pb2.LoggedTransaction], None],
                        cursor: int) -> dict[str, Any] | None:
        """Where verification stands, as JSON-able data, after fold() took what is verified from cursor on.

        None when blocks are held back for a certificate (not a certified block boundary). The data is the
        next height, the last header hash, the log frontier and the replayed contract state, so a restored
        reader re-checks new blocks exactly as this one would.
        """
        with self._lock:
            if self._uncertified:
                return None
            for logged in self._verified:
                if logged.log_index >= cursor:
                    fold(logged)
            position = self._position
            pending = self._state
            return {
                "height": position.height,
                "previous_hash": _b64(position.previous_hash),
                "log_size": position.frontier.size,
                "frontier": [[size, _b64(digest)] for size, digest in position.frontier._stack],
                "contract_state": {
                    "principals": [_row(p) for p in pending.principals.values()],
                    "nonces": [[signer, _b64(nonce), index] for (signer, nonce), index in pending.nonces.items()],
                    "records": [_row(r) for r in pending.records.values()],
                    "record_versions": [_row(v) for v in pending.record_versions.values()],
                    "consents": [_row(c) for c in pending.consents.values()],
                    "delegations": [_row(d) for d in pending.delegations.values()],
                    "anchors": [_row(a) for a in pending.anchors],
                    "links": [_row(k) for k in pending.links.values()],
                },
            }

    def restore_position(self, data: dict[str, Any]) -> None:
        """Resume a fresh reader from exported data, once it matches the certified chain; IntegrityError if not.

        The last block the data reflects is read from the ledger: its header must hash to the stored hash,
        carry the stored log size and root, and hold a quorum certificate of the configured validator set.
        So a snapshot of another chain, of a forked or rolled-back history, or with an edited frontier is
        refused (the snapshot's own signature covers the rest).
        """
        frontier = merkle.Frontier()
        frontier._size = int(data["log_size"])
        frontier._stack = [(int(size), _unb64(digest)) for size, digest in data["frontier"]]
        if sum(size for size, _ in frontier._stack) != frontier.size:
            raise IntegrityError("snapshot: the log frontier does not add up to its size")
        height, previous_hash = int(data["height"]), _unb64(data["previous_hash"])
        if height < 1:
            raise IntegrityError("snapshot: nothing verified to resume from")
        block = self._ledger.GetBlock(ledger_pb2.GetBlockRequest(height=height - 1), timeout=self._timeout)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        if blocks.header_hash(block.header) != previous_hash or header.chain_id != self._chain_id:
            raise IntegrityError(f"snapshot: block {height - 1} of the ledger is not the one the snapshot reflects")
        if header.log_size != frontier.size or header.log_root != frontier.root():
            raise IntegrityError(f"snapshot: the log frontier does not match block {height - 1}")
        if not block.HasField("certificate"):
            raise IntegrityError(f"snapshot: block {height - 1} is not final on this validator")
        quorum.check_certificate(block.header, block.certificate, self._trust, self._validators)
        contract = data["contract_state"]
        pending = ReplayedContractState()
        for row in contract["principals"]:
            pending.put_principal(_from_row(ledger_state.Principal, row))
        for signer, nonce, index in contract["nonces"]:
            pending.consume_nonce(str(signer), _unb64(nonce), int(index))
        for row in contract["records"]:
            pending.put_record(_from_row(ledger_state.RecordState, row))
        for row in contract.get("record_versions", ()):  # absent in snapshots from before versions
            version = _from_row(ledger_state.RecordVersionState, row)
            pending.record_versions[(version.record_id, version.version)] = version
        for row in contract["consents"]:
            pending.put_consent(_from_row(ledger_state.ConsentState, row))
        for row in contract["delegations"]:
            pending.put_delegation(_from_row(ledger_state.Delegation, row))
        for row in contract["anchors"]:
            pending.add_anchor(_from_row(ledger_state.AuditAnchor, row))
        for row in contract.get("links", ()):  # snapshots from before network identity have none
            pending.put_link(_from_row(ledger_state.PatientLink, row))
        with self._lock:
            if self._position.height or self._verified:
                raise IntegrityError("snapshot: a snapshot is restored into a fresh reader only")
            self._position = _Position(height, previous_hash, frontier)
            self._state = pending
            self._verified_from = frontier.size


class ReplayedContractState(PendingState):
    """The contract state a reader replays to re-check transactions: a record with a compact entry.

    Checking later transactions needs a record's existence, patient, erasure and what a new version must link
    to (its version, organisation and content hash: Validator._check_new_version), never its sealed metadata
    (the ledger stores and serves the full entry); a follower holds one row per record of the whole history, so
    the sealed metadata (most of a row) is kept neither in memory nor in a consent snapshot.
    """

    def __init__(self) -> None:
        super().__init__(EmptyState())

    def put_record(self, record: ledger_state.RecordState) -> None:
        """Add or update a record, its entry reduced to what the contract checks."""
        super().put_record(dataclasses.replace(record, entry=compact_entry(record.entry),
                                               patient_id=sys.intern(record.patient_id))
                           if record.entry else record)


def compact_entry(entry: bytes) -> bytes:
    """A RegisterRecord's encoding with only the fields later transactions are checked against."""
    full = ledger_pb2.RegisterRecord.FromString(entry)
    return transactions.encode(ledger_pb2.RegisterRecord(
        record_id=full.record_id, patient_id=full.patient_id, organization_id=full.organization_id,
        version=full.version, content_sha256=full.content_sha256))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _row(row: Any) -> dict[str, Any]:
    """A frozen state row as JSON-able data (bytes as base64)."""
    return {f.name: _b64(v) if isinstance(v := getattr(row, f.name), bytes) else v for f in dataclasses.fields(row)}


@functools.cache
def _row_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, holds bytes) of a state row class's fields, worked out once per class (a resume builds 100k rows)."""
    return tuple((f.name, "bytes" in str(f.type)) for f in dataclasses.fields(cls))


def _from_row(cls: type, data: dict[str, Any]) -> Any:
    values = {}
    for name, is_bytes in _row_fields(cls):
        value = data[name]
        values[name] = _unb64(value) if is_bytes and value is not None else value
    return cls(**values)


def configured_validators(validators: str, quorum_size: int) -> ValidatorSet:
    """The validator set from a comma-separated settings value (empty: svc-ledger alone)."""
    members = [v for v in validators.split(",") if v.strip()]
    return ValidatorSet.of(members, quorum_size) if members else ValidatorSet.single()
