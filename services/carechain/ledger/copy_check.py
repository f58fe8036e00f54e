"""Full chain verification, trusting nothing derived that is stored.

:func:`verify_chain` walks the stored blocks from genesis and, for each one,
re-checks:

1. the block and its header decode, the stored header column and header hash
   match the block's header bytes, heights are consecutive from 0 and the
   chain id never changes;
2. ``previous_header_hash`` is the SHA-256 of the previous header (32 zero
   bytes at genesis);
3. every validator signature over ``"carechain-block/v1\\n" + header`` is valid
   and made by a member of the validator set (at least one); every block has a
   stored quorum certificate holding valid signatures of a quorum of distinct
   members over exactly this header (:func:`carechain.ledger.quorum.check_certificate`);
   a block without one fails (only blocks above ``uncertified_after``, committed
   by a live validator after the caller waited for finality, may still lack it);
4. every transaction signature, against the keys known at that point (trust
   bundle plus principals registered by earlier valid transactions, replayed);
5. ``transactions_root`` = RFC 9162 root over the block's encoded transactions;
6. the results: the deterministic validator is re-run on a fresh in-memory
   state and each valid flag and reason must equal the stored one; then
   ``results_hash``;
7. ``log_size`` and ``log_root``, recomputed from the transactions themselves
   (not from the stored leaf table);
8. an RFC 9162 inclusion proof of every transaction against the block's
   ``log_root``;
9. the stored log entries (leaf table) match the blocks, and hold nothing more;
10. after the last block: the stored contract state (every state table, e.g.
    principals, records, consents) equals the state replayed from the blocks,
    byte for byte; an edited state row is named by table.

**Incremental verification** from a trusted checkpoint (``trusted``: a
``Checkpoint`` whose quorum certificate of the configured set is checked here,
or a :class:`TrustedCheckpoint` the caller verified earlier, e.g. the CLI's
remembered one): the stored block at the checkpoint's height must carry exactly
its tree size and root, the stored leaf table up to that size must hash to that
root, and checks 1-3, 5, 7-9 run on every later block (results hashed as
stored); at the end an RFC 9162 consistency proof from the checkpoint's tree to
the head's is checked. Transaction signatures and the contract re-run (4, 6)
and the state comparison (10) need the state replayed from genesis, so they are
left to a full verification; so is the stored leaf table before the checkpoint:
the checkpoint's tree is read as the O(log n) stored roots of its perfect subtrees,
which must fold to the trusted root, so the work is O(blocks after the checkpoint)
whatever the history (the stored log tree serves the later inclusion proofs, each
checked against a root computed from those subtrees and the blocks' transactions).

It stops at the first problem and names the block and what failed. The
validator set (members and quorum) comes from configuration, never from the
store being verified: the caller's, else ``CARECHAIN_VALIDATORS`` /
``CARECHAIN_QUORUM`` (:func:`carechain.ledger.quorum.configured_validator_set`),
else the embedded network's single ``svc-ledger``. (A store's own record of the
set is whatever whoever rewrote the store wanted it to be.)

:class:`ChainVerification` also returns the final (highest certified) header
and :attr:`~ChainVerification.log_root_at` (RFC 9162 root of the verified log
at any tree size), so a caller can compare the chain with a checkpoint it
remembers (:meth:`carechain.client.proofs.CheckpointMemory.observe_log`).

:func:`cross_check` compares a local copy with other validators' copies
(``carechain ledger verify --peer``): header by header, naming the first height
whose header differs, and re-checking each peer block's body against its header.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from carechain.core import merkle
from carechain.core.crypto import verify_signature
from carechain.core.errors import CareChainError, IntegrityError
from carechain.core.layout import TrustBundle, service_principal_id
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.contract import Validator
from carechain.ledger.queries import StoredLogTree, stored_frontier
from carechain.ledger.quorum import ValidatorSet, configured_validator_set
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.state import EmptyState, PendingState
from carechain.ledger.v1 import ledger_pb2

#: Principals whose signatures make a block valid (one validator in the embedded network).
DEFAULT_VALIDATORS = (service_principal_id("ledger"),)
#: The problem of a block stored without its quorum certificate.
NO_CERTIFICATE = "no quorum certificate"


@dataclass(frozen=True)
class ChainVerification:
    """Outcome of a verification."""

    ok: bool
    blocks_checked: int
    first_bad_height: int | None
    problem: str
    final_height: int | None = None
    evidence_count: int = 0
    #: The verified chain's final checkpoint (header of the highest certified block) and a function giving the
    #: verified log's root at any tree size up to it (None when verification failed).
    final_header: ledger_pb2.BlockHeader | None = None
    log_root_at: Callable[[int], bytes] | None = field(default=None, repr=False, compare=False)
    #: Height verification started at: 0 (genesis) or the trusted checkpoint's.
    from_height: int = 0

    def to_response(self) -> ledger_pb2.VerifyChainResponse:
        """As the VerifyChain reply."""
        return ledger_pb2.VerifyChainResponse(
            ok=self.ok,
            blocks_checked=self.blocks_checked,
            first_bad_height=self.first_bad_height or 0,
            problem=self.problem,
            final_height=self.final_height or 0,
            evidence_count=self.evidence_count,
            from_height=self.from_height,
        )


@dataclass(frozen=True)
class TrustedCheckpoint:
    """A checkpoint the caller trusts: the block height, the log's tree size and RFC 9162 root after it."""

    height: int
    tree_size: int
    root: bytes

    @classmethod
    def from_checkpoint(cls, checkpoint: ledger_pb2.Checkpoint, trust: TrustBundle,
                        validators: ValidatorSet) -> TrustedCheckpoint:
        """A GetCheckpoint answer, once its quorum certificate over its header checks out; IntegrityError otherwise."""
        try:
            header = ledger_pb2.BlockHeader.FromString(checkpoint.header)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            raise IntegrityError("trusted checkpoint: the header does not decode") from exc
        quorum.check_certificate(checkpoint.header, checkpoint.certificate, trust, validators)
        if (header.height, header.log_size, header.log_root) != (checkpoint.height, checkpoint.tree_size,
                                                                 checkpoint.root):
            raise IntegrityError("trusted checkpoint: height, tree size or root differ from its signed header")
        return cls(header.height, header.log_size, bytes(header.log_root))


