"""An in-memory shared order for several validators in one process (tests, simulations).

:class:`SharedOrder` behaves like the etcd orderer towards the ledger: one
order, first-write-wins block cuts (:class:`carechain.ledger.chain.BlockCutRegistry`)
and write-once header votes (:class:`carechain.ledger.quorum.VoteBoard`), all in
memory, so several :class:`carechain.ledger.chain.Ledger` instances in one
process form a multi-validator network. It is "durable" for as long as the
object lives: a ledger closed and reopened over the same object resumes.
"""

from __future__ import annotations

import threading

from carechain.ledger.chain import BlockCut
from carechain.ledger.ordering import InProcessOrderer


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
