"""The production orderer: transactions ordered by etcd's Raft log.

Keys, under ``<etcd_prefix>/<chain_id>/``:

- ``order/<sequence, 20 digits>``: a 16-byte random append token followed by
  the entry (the encoded transaction) with that sequence.
- ``order-next``: the next free sequence (decimal). An append is one etcd
  transaction for a whole batch of k entries: *if* ``order-next`` still
  holds n, put ``order/n`` .. ``order/n+k-1`` and set ``order-next`` to
  n + k. Raft commits it on a quorum before etcd answers, so sequences are
  dense, unique and durable, and the order is the same for every reader. A
  lost race just retries with the value etcd returned. When an attempt's
  outcome is unknown (e.g. the leader died meanwhile), the append retries
  until its deadline and recognises its own earlier attempt by the token
  (one per batch, in front of every entry of it), so an entry is never
  ordered twice by one append; an append that finally fails (Unavailable)
  may still have been ordered, exactly once.

Batching: concurrent :meth:`EtcdOrderer.append` / :meth:`EtcdOrderer.append_many`
calls of this process go through one :class:`carechain.runtime.batching.MicroBatcher`:
whatever arrives while a batch is in etcd forms the next one (up to
``_MAX_BATCH_ENTRIES`` entries and ``_MAX_BATCH_BYTES`` per etcd transaction).
One batch is in flight at a time on purpose: two of this process would only
race each other on ``order-next``; under load a batch carries everything
waiting, so the rate is not bounded by one entry per round trip.
- ``blocks/<height, 20 digits>``: the agreed block cut for that height
  (JSON ``{"first_sequence", "count", "timestamp_ms"}``).
- ``sigs/<height, 20 digits>/<validator id>``: that validator's signed header
  for the height (an encoded ``HeaderVote``), written once by a
  compare-and-swap on the key's absence, never changed (see
  :mod:`carechain.ledger.quorum`). A validator cannot take back or replace
  what it signed, so a second, different header is provable misbehaviour.

Block cutting rule (deterministic from etcd's content). A validator may
*propose* the cut of height h when it decides to cut (its local
``block_max_transactions`` / ``block_max_wait_ms`` policy), but the cut is
what is *recorded* in ``blocks/h``: it is created once, by a
compare-and-swap that only succeeds while the key does not exist, and is
never changed. Every validator (and a validator after a restart) first looks
for a recorded cut and, if there is one, cuts exactly those order entries
with exactly that timestamp. Cuts are contiguous: cut h starts where cut
h - 1 ended (the genesis cut is height 0 with no entries). So block contents
and headers (timestamp included) depend only on etcd's content, never on a
validator's local timing, and every validator produces byte-identical headers.

``wait`` is woken at once by appends made through the same orderer object and,
through an etcd watch of ``order-next`` (:class:`PushWatch`), by other
validators' appends; it polls etcd only as a fallback (every ``poll_interval``
seconds while no watch runs). The finalizer subscribes to a watch of the votes
(:meth:`EtcdOrderer.subscribe_votes`) in the same way.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

from carechain.core.errors import CareChainError, DataLoss, Unavailable
from carechain.ledger.cutter import BlockCut
from carechain.ledger.ordering import OrdererClosed
from carechain.runtime.batching import BatchClosed, MicroBatcher
from carechain.runtime.etcd import MAX_TXN_OPS, Compare, EtcdClient, KeyValue, Op, OutcomeUnknown, prefix_end

DEFAULT_POLL_INTERVAL = 0.025
_MAX_CAS_ATTEMPTS = 1000
_DIGITS = 20
_TOKEN_BYTES = 16
# One etcd transaction: the puts of the entries plus the order-next put (etcd's --max-txn-ops), and well under
# etcd's default --max-request-bytes (1.5 MiB; the JSON gateway base64-encodes values, 4/3 larger).
_MAX_BATCH_ENTRIES = MAX_TXN_OPS - 1
_MAX_BATCH_BYTES = 768 * 1024
# With a watch running, the fallback poll of wait() (a missed push costs at most this much latency).
_PUSHED_POLL_SECONDS = 0.5
_WATCH_IDLE_SECONDS = 5.0
_WATCH_RETRY_SECONDS = 0.2


def chain_prefix(etcd_prefix: str, chain_id: str) -> str:
    """Where one chain's order lives: ``<etcd_prefix>/<chain_id>/``."""
    if not chain_id or "/" in chain_id:
        raise ValueError("chain id must be non-empty and contain no '/'")
    return f"{etcd_prefix.rstrip('/')}/{chain_id}/"