def _short(digest: bytes) -> str:
    return digest.hex()[:16] + ".."


class _Bad(Exception):
    """A check failed at the block being verified."""


def _mismatch(what: str, expected: bytes, computed: bytes) -> _Bad:
    return _Bad(f"{what} mismatch (expected {_short(expected)}, computed {_short(computed)})")


def verify_chain(
    store_or_path: LedgerStore | pathlib.Path,
    trust: TrustBundle,
    validators: ValidatorSet | Collection[str] | None = None,
    uncertified_after: int | None = None,
    trusted: TrustedCheckpoint | ledger_pb2.Checkpoint | None = None,
) -> ChainVerification:
    """Re-check the chain from genesis, or from a trusted checkpoint (see the module docstring); never writes.

    validators: the configured set (default :func:`configured_validator_set`);
    never read from the store. uncertified_after: blocks above this height may
    lack a quorum certificate (a live validator's newest blocks); None = every
    block needs one. trusted: start there instead of genesis; a Checkpoint whose
    certificate does not check out fails the verification (nothing else is read).

    A live store is verified through its own read-only connection in one read
    transaction, so blocks committed meanwhile neither block the validator nor
    confuse the check.
    """
    validator_set = _validator_set(validators)
    if isinstance(trusted, ledger_pb2.Checkpoint):
        try:
            trusted = TrustedCheckpoint.from_checkpoint(trusted, trust, validator_set)
        except IntegrityError as exc:
            return ChainVerification(False, 0, trusted.height, f"trusted checkpoint refused: {exc.message}")
    path = store_or_path.path if isinstance(store_or_path, LedgerStore) else pathlib.Path(store_or_path)
    store = LedgerStore.open_read_only(path)
    try:
        with store.snapshot():
            verifier = _Verifier(store, trust, validator_set, uncertified_after)
            return verifier.run() if trusted is None else verifier.run_from(trusted)
    finally:
        store.close()


