"""In-memory orderers (:class:`carechain.ledger.ordering.Orderer` implementations).

- :class:`InProcessOrderer`: the embedded default, one validator's order in a
  thread-safe list holding only what is not committed yet (committed entries
  are released). Not durable: its sequence starts again at 0 after a
  restart, which is safe because nothing ordered but not yet committed was
  acknowledged (see :mod:`carechain.ledger.ordering`).
- :class:`SharedOrder`: an in-memory shared order for several validators in
  one process (tests, simulations). It behaves like the etcd orderer towards
  the ledger: one order, first-write-wins block cuts
  (:class:`carechain.ledger.cutter.BlockCutRegistry`) and write-once header
  votes (:class:`carechain.ledger.quorum.VoteBoard`), so several
  :class:`carechain.ledger.chain.Ledger` instances in one process form a
  multi-validator network. It is "durable" for as long as the object lives: a
  ledger closed and reopened over the same object resumes.
"""

from __future__ import annotations

import threading
import time

from carechain.ledger.cutter import BlockCut
from carechain.ledger.ordering import OrdererClosed


class InProcessOrderer:
    """The embedded orderer: a thread-safe in-memory window of the order (see the module docstring on durability).

    It keeps only entries the ledger has not committed yet: :meth:`release` (called by the cutter after
    each commit) drops the ones before a sequence, so memory stays O(uncommitted), not O(history).
    """

    durable = False

    def __init__(self) -> None:
        self._entries: list[bytes] = []
        self._base = 0  # sequence of _entries[0]; everything before was released
        self._changed = threading.Condition()
        self._closed = False

    @property
    def appended(self) -> int:
        """Entries ever appended (the next sequence number)."""
        with self._changed:
            return self._base + len(self._entries)

    @property
    def retained(self) -> int:
        """Entries held in memory (appended and not yet released)."""
        with self._changed:
            return len(self._entries)

    def append(self, tx_bytes: bytes) -> int:
        """Append one entry; returns its sequence number."""
        return self.append_many([tx_bytes])[0]

    def append_many(self, entries: list[bytes]) -> list[int]:
        """Append entries in order; their sequence numbers."""
        if not all(isinstance(entry, bytes | bytearray) for entry in entries):
            raise TypeError("orderer entries are bytes")
        with self._changed:
            if self._closed:
                raise OrdererClosed("orderer is closed")
            first = self._base + len(self._entries)
            self._entries.extend(bytes(entry) for entry in entries)
            self._changed.notify_all()
            return list(range(first, first + len(entries)))

    def release(self, before_sequence: int) -> None:
        """Forget the entries before before_sequence (committed: nobody reads them from here again)."""
        with self._changed:
            drop = min(before_sequence - self._base, len(self._entries))
            if drop > 0:
                del self._entries[:drop]
                self._base += drop

    def read(self, from_sequence: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit entries from from_sequence (never a released one)."""
        if from_sequence < 0 or limit < 0:
            raise ValueError("from_sequence and limit must not be negative")
        with self._changed:
            if from_sequence < self._base:
                raise ValueError(f"order entries before {self._base} were released after their commit")
            start = from_sequence - self._base
            chunk = self._entries[start : start + limit]
        return [(from_sequence + i, entry) for i, entry in enumerate(chunk)]

    def wait(self, after_sequence: int, timeout: float) -> bool:
        """Wait for an entry after after_sequence; False on timeout or close."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            # An entry with sequence > after_sequence exists once the next free sequence > after_sequence + 1.
            while self._base + len(self._entries) <= after_sequence + 1 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return self._base + len(self._entries) > after_sequence + 1

    def close(self) -> None:
        """Wake waiters and refuse further appends."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class SharedOrder(InProcessOrderer):
    """One order, agreed cuts and a vote board in memory."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cuts: dict[int, BlockCut] = {}
        self._votes: dict[int, dict[str, bytes]] = {}

    def close(self) -> None:
        """Shared by several ledgers: closing one of them leaves the order open."""

    def release(self, before_sequence: int) -> None:
        """Kept: another validator (or one catching up) may still read every entry, as from etcd."""

    def recorded_cut(self, height: int) -> BlockCut | None:
        """The agreed cut of height, or None."""
        with self._lock:
            return self._cuts.get(height)

    def record_cut(self, cut: BlockCut) -> BlockCut:
        """Record cut unless its height has one; returns the cut that holds."""
        with self._lock:
            return self._cuts.setdefault(cut.height, cut)

    def publish_vote(self, height: int, validator_id: str, vote: bytes) -> bytes:
        """Store vote unless the validator already voted for height; returns the vote that holds."""
        with self._lock:
            return self._votes.setdefault(height, {}).setdefault(validator_id, bytes(vote))

    def votes(self, first_height: int, last_height: int) -> dict[int, dict[str, bytes]]:
        """Every vote for heights first..last."""
        with self._lock:
            return {h: dict(v) for h, v in self._votes.items() if first_height <= h <= last_height}
