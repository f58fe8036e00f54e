"""Transaction ordering: the seam between the ledger and its ordering engine.

CareChain does not implement consensus. An :class:`Orderer` gives every
submitted transaction a dense sequence number (0, 1, 2, ...) and lets every
validator read the same sequence. In production that is etcd's Raft log (a
later implementation of this protocol); in the embedded default it is
:class:`InProcessOrderer`.

Durability: the in-process orderer keeps its sequence in memory only. That is
safe because a client is told its transaction is committed only after the
block containing it is durably written to the chain store; anything ordered
but not yet in a block when the process dies was never acknowledged, so the
client retries (with a fresh nonce, or the same one, which is then accepted
because it was never committed). After a restart the in-process sequence
starts again at 0. A durable orderer (``durable = True``) keeps its sequence,
and the ledger then resumes reading after the last sequence it committed.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Orderer(Protocol):
    """A totally ordered, append-only log of opaque transaction bytes."""

    #: True when the order survives a restart of this process.
    durable: bool

    def append(self, tx_bytes: bytes) -> int:
        """Append one entry; returns its sequence number (dense, from 0)."""
        ...

    def read(self, from_sequence: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit entries with sequence >= from_sequence, in order, without gaps."""
        ...

    def wait(self, after_sequence: int, timeout: float) -> bool:
        """Block until an entry with sequence > after_sequence exists (True) or timeout passes (False)."""
        ...

    def close(self) -> None:
        """Release resources and wake every waiter; later appends fail."""
        ...


class OrdererClosed(RuntimeError):
    """The orderer was closed."""


class InProcessOrderer:
    """The embedded orderer: a thread-safe in-memory list (see the module docstring on durability)."""

    durable = False

    def __init__(self) -> None:
        self._entries: list[bytes] = []
        self._changed = threading.Condition()
        self._closed = False

    def append(self, tx_bytes: bytes) -> int:
        """Append one entry; returns its sequence number."""
        if not isinstance(tx_bytes, bytes | bytearray):
            raise TypeError("orderer entries are bytes")
        with self._changed:
            if self._closed:
                raise OrdererClosed("orderer is closed")
            self._entries.append(bytes(tx_bytes))
            self._changed.notify_all()
            return len(self._entries) - 1

    def read(self, from_sequence: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit entries from from_sequence."""
        if from_sequence < 0 or limit < 0:
            raise ValueError("from_sequence and limit must not be negative")
        with self._changed:
            chunk = self._entries[from_sequence : from_sequence + limit]
        return [(from_sequence + i, entry) for i, entry in enumerate(chunk)]

    def wait(self, after_sequence: int, timeout: float) -> bool:
        """Wait for an entry after after_sequence; False on timeout or close."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            # An entry with sequence > after_sequence exists once len > after_sequence + 1.
            while len(self._entries) <= after_sequence + 1 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return len(self._entries) > after_sequence + 1

    def close(self) -> None:
        """Wake waiters and refuse further appends."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
