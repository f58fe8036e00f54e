"""Finality: header signatures, quorum certificates, catch-up checks and the wait for a final block.

Every validator signs the header it computed for each block it commits and
publishes that vote on the orderer's :class:`~carechain.ledger.quorum.VoteBoard`
(etcd). The finalizer thread publishes this validator's votes, reads the
others' and, once ``quorum`` validators of the configured
:class:`~carechain.ledger.quorum.ValidatorSet` signed the very header this
validator computed, stores the quorum certificate with the block: the block
(and, through the hash chain, every block before it) is *final*.

- A vote with a valid signature over a *different* header is evidence of
  misbehaviour: it is stored (``GetEvidence``), logged, and never counted.
- Catch-up: before the cutter applies a block, :meth:`Finality.sign` checks
  the votes already published for that height. If a quorum certified another
  header it raises DataLoss (this validator's store or rules differ: the
  cutter does not apply it and retries); if a quorum certified the same
  header, the certificate is stored with the block at once.
- The embedded network is one validator with quorum 1: its own signature is
  the certificate, stored in the same SQLite transaction as the block; there
  is no finalizer thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from carechain.core.crypto import Signer
from carechain.core.errors import DataLoss, NotFound, Unavailable
from carechain.core.layout import TrustBundle
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.admission import Committed
from carechain.ledger.quorum import ValidatorSet, VoteBoard
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime import metrics

log = logging.getLogger("carechain.ledger")

#: Finalizer: poll of the vote board while blocks wait for their quorum.
DEFAULT_FINALITY_POLL_SECONDS = 0.01
# Pause before retrying when the vote board (etcd) cannot be reached.
_RETRY_SECONDS = 0.2
# Finalizer: idle wait when every block is final; woken at once by a commit.
_FINALITY_IDLE_SECONDS = 0.2
# With votes pushed by the board, the fallback poll (a missed push costs at most this much latency).
_PUSHED_POLL_SECONDS = 0.25
# Heights read from the board per poll (a long outage of the others is caught up in slices).
_FINALITY_BATCH = 256
# Final heights still watched for late (possibly conflicting) votes of validators that had not voted.
_WATCH_WINDOW = 8

#: A header as signed for commit: (encoded header, this validator's signature, its certificate when already final).
Signed = tuple[bytes, ledger_pb2.ValidatorSignature, ledger_pb2.QuorumCertificate | None]


class Finality:
    """This validator's votes, the others' votes, certificates and the final height."""

    def __init__(
        self,
        store: LedgerStore,
        signer: Signer,
        trust: TrustBundle,
        validators: ValidatorSet,
        board: VoteBoard | None,
        stopping: threading.Event,
        poll_seconds: float = DEFAULT_FINALITY_POLL_SECONDS,
    ) -> None:
        self.store = store
        self.signer = signer
        self.validator_id = signer.key_id
        self.trust = trust
        self.validators = validators
        self._board = board
        self._stopping = stopping
        self._poll_seconds = poll_seconds
        # Guards everything below (the cutter reports commits, the finalizer tallies, handlers wait for
        # finality); as a condition it wakes the finalizer on a commit and submitters waiting for a final height.
        self._cond = threading.Condition()
        self._head_height = -1
        self._final_height = -1
        self._unpublished: set[int] = set()
        self._settled: set[int] = set()  # certified here and voted on by every member: nothing left to watch
        self._own_votes: dict[int, ledger_pb2.HeaderVote] = {}
        self._certified: set[int] = set()
        self._diverged_at: int | None = None
        self._board_down = False  # finalizer thread only: log an outage once
        self._thread: threading.Thread | None = None
        # Votes pushed by the board (etcd watch) wake the finalizer; polling is then only a fallback.
        self._vote_changes = 0
        self._subscribe = getattr(board, "subscribe_votes", None)

    # --- lifecycle -----------------------------------------------------------------------------

    def resume(self, head_height: int) -> None:
        """Final height from the stored certificates; re-publish votes of blocks not yet final."""
        if self.validators.quorum <= 1:
            # Our own signature is a certificate (also upgrades stores from before certificates).
            for height in self.store.uncertified_heights():
                stored = self.store.block(height)
                assert stored is not None
                signature = quorum.sign_header(self.signer, stored.header)
                certificate = quorum.build_certificate(height, stored.header, [signature])
                self.store.put_certificate(height, transactions.encode(certificate))
        last = self.store.last_certified_height()
        with self._cond:
            self._head_height = head_height
            self._final_height = -1 if last is None else last
            # Publishing is idempotent; a vote lost in a crash right after the commit is sent again.
            self._unpublished = set(range(self._final_height + 1, head_height + 1)) | {head_height}

    def start(self) -> None:
        """Start the finalizer thread (only with a vote board: alone, a block is final at commit)."""
        if self._board is not None:
            if self._subscribe is not None:
                self._subscribe(self._votes_changed)
            self._thread = threading.Thread(target=self._run, name="ledger-finalizer", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wake and wait for the finalizer (the shared stopping event is already set)."""
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # --- the cutter's side ---------------------------------------------------------------------

    def sign(self, header: ledger_pb2.BlockHeader, votes: dict[str, bytes] | None = None) -> Signed:
        """Encode and sign header; its certificate when already certain (quorum 1, or a catching-up validator).

        votes: the votes published for this height, when already read (with the block cut, in the same
        etcd round trip); else they are read here. Raises DataLoss when a quorum already signed another
        header for this height: nothing is applied then.
        """
        header_bytes = transactions.encode(header)
        signature = quorum.sign_header(self.signer, header_bytes)
        if self.validators.quorum <= 1:
            return header_bytes, signature, quorum.build_certificate(header.height, header_bytes, [signature])
        assert self._board is not None
        if votes is None:
            votes = self._board.votes(header.height, header.height).get(header.height, {})
        return header_bytes, signature, self._tally(header.height, header_bytes, votes, signature)

    def committed(self, height: int, signed: Signed) -> None:
        """A block was durably committed with this signature (and certificate, stored with it, if any)."""
        header_bytes, signature, certificate = signed
        with self._cond:
            self._head_height = max(self._head_height, height)
            # Votes and certified marks are for the finalizer, which forgets them once final; alone
            # (no board, final at commit) keeping them would grow with the history.
            if self._board is not None:
                self._own_votes[height] = ledger_pb2.HeaderVote(header=header_bytes, signature=signature)
                self._unpublished.add(height)
                if certificate is not None:
                    self._certified.add(height)
            self._cond.notify_all()  # wakes the finalizer
        if certificate is not None:
            self._set_final(height)

    # --- queries and the submitter's wait ------------------------------------------------------

    def final_height(self) -> int:
        """Highest final block (-1 before genesis is final)."""
        with self._cond:
            return self._final_height

    def wait_final(self, height: int, timeout: float) -> bool:
        """Block until height is final (True) or timeout passes (False)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._final_height < height:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return self._final_height >= height
                self._cond.wait(min(remaining, _FINALITY_IDLE_SECONDS))
            return True

    def acknowledge(self, result: Committed, want_final: bool, deadline: float, timeout: float) -> Committed:
        """The answer to a committed submission: marked final when it is; with want_final, wait until it is.

        deadline is the submission's (time.monotonic()); timeout only names it in the UNAVAILABLE error.
        """
        if self.final_height() >= result.height:
            self._record_time_to_final(deadline, timeout)
            return replace(result, final=True)
        if not want_final:
            return result
        if not self.wait_final(result.height, deadline - time.monotonic()):
            raise Unavailable(
                "ledger",
                f"transaction committed in block {result.height} but no quorum of "
                f"{self.validators.quorum} validators signed it within {timeout:g}s",
            )
        self._record_time_to_final(deadline, timeout)
        return replace(result, final=True)

    def _record_time_to_final(self, deadline: float, timeout: float) -> None:
        # deadline - timeout is when the submission started.
        metrics.LEDGER_TIME_TO_FINAL.record(time.monotonic() - deadline + timeout, {"validator": self.validator_id})

    def certificate(self, height: int) -> ledger_pb2.QuorumCertificate | None:
        """The stored quorum certificate of height, or None."""
        raw = self.store.certificate(height)
        return None if raw is None else ledger_pb2.QuorumCertificate.FromString(raw)

    def checkpoint(self, height: int = 0) -> ledger_pb2.Checkpoint:
        """Checkpoint of a certified block (0 = the highest final one) with its co-signatures."""
        with self._cond:
            head_height = self._head_height
        if height == 0:
            height = self.final_height()
            if height < 0:
                raise Unavailable("ledger", "no block is final yet")
        # Compare first: SQLite integers stop at 2^63 and heights are uint64.
        raw = self.store.certificate(height) if height <= head_height else None
        stored = self.store.block(height) if raw is not None else None
        if raw is None or stored is None:
            raise NotFound(f"this validator holds no quorum certificate for block {height}")
        header = ledger_pb2.BlockHeader.FromString(stored.header)
        return ledger_pb2.Checkpoint(
            chain_id=header.chain_id,
            height=header.height,
            tree_size=header.log_size,
            root=header.log_root,
            timestamp_ms=header.timestamp_ms,
            header=stored.header,
            certificate=ledger_pb2.QuorumCertificate.FromString(raw),
        )

    def evidence(self, from_height: int = 0) -> list[ledger_pb2.Evidence]:
        """Misbehaviour observed, in the order recorded."""
        return [ledger_pb2.Evidence.FromString(raw) for raw in self.store.evidence(from_height)]

    @property
    def diverged_at(self) -> int | None:
        """Height at which a quorum certified another header than this validator's, if ever."""
        return self._diverged_at

    @property
    def retained(self) -> int:
        """Heights this finalizer holds state for (votes, marks): bounded by the blocks not yet final plus a window."""
        with self._cond:
            return len(self._own_votes) + len(self._certified) + len(self._settled) + len(self._unpublished)

    # --- votes and tallies ---------------------------------------------------------------------

    def _set_final(self, height: int) -> None:
        with self._cond:
            if height > self._final_height:
                self._final_height = height
            self._cond.notify_all()

    def _own_vote(self, height: int) -> ledger_pb2.HeaderVote:
        with self._cond:
            vote = self._own_votes.get(height)
        if vote is None:
            stored = self.store.block(height)
            if stored is None:
                raise DataLoss(f"block {height} is missing from the store")
            block = ledger_pb2.Block.FromString(stored.block)
            own = [s for s in block.signatures if s.validator_id == self.validator_id]
            signature = own[0] if own else quorum.sign_header(self.signer, stored.header)
            vote = ledger_pb2.HeaderVote(header=stored.header, signature=signature)
            with self._cond:
                self._own_votes[height] = vote
        return vote

    def _check_vote(self, height: int, validator_id: str, raw: bytes) -> ledger_pb2.HeaderVote | None:
        """A published vote that is authentic and from a member; None (logged) otherwise."""
        if validator_id not in self.validators:
            return None
        vote = quorum.decode_vote(raw)
        if (
            vote is None
            or vote.signature.validator_id != validator_id
            or not quorum.signature_valid(vote.header, vote.signature, self.trust)
        ):
            log.warning("ignoring a vote that is not validly signed by its validator",
                        extra={"height": height, "validator": validator_id})
            return None
        try:
            if ledger_pb2.BlockHeader.FromString(vote.header).height != height:
                return None
        except Exception:  # noqa: BLE001 - signed garbage is still not a header of this height
            return None
        return vote

    def _record_evidence(self, height: int, validator_id: str, vote: ledger_pb2.HeaderVote, ours: bytes) -> None:
        evidence = ledger_pb2.Evidence(
            kind=ledger_pb2.EVIDENCE_KIND_CONFLICTING_HEADER,
            height=height,
            validator_id=validator_id,
            vote=vote,
            expected_header_hash=ours,
            reporter_id=self.validator_id,
            observed_at_ms=int(time.time() * 1000),
        )
        if self.store.add_evidence(height, validator_id, blocks.header_hash(vote.header),
                                   transactions.encode(evidence)):
            log.error("validator signed a different header; evidence kept and its signature not counted",
                      extra={"height": height, "validator": validator_id})

    def _tally(self, height: int, header_bytes: bytes, votes: dict[str, bytes],
               own: ledger_pb2.ValidatorSignature) -> ledger_pb2.QuorumCertificate | None:
        """Count published votes for our header of height; evidence for conflicting ones; a certificate at quorum.

        Raises DataLoss when a quorum signed another header (this validator diverged).
        """
        ours = blocks.header_hash(header_bytes)
        agreeing = {self.validator_id: own}
        conflicting: dict[bytes, int] = {}
        for validator_id, raw in sorted(votes.items()):
            vote = self._check_vote(height, validator_id, raw)
            if vote is None:
                continue
            if vote.header == header_bytes:
                agreeing[validator_id] = vote.signature
                continue
            self._record_evidence(height, validator_id, vote, ours)
            other = blocks.header_hash(vote.header)
            conflicting[other] = conflicting.get(other, 0) + 1
            if conflicting[other] >= self.validators.quorum:
                if self._diverged_at is None:
                    self._diverged_at = height
                    log.error("a quorum of validators certified another header for this block; this validator "
                              "diverges and stops (verify its store)", extra={"height": height})
                raise DataLoss(
                    f"block {height}: a quorum of validators signed header {other.hex()[:16]}.., this validator "
                    f"computed {ours.hex()[:16]}..; its store or rules differ (run `carechain ledger verify`)"
                )
        if len(agreeing) >= self.validators.quorum:
            return quorum.build_certificate(height, header_bytes, agreeing.values())
        return None

    # --- the finalizer thread ------------------------------------------------------------------

    def _run(self) -> None:
        """Publish own votes, read the others', store certificates (see the module docstring)."""
        assert self._board is not None
        while not self._stopping.is_set():
            with self._cond:
                head = self._head_height
                final = self._final_height
                unpublished = sorted(self._unpublished)
                # Not yet final, plus recent final heights still missing a certificate or some member's vote
                # (a late vote may conflict: evidence).
                heights = [
                    h for h in range(max(0, final - _WATCH_WINDOW + 1), min(head, final + _FINALITY_BATCH) + 1)
                    if h not in self._settled
                ]
                if not heights and not unpublished:
                    self._cond.wait(_FINALITY_IDLE_SECONDS)
                    continue
                seen = self._vote_changes  # before reading the board: a vote published after it wakes us below
            self._forget_old_votes()
            try:
                for height in unpublished:
                    self._publish(height)
                if heights and self._diverged_at is None:
                    self._finalize(heights, self._board.votes(heights[0], heights[-1]))
                self._board_down = False
            except Exception as exc:  # noqa: BLE001 - etcd down: keep trying; blocks stay committed, not final
                if not self._board_down:
                    log.warning("cannot exchange block signatures; retrying", extra={"problem": str(exc)})
                    self._board_down = True
                self._stopping.wait(_RETRY_SECONDS)
                continue
            # Until a vote arrives (pushed), this validator commits a block (its vote to publish), or the poll.
            poll = _PUSHED_POLL_SECONDS if getattr(self._board, "pushed", False) else self._poll_seconds
            with self._cond:
                if self._vote_changes == seen and not self._unpublished and not self._stopping.is_set():
                    self._cond.wait(poll)

    def _votes_changed(self) -> None:
        with self._cond:
            self._vote_changes += 1
            self._cond.notify_all()

    def _publish(self, height: int) -> None:
        assert self._board is not None
        vote = self._own_vote(height)
        raw = transactions.encode(vote)
        holding = self._board.publish_vote(height, self.validator_id, raw)
        if holding != raw:
            previous = quorum.decode_vote(holding)
            if previous is not None and previous.header != vote.header:
                log.error("this validator's vote slot holds a different header it signed earlier",
                          extra={"height": height})
                if quorum.signature_valid(previous.header, previous.signature, self.trust):
                    self._record_evidence(height, self.validator_id, previous, blocks.header_hash(vote.header))
        with self._cond:
            self._unpublished.discard(height)

    def _finalize(self, heights: list[int], votes: dict[int, dict[str, bytes]]) -> None:
        new_certificates: dict[int, bytes] = {}
        try:
            for height in heights:
                vote = self._own_vote(height)
                certificate = self._tally(height, vote.header, votes.get(height, {}), vote.signature)
                if certificate is not None and height not in self._certified:
                    new_certificates[height] = transactions.encode(certificate)
        finally:
            # Every certificate of this poll in one store transaction (one fsync), then final.
            self.store.put_certificates(new_certificates)
            for height in sorted(new_certificates):
                self._certified.add(height)
                self._set_final(height)
        for height in heights:
            if height in self._certified and len(votes.get(height, {})) >= len(self.validators.members):
                with self._cond:
                    self._settled.add(height)

    def _forget_old_votes(self) -> None:
        """Drop cached votes and certified marks of heights no longer watched."""
        with self._cond:
            floor = self._final_height - _WATCH_WINDOW
            for height in [h for h in self._own_votes if h <= floor]:
                del self._own_votes[height]
            self._certified = {h for h in self._certified if h > floor}
            self._settled = {h for h in self._settled if h > floor}