def _validator_set(validators: ValidatorSet | Collection[str] | None) -> ValidatorSet:
    if isinstance(validators, ValidatorSet):
        return validators
    if validators is not None:
        return ValidatorSet.of(validators, 1)
    return configured_validator_set()


def verify_data_dir(
    ledger_data_dir: pathlib.Path, trust_dir: pathlib.Path, validators: ValidatorSet | None = None,
    trusted: TrustedCheckpoint | None = None,
) -> ChainVerification:
    """Offline verification of a ledger data directory (opened read-only) with a trust directory."""
    return verify_chain(pathlib.Path(ledger_data_dir), TrustBundle.load(pathlib.Path(trust_dir)), validators,
                        trusted=trusted)


class _Verifier:
    def __init__(
        self, store: LedgerStore, trust: TrustBundle, validators: ValidatorSet, uncertified_after: int | None
    ) -> None:
        self.store = store
        self.trust = trust
        self.validators = validators
        self.uncertified_after = uncertified_after
        self.final_header: ledger_pb2.BlockHeader | None = None
        self.certificates: dict[int, bytes] | None = None  # all of them (full run) or read per block
        self.replay = True  # False from a checkpoint: no state to re-run the contract on
        self.from_height = 0
        self.final_height: int | None = None
        self.state = PendingState(EmptyState())
        self.frontier = merkle.Frontier()
        self.tree = merkle.MerkleTree()
        self.validator: Validator | None = None
        self.previous_hash = blocks.GENESIS_PREVIOUS_HASH
        self.checked = 0

    def run(self) -> ChainVerification:
        self.certificates = self.store.certificates()
        height = 0
        for stored in self.store.blocks():
            if stored.height != height:
                return self._fail(height, f"missing (the next stored block is {stored.height})")
            try:
                self._check_block(stored.height, stored.header, stored.header_hash, stored.block)
            except _Bad as exc:
                return self._fail(height, str(exc))
            self.checked += 1
            height += 1
        if self.checked == 0:
            return self._fail(0, "missing: no genesis block")
        extra = self.store.log_entries(self.frontier.size, 1)
        if extra:
            return self._fail(
                extra[0].height, f"log entries hold log index {extra[0].log_index} beyond the chain's log size"
            )
        orphans = sorted(h for h in self.certificates if h >= height)
        if orphans:
            return self._fail(orphans[0], "a quorum certificate is stored for a block that is not")
        differing = self._state_difference()
        if differing:
            return self._fail(height - 1, f"stored contract state differs from the state replayed from the "
                                          f"blocks (table {differing})")
        damaged = self._log_node_difference()
        if damaged is not None:
            (level, position), at = damaged
            return self._fail(at, f"stored log tree node (level {level}, position {position}) differs from the "
                                  f"verified log")
        return ChainVerification(True, self.checked, None, "", self.final_height, len(self.store.evidence()),
                                 self.final_header, self.tree.root)

    def _log_node_difference(self) -> tuple[tuple[int, int], int] | None:
        """The first stored Merkle subtree root (``log_nodes``) that differs from the verified leaves' and the
        height of the block completing it; None when all match (or none is stored yet: rebuilt at open)."""
        stored = self.store.log_nodes()
        if not stored:
            return None
        leaves = [self.tree.leaf(index) for index in range(self.tree.size)]
        expected = merkle.completed_subtrees(0, leaves, lambda level, position: b"")
        for key in sorted(set(stored) | set(expected)):
            if stored.get(key) != expected.get(key):
                level, position = key
                last_leaf = min((position + 1 << level) - 1, max(self.tree.size - 1, 0))
                entry = self.store.log_entry(last_leaf)
                return key, entry.height if entry is not None else 0
        return None

    def run_from(self, trusted: TrustedCheckpoint) -> ChainVerification:
        """Verify the blocks after a trusted checkpoint (module docstring, "Incremental verification")."""
        self.replay = False
        self.from_height = height = trusted.height
        stored = self.store.block(height)
        if stored is None:
            return self._fail(height, "missing: the trusted checkpoint's block is not stored")
        header = ledger_pb2.BlockHeader.FromString(stored.header)
        if (header.log_size, header.log_root) != (trusted.tree_size, trusted.root):
            return self._fail(height, "tree size or root differs from the trusted checkpoint")
        if blocks.header_hash(stored.header) != stored.header_hash:
            return self._fail(height, "stored header hash differs from its header")
        if self.store.log_size() < trusted.tree_size:
            return self._fail(height, "log entries hold fewer transactions than the trusted checkpoint")
        # O(log n): the stored roots of the checkpoint tree's perfect subtrees, which must fold to the
        # trusted root; a store from before those nodes were kept hashes its leaves instead.
        frontier = stored_frontier(self.store, trusted.tree_size)
        if frontier is not None:
            # Inclusion proofs of later transactions read the store's nodes; each is checked against a log
            # root computed from this frontier and the blocks' own transactions, so a wrong node fails.
            self.frontier, self.tree = frontier, StoredLogTree(self.store, trusted.tree_size)
        else:  # a store from before log_nodes (read-only here; the ledger's next open adds them)
            leaves = self.store.leaf_hashes()[:trusted.tree_size]
            self.frontier, self.tree = merkle.Frontier.from_leaf_hashes(leaves), merkle.MerkleTree(leaves)
        if self.frontier.root() != trusted.root:
            return self._fail(height, "log entries up to the trusted checkpoint do not hash to its root")
        self.validator = Validator(header.chain_id, self.trust)
        self.previous_hash = stored.header_hash
        head = self.store.head()
        assert head is not None
        for height in range(trusted.height + 1, head.height + 1):
            block = self.store.block(height)
            if block is None:
                return self._fail(height, "missing")
            try:
                self._check_block(height, block.header, block.header_hash, block.block)
            except _Bad as exc:
                return self._fail(height, str(exc))
            self.checked += 1
        extra = self.store.log_entries(self.frontier.size, 1)
        if extra:
            return self._fail(
                extra[0].height, f"log entries hold log index {extra[0].log_index} beyond the chain's log size"
            )
        try:  # the verified log extends the trusted one
            merkle.verify_consistency(trusted.tree_size, self.tree.size,
                                      self.tree.consistency_proof(trusted.tree_size), trusted.root,
                                      self.frontier.root())
        except CareChainError as exc:  # IntegrityError, or DataLoss for a node the store lacks
            return self._fail(head.height, f"not consistent with the trusted checkpoint: {exc.message}")
        return ChainVerification(True, self.checked, None, "", self.final_height, len(self.store.evidence()),
                                 self.final_header, self.tree.root, from_height=self.from_height)

    def _state_difference(self) -> str:
        """Name of the first state table whose stored rows differ from the replay, or ''."""
        replayed = LedgerStore.in_memory()
        try:
            replayed.apply_state(self.state)
            expected = replayed.state_rows()
        finally:
            replayed.close()
        actual = self.store.state_rows()
        for table in sorted(set(expected) | set(actual)):
            if expected.get(table, []) != actual.get(table, []):
                return table
        return ""

    def _fail(self, height: int, problem: str) -> ChainVerification:
        return ChainVerification(False, self.checked, height, f"block {height}: {problem}", self.final_height,
                                 len(self.store.evidence()), from_height=self.from_height)

    def _check_block(self, height: int, header_column: bytes, header_hash_column: bytes, block_bytes: bytes) -> None:
        try:
            block = ledger_pb2.Block.FromString(block_bytes)
            header = ledger_pb2.BlockHeader.FromString(block.header)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            raise _Bad("block does not decode") from exc
        # 1. structure
        if header_column != block.header:
            raise _Bad("stored header differs from the block's header")
        computed_hash = blocks.header_hash(block.header)
        if header_hash_column != computed_hash:
            raise _mismatch("header hash", header_hash_column, computed_hash)
        if header.height != height:
            raise _Bad(f"header says height {header.height}")
        if self.validator is None:
            self.validator = Validator(header.chain_id, self.trust)
        elif header.chain_id != self.validator.chain_id:
            raise _Bad("chain_id differs from the genesis block's")
        # 2. hash link
        if header.previous_header_hash != self.previous_hash:
            raise _mismatch("previous_header_hash", header.previous_header_hash, self.previous_hash)
        # 3. validator signatures
        self._check_signatures(block)
        if len(block.results) != len(block.transactions):
            raise _Bad(f"{len(block.transactions)} transactions but {len(block.results)} results")
        # 4 + 6. transaction signatures and re-run of the contract rules
        first_log_index = self.frontier.size
        recomputed = []
        for index, (tx, stored_result) in enumerate(zip(block.transactions, block.results, strict=True)):
            log_index = first_log_index + index
            if not self.replay:  # from a checkpoint: no replayed state to judge signatures and verdicts on
                recomputed.append(stored_result)
                continue
            self._check_transaction_signature(index, log_index, tx, stored_result)
            result = self.validator.apply(tx, self.state, log_index, block_time_ms=header.timestamp_ms)
            if (result.valid, result.reason) != (stored_result.valid, stored_result.reason):
                raise _Bad(
                    f"transaction {index} (log index {log_index}) result mismatch "
                    f"(stored valid={stored_result.valid} reason={stored_result.reason!r}, "
                    f"recomputed valid={result.valid} reason={result.reason!r})"
                )
            recomputed.append(result)
        # 5. transactions root
        leaf_data = [transactions.encode(tx) for tx in block.transactions]
        leaves = [merkle.leaf_hash(data) for data in leaf_data]
        transactions_root = merkle.root(leaves)
        if header.transactions_root != transactions_root:
            raise _mismatch("transactions_root", header.transactions_root, transactions_root)
        # 6. results hash
        results_hash = blocks.results_hash(recomputed)
        if header.results_hash != results_hash:
            raise _mismatch("results_hash", header.results_hash, results_hash)
        # 7. log size and root
        for leaf in leaves:
            self.frontier.append(leaf)
            self.tree.append(leaf)
        if header.log_size != self.frontier.size:
            raise _Bad(f"log_size mismatch (expected {header.log_size}, computed {self.frontier.size})")
        log_root = self.frontier.root()
        if header.log_root != log_root:
            raise _mismatch("log_root", header.log_root, log_root)
        # 8. inclusion of every transaction in the block's log root
        for index, leaf in enumerate(leaves):
            log_index = first_log_index + index
            try:
                path = self.tree.inclusion_proof(log_index, header.log_size)
                merkle.verify_inclusion(leaf, log_index, header.log_size, path, header.log_root)
            except CareChainError as exc:  # IntegrityError, or DataLoss for a node the store lacks
                raise _Bad(f"transaction {index} (log index {log_index}): {exc.message}") from exc
        # 9. the stored leaf table
        self._check_log_entries(height, first_log_index, leaf_data, leaves, recomputed)
        # 3b. the quorum certificate (after the content checks, which name the more precise problem)
        self._check_certificate(block, header)
        self.previous_hash = computed_hash

    def _check_signatures(self, block: ledger_pb2.Block) -> None:
        if not block.signatures:
            raise _Bad("no validator signature")
        message = blocks.header_signing_message(block.header)
        for signature in block.signatures:
            key = self.trust.key(signature.validator_id) if signature.validator_id in self.validators else None
            if key is None:
                raise _Bad("signed by an unknown validator")
            if not verify_signature(key, signature.signature, message):
                raise _Bad(f"validator signature of {signature.validator_id} is invalid")

    def _check_certificate(self, block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        raw = self.certificates.get(header.height) if self.certificates is not None else \
            self.store.certificate(header.height)
        if raw is None:
            if self.uncertified_after is not None and header.height > self.uncertified_after:
                return  # committed after the caller waited for finality; not final yet
            raise _Bad(NO_CERTIFICATE)
        try:
            certificate = ledger_pb2.QuorumCertificate.FromString(raw)
            quorum.check_certificate(block.header, certificate, self.trust, self.validators)
        except IntegrityError as exc:
            raise _Bad(exc.message) from exc
        except Exception as exc:  # noqa: BLE001 - an undecodable certificate is the finding
            raise _Bad("quorum certificate does not decode") from exc
        self.final_height = header.height
        self.final_header = header

    def _check_transaction_signature(
        self, index: int, log_index: int, tx: ledger_pb2.Transaction, stored: ledger_pb2.TransactionResult
    ) -> None:
        assert self.validator is not None
        key = self.validator.signer_key(tx.signer_id, self.state)
        if key is None or transactions.signature_valid(tx, key):
            return  # an unknown signer is judged by the re-run below
        # Admission never orders a forged transaction; one stored as such must say so.
        if stored.valid or stored.reason != "invalid signature":
            raise _Bad(f"transaction {index} (log index {log_index}) signature is invalid")

    def _check_log_entries(
        self,
        height: int,
        first_log_index: int,
        leaf_data: list[bytes],
        leaves: list[bytes],
        results: list[ledger_pb2.TransactionResult],
    ) -> None:
        entries = self.store.log_entries(first_log_index, len(leaf_data)) if leaf_data else []
        if len(entries) != len(leaf_data):
            raise _Bad(f"log entries table holds {len(entries)} of the block's {len(leaf_data)} transactions")
        for index, entry in enumerate(entries):
            expected = (first_log_index + index, height, index, leaf_data[index], leaves[index],
                        results[index].valid, results[index].reason)
            actual = (entry.log_index, entry.height, entry.tx_index, entry.tx, entry.leaf_hash, entry.valid,
                      entry.reason)
            if actual != expected:
                names = ("log_index", "height", "tx_index", "tx", "leaf_hash", "valid", "reason")
                wrong = ", ".join(n for n, a, e in zip(names, actual, expected, strict=True) if a != e)
                raise _Bad(f"stored log entry {first_log_index + index} differs from the block ({wrong})")


@dataclass(frozen=True)
class PeerComparison:
    """Outcome of comparing a local chain with one peer validator's."""

    peer: str
    ok: bool
    compared: int
    first_difference: int | None
    problem: str


def cross_check(
    store_or_path: LedgerStore | pathlib.Path,
    peer: str,
    peer_head: Callable[[], int],
    peer_block: Callable[[int], ledger_pb2.Block],
) -> PeerComparison:
    """Compare local headers with a peer's, height by height, and check each peer block's body against its header.

    Names the first height whose header differs (or whose peer body does not
    match the peer's header). Heights only one side has are not compared: one
    validator may simply be behind.
    """
    path = store_or_path.path if isinstance(store_or_path, LedgerStore) else pathlib.Path(store_or_path)
    store = LedgerStore.open_read_only(path)
    try:
        head = store.head()
        last = min(head.height if head is not None else -1, peer_head())
        for height in range(last + 1):
            local = store.block(height)
            block = peer_block(height)
            if local is None or local.header != block.header:
                return PeerComparison(peer, False, height, height, f"block {height}: header differs from {peer}'s")
            header = ledger_pb2.BlockHeader.FromString(block.header)
            leaves = [merkle.leaf_hash(transactions.encode(tx)) for tx in block.transactions]
            if merkle.root(leaves) != header.transactions_root or blocks.results_hash(block.results) != \
                    header.results_hash:
                return PeerComparison(peer, False, height, height,
                                      f"block {height}: {peer}'s transactions or results do not match its header")
        return PeerComparison(peer, True, last + 1, None, "")
    finally:
        store.close()
