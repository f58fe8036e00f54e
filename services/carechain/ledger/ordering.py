"""Transaction ordering: the seam between the ledger and its ordering engine.

CareChain does not implement consensus. An :class:`Orderer` gives every
submitted transaction a dense sequence number (0, 1, 2, ...) and lets every
validator read the same sequence. Implementations:
:class:`carechain.ledger.etcd_orderer.EtcdOrderer` (etcd's Raft log, for
production and several validators) and
:class:`carechain.ledger.memory_orderer.InProcessOrderer` (the embedded
default). A shared orderer that also agrees block cuts implements
:class:`carechain.ledger.cutter.BlockCutRegistry` and carries header votes
(:class:`carechain.ledger.quorum.VoteBoard`).

Durability: a non-durable orderer (``durable = False``, the in-process one)
keeps its sequence in memory only. That is safe because a client is told its
transaction is committed only after the block containing it is durably
written to the chain store; anything ordered but not yet in a block when the
process dies was never acknowledged, so the client retries. A durable orderer
keeps its sequence, and the ledger then resumes reading after the last
sequence it committed.

Memory: once a block is committed the cutter calls :meth:`Orderer.release`
with the first sequence it still needs; an in-memory orderer forgets the
entries before it, so it holds O(what is not yet committed), not the history.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Orderer(Protocol):
    """A totally ordered, append-only log of opaque transaction bytes."""

    #: True when the order survives a restart of this process.
    durable: bool

    def append(self, tx_bytes: bytes) -> int:
        """Append one entry; returns its sequence number (dense, from 0)."""
        ...

    def append_many(self, entries: list[bytes]) -> list[int]:
        """Append several entries at once (one ordering round trip); their sequence numbers, in order."""
        ...

    def release(self, before_sequence: int) -> None:
        """Entries before before_sequence are committed here: an orderer may forget them (durable ones keep them)."""
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