class EtcdOrderer:
    """Orderer on etcd (see the module docstring); also records and serves block cuts."""

    durable = True

    def __init__(
        self,
        client: EtcdClient,
        etcd_prefix: str,
        chain_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = chain_prefix(etcd_prefix, chain_id)
        self.poll_interval = poll_interval
        self._owns_client = owns_client
        self._order_prefix = (self.prefix + "order/").encode()
        self._next_key = (self.prefix + "order-next").encode()
        self._blocks_prefix = (self.prefix + "blocks/").encode()
        self._sigs_prefix = (self.prefix + "sigs/").encode()
        # One batch in flight (see the module docstring): _next is touched by the flushing thread only.
        self._appends: MicroBatcher[list[bytes], list[int]] = MicroBatcher(
            "etcd-order-append", self._flush_appends, max_batch=_MAX_BATCH_ENTRIES, max_in_flight=1)
        self._next: int | None = None  # our best guess of order-next; etcd's compare is the truth
        self._changed = threading.Condition()
        self._local_last = -1  # highest sequence appended through this object
        self._closed = False
        # Push instead of polling: watches of order-next (new entries) and of the votes (finality).
        self._order_changes = 0
        self._vote_subscribers: list[Callable[[], None]] = []
        self._order_watch = PushWatch(client, self._next_key, b"", self._order_changed, "etcd-order-watch")
        self._vote_watch = PushWatch(client, self._sigs_prefix, prefix_end(self._sigs_prefix), self._votes_changed,
                                     "etcd-vote-watch")

    def entry_key(self, sequence: int) -> bytes:
        """The key of the entry with this sequence."""
        return self._order_prefix + f"{sequence:0{_DIGITS}d}".encode()

    def block_key(self, height: int) -> bytes:
        """The key of the recorded cut of this height."""
        return self._blocks_prefix + f"{height:0{_DIGITS}d}".encode()

    # --- Orderer -------------------------------------------------------------------------------

    def append(self, tx_bytes: bytes) -> int:
        """Order one entry through etcd; its sequence once a quorum committed it (Unavailable otherwise)."""
        return self.append_many([tx_bytes])[0]

    def append_many(self, entries: list[bytes]) -> list[int]:
        """Order entries (batched with concurrent appends of this process); their sequences, in order."""
        if not all(isinstance(entry, bytes | bytearray) for entry in entries):
            raise TypeError("orderer entries are bytes")
        if not entries:
            return []
        if self._closed:
            raise OrdererClosed("orderer is closed")
        try:
            return self._appends.submit([bytes(entry) for entry in entries])
        except BatchClosed:
            raise OrdererClosed("orderer is closed") from None

    def release(self, before_sequence: int) -> None:
        """Nothing to forget here: the order stays in etcd for every validator (and for catch-up)."""

    def _flush_appends(self, batch: list[list[bytes]]) -> list[list[int] | BaseException]:
        """One etcd transaction per chunk of the callers' entries; each caller gets its sequences or the error."""
        outcomes: list[list[int] | BaseException] = []
        chunk: list[bytes] = []
        owners: list[int] = []  # callers whose entries are (partly) in chunk
        sequences: list[list[int]] = [[] for _ in batch]
        failed: dict[int, BaseException] = {}

        def send() -> None:
            if not chunk:
                return
            try:
                first = self._append_chunk(chunk)
            except BaseException as exc:  # noqa: BLE001 - this chunk's callers hear of it
                for owner in owners:
                    failed.setdefault(owner, exc)
            else:
                cursor = first
                for owner, count in _runs(owners):
                    sequences[owner].extend(range(cursor, cursor + count))
                    cursor += count
            chunk.clear()
            owners.clear()

        size = 0
        for caller, entries in enumerate(batch):
            for entry in entries:
                if chunk and (len(chunk) >= _MAX_BATCH_ENTRIES or size + len(entry) > _MAX_BATCH_BYTES):
                    send()
                    size = 0
                chunk.append(entry)
                owners.append(caller)
                size += len(entry)
        send()
        for caller in range(len(batch)):
            outcomes.append(failed[caller] if caller in failed else sequences[caller])
        return outcomes

    def _append_chunk(self, entries: list[bytes]) -> int:
        """Order entries in one etcd transaction; the sequence of the first (the rest follow densely)."""
        token = os.urandom(_TOKEN_BYTES)
        values = [token + entry for entry in entries]
        deadline = time.monotonic() + self.client.deadline
        uncertain: list[int] = []  # first sequences an attempt of ours may have taken
        try:
            first = self._append(values, token, deadline, uncertain)
        except CareChainError as exc:
            self._next = None  # ask etcd next time
            if uncertain and not isinstance(exc, OutcomeUnknown):
                raise OutcomeUnknown(f"append not confirmed: {exc}") from exc
            raise
        with self._changed:
            self._local_last = max(self._local_last, first + len(entries) - 1)
            self._changed.notify_all()
        return first

    def _append(self, values: list[bytes], token: bytes, deadline: float, uncertain: list[int]) -> int:
        count = len(values)
        for _ in range(_MAX_CAS_ATTEMPTS):
            sequence = self._next if self._next is not None else self._read_next()
            if uncertain and (ours := self._find_own(uncertain, sequence, token)) is not None:
                return self._appended(ours, count)
            expected = (
                Compare.version(self._next_key, "==", 0)
                if sequence == 0
                else Compare.value(self._next_key, "==", str(sequence))
            )
            puts = [Op.put(self.entry_key(sequence + i), value) for i, value in enumerate(values)]
            try:
                result = self.client.txn(
                    [expected], [*puts, Op.put(self._next_key, str(sequence + count))], [Op.get(self._next_key)]
                )
            except OutcomeUnknown:
                self._next = None
                uncertain.append(sequence)
                if time.monotonic() >= deadline:
                    raise
                continue
            if result.succeeded:
                return self._appended(sequence, count)
            current = result.responses[0]
            self._next = int(current.kvs[0].value) if current is not None and current.kvs else 0
        raise Unavailable("etcd", "too much contention on the order sequence")

    def _find_own(self, uncertain: list[int], next_sequence: int, token: bytes) -> int | None:
        """The sequence an earlier, unanswered attempt of this append took, if it was committed."""
        taken = [s for s in uncertain if s < next_sequence]
        if not taken:
            return None
        for sequence, kv in zip(taken, self.client.read_many([self.entry_key(s) for s in taken]), strict=True):
            if kv is not None and kv.value[:_TOKEN_BYTES] == token:
                return sequence
        return None

    def _appended(self, sequence: int, count: int) -> int:
        end = sequence + count
        self._next = end if self._next is None or self._next < end else self._next
        return sequence

    def read(self, from_sequence: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit entries from from_sequence, in order (one linearizable range read)."""
        if from_sequence < 0 or limit < 0:
            raise ValueError("from_sequence and limit must not be negative")
        if limit == 0:
            return []
        result = self.client.range(self.entry_key(from_sequence), prefix_end(self._order_prefix), limit)
        entries: list[tuple[int, bytes]] = []
        for expected, kv in enumerate(result.kvs, start=from_sequence):
            sequence = int(kv.key[len(self._order_prefix) :])
            if sequence != expected:
                raise DataLoss(f"the order in etcd has no entry {expected} (next is {sequence})")
            entries.append((sequence, kv.value[_TOKEN_BYTES:]))
        return entries

    def wait(self, after_sequence: int, timeout: float) -> bool:
        """True once an entry after after_sequence exists; False on timeout, close or while etcd is down.

        Woken by this object's appends and, through a watch of ``order-next``, by other validators'; polls
        etcd only as a fallback (every ``poll_interval`` while no watch runs, else every
        ``_PUSHED_POLL_SECONDS``).
        """
        self._order_watch.start()
        deadline = time.monotonic() + max(timeout, 0.0)
        key = self.entry_key(after_sequence + 1)
        while True:
            with self._changed:
                if self._closed:
                    return False
                if self._local_last > after_sequence:
                    return True
                seen = self._order_changes
            try:
                if self.client.range(key, count_only=True).count > 0:
                    return True
            except CareChainError:
                pass  # etcd unreachable: the cutter keeps waiting and reading; callers see a timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poll = _PUSHED_POLL_SECONDS if self._order_watch.healthy else self.poll_interval
            with self._changed:
                if not self._closed and self._local_last <= after_sequence and self._order_changes == seen:
                    self._changed.wait(min(remaining, poll))

    def _order_changed(self) -> None:
        with self._changed:
            self._order_changes += 1
            self._changed.notify_all()

    def subscribe_votes(self, on_change: Callable[[], None]) -> None:
        """Call on_change (on a watch thread) whenever a header vote is published; see :class:`PushWatch`."""
        with self._changed:
            self._vote_subscribers.append(on_change)
        self._vote_watch.start()

    def _votes_changed(self) -> None:
        with self._changed:
            subscribers = list(self._vote_subscribers)
        for on_change in subscribers:
            on_change()

    @property
    def pushed(self) -> bool:
        """True while etcd pushes this order's changes (the watches run)."""
        return self._order_watch.healthy

    def close(self) -> None:
        """Wake waiters and refuse further appends (the order itself stays in etcd)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._appends.close()
        self._order_watch.stop()
        self._vote_watch.stop()
        if self._owns_client:
            self.client.close()

    # --- block cuts (BlockCutRegistry) ---------------------------------------------------------

    def recorded_cut(self, height: int) -> BlockCut | None:
        """The agreed cut of height, or None when no validator has recorded one yet."""
        kv = self.client.get(self.block_key(height))
        return None if kv is None else _decode_cut(height, kv.value)

    def record_cut(self, cut: BlockCut) -> BlockCut:
        """Record cut unless a cut of its height exists; returns the cut that holds (ours or the earlier one)."""
        key = self.block_key(cut.height)
        result = self.client.txn(
            [Compare.version(key, "==", 0)], [Op.put(key, _encode_cut(cut))], [Op.get(key)]
        )
        if result.succeeded:
            return cut
        existing = result.responses[0]
        if existing is None or not existing.kvs:
            raise DataLoss(f"block cut {cut.height} vanished from etcd")
        return _decode_cut(cut.height, existing.kvs[0].value)

    def record_cut_and_votes(self, cut: BlockCut) -> tuple[BlockCut, dict[str, bytes]]:
        """:meth:`record_cut`, and the votes already published for its height, in one etcd round trip."""
        key = self.block_key(cut.height)
        votes = Op.range(*self._votes_range(cut.height, cut.height))
        result = self.client.txn(
            [Compare.version(key, "==", 0)], [Op.put(key, _encode_cut(cut)), votes], [Op.get(key), votes]
        )
        if result.succeeded:
            agreed, found = cut, result.responses[1]
        else:
            existing = result.responses[0]
            if existing is None or not existing.kvs:
                raise DataLoss(f"block cut {cut.height} vanished from etcd")
            agreed, found = _decode_cut(cut.height, existing.kvs[0].value), result.responses[1]
        return agreed, self._decode_votes(found.kvs if found is not None else []).get(cut.height, {})

    # --- header votes (VoteBoard) --------------------------------------------------------------

    def vote_key(self, height: int, validator_id: str) -> bytes:
        """The key of one validator's vote for one height."""
        if not validator_id or "/" in validator_id:
            raise ValueError("validator id must be non-empty and contain no '/'")
        return self._sigs_prefix + f"{height:0{_DIGITS}d}/{validator_id}".encode()

    def publish_vote(self, height: int, validator_id: str, vote: bytes) -> bytes:
        """Store vote unless this validator already voted for height; returns the vote that holds."""
        key = self.vote_key(height, validator_id)
        result = self.client.txn([Compare.version(key, "==", 0)], [Op.put(key, vote)], [Op.get(key)])
        if result.succeeded:
            return vote
        existing = result.responses[0]
        if existing is None or not existing.kvs:
            raise DataLoss(f"vote of {validator_id} for block {height} vanished from etcd")
        return existing.kvs[0].value

    def votes(self, first_height: int, last_height: int) -> dict[int, dict[str, bytes]]:
        """Every vote for heights first..last (one range read)."""
        if last_height < first_height:
            return {}
        return self._decode_votes(self.client.range(*self._votes_range(first_height, last_height)).kvs)

    def _votes_range(self, first_height: int, last_height: int) -> tuple[bytes, bytes]:
        start = self._sigs_prefix + f"{first_height:0{_DIGITS}d}/".encode()
        return start, prefix_end(self._sigs_prefix + f"{last_height:0{_DIGITS}d}/".encode())

    def _decode_votes(self, kvs: list[KeyValue]) -> dict[int, dict[str, bytes]]:
        found: dict[int, dict[str, bytes]] = {}
        for kv in kvs:
            height_text, _, validator_id = kv.key[len(self._sigs_prefix):].decode().partition("/")
            found.setdefault(int(height_text), {})[validator_id] = kv.value
        return found

    # --- internals -----------------------------------------------------------------------------

    def _read_next(self) -> int:
        kv = self.client.get(self._next_key)
        return int(kv.value) if kv is not None else 0


class PushWatch:
    """A background etcd watch that calls on_change after every change (and after every reconnection).

    Started on first use, reconnects after a pause when the stream ends or fails; ``healthy`` while a
    watch stream runs. A notification only says "look again": waiters re-read etcd, so a change missed
    while disconnected costs latency (the fallback poll), never correctness.
    """

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes, on_change: Callable[[], None],
                 name: str) -> None:
        self._client = client
        self._key = key
        self._range_end = range_end
        self._on_change = on_change
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.healthy = False

    def start(self) -> None:
        """Start watching (once)."""
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop at the next response or idle timeout (daemon thread: close() does not wait for it)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for batch in self._client.watch(self._key, self._range_end, idle_timeout=_WATCH_IDLE_SECONDS):
                    if self._stopped.is_set():
                        return
                    if not self.healthy:
                        self.healthy = True
                        self._on_change()  # whatever happened before the watch started
                    elif batch.changes:
                        self._on_change()
            except Exception:  # noqa: BLE001, S110 - etcd down: waiters poll meanwhile
                pass
            self.healthy = False
            self._stopped.wait(_WATCH_RETRY_SECONDS)


def _runs(owners: list[int]) -> list[tuple[int, int]]:
    """[(owner, how many in a row)] of a list like [0, 0, 1, 2, 2, 2]."""
    runs: list[tuple[int, int]] = []
    for owner in owners:
        if runs and runs[-1][0] == owner:
            runs[-1] = (owner, runs[-1][1] + 1)
        else:
            runs.append((owner, 1))
    return runs


def _encode_cut(cut: BlockCut) -> bytes:
    return json.dumps(
        {"first_sequence": cut.first_sequence, "count": cut.count, "timestamp_ms": cut.timestamp_ms},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def _decode_cut(height: int, value: bytes) -> BlockCut:
    try:
        data = json.loads(value)
        return BlockCut(height, int(data["first_sequence"]), int(data["count"]), int(data["timestamp_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLoss(f"block cut {height} in etcd is not readable") from exc
