"""Ledger history benchmark: what following, restart and verification cost at 0, 20k and 200k transactions.

:func:`build_history` writes a chain of N signed transactions straight into a
ledger store (block by block, the validator's own rules and signatures, no
ordering or gRPC), quickly enough for 200k: a hospital, patients, and
``RegisterRecord`` transactions with real sealed metadata, in blocks of
``--block-size``. :func:`print_figures` then prints, in CPU milliseconds
(``time.process_time``: compare these, not wall time, on a shared machine):

- ``ledger open``: restarting the ledger over that store (``Ledger.open`` + close), and the
  log leaves it read to rebuild its stored Merkle subtrees (0 when they match the head);
- ``status replay`` / ``status resume``: a principal-status follower (identity, records,
  audit, consent and the ledger each run one) reading the log from index 0, and
  restarting from its signed snapshot (:class:`carechain.runtime.principal_status.StatusSnapshots`),
  with the transactions the restart folded (0: nothing new since the snapshot);
- ``consent replay``: the consent service's start, verifying every block from
  genesis (``VerifiedLedgerReader``) and folding it into ``ConsentState``;
- ``consent resume``: the same from a consent snapshot (:mod:`carechain.consent.snapshot`),
  i.e. checking the snapshot against the chain and folding nothing;
- ``verify full`` / ``verify from checkpoint``: ``VerifyChain`` from genesis and from
  the highest certified checkpoint;
- per followed transaction (the last ``--follow`` transactions): the ledger serving
  them by ``ListTransactions`` pages and by ``WatchBlocks`` messages, consent
  verifying and folding them, and a principal-status follower folding them
  (polled pages vs pushed blocks).

Everything runs in this process, the ledger's handlers called directly (no
network), so the figures are each component's own CPU::

    .venv/bin/python bench/ledger_history.py --sizes 0,20000,200000
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from carechain.common.v1 import common_pb2
from carechain.consent.snapshot import ConsentSnapshots
from carechain.consent.state import ConsentState
from carechain.core import merkle
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import OPERATOR_ID, TrustBundle, service_principal_id
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.contract import Validator
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.reader import VerifiedLedgerReader
from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
from carechain.ledger.server import LedgerServicer
from carechain.ledger.sqlite_store import LedgerStore, LogEntry, StoredBlock
from carechain.ledger.state import PendingState
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.keyring import LocalKeyring
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots

CHAIN = "carechain-bench"


@dataclass
class Keys:
    """The services' keys, the trust bundle and the metadata sealer of one bench network."""

    directory: pathlib.Path

    def __post_init__(self) -> None:
        self.identity = Ed25519Signer.generate(service_principal_id("identity"))
        self.records = Ed25519Signer.generate(service_principal_id("records"))
        self.ledger = Ed25519Signer.generate(service_principal_id("ledger"))
        self.consent = Ed25519Signer.generate(service_principal_id("consent"))
        self.audit = Ed25519Signer.generate(service_principal_id("audit"))
        self.operator = Ed25519Signer.generate(OPERATOR_ID)
        signers = [self.identity, self.records, self.ledger, self.consent, self.audit, self.operator]
        self.trust = TrustBundle({s.key_id: s.public_key_bytes() for s in signers})
        keyring = LocalKeyring(self.directory / "keyring")
        keyring.create_key(LEDGER_METADATA_KEY)
        self.sealer = LedgerSealer(keyring, CHAIN)


def _transactions(keys: Keys, count: int, patients: int = 100) -> Iterator[ledger_pb2.Transaction]:
    """count transactions: a hospital, patients, then records of those patients (sealed metadata)."""
    def signed(signer: Ed25519Signer, **payload: object) -> ledger_pb2.Transaction:
        return transactions.sign_transaction(transactions.new_body(CHAIN, signer.key_id, **payload), signer)

    made = 0
    kinds = common_pb2.PrincipalKind
    org = Ed25519Signer.generate("org-bench")
    setup = [signed(keys.identity, register_principal=ledger_pb2.RegisterPrincipal(
        principal_id="org-bench", kind=kinds.PRINCIPAL_KIND_ORGANIZATION, public_key=org.public_key_bytes()))]
    for p in range(patients):
        setup.append(signed(keys.identity, register_principal=ledger_pb2.RegisterPrincipal(
            principal_id=f"psn-{p}", kind=kinds.PRINCIPAL_KIND_PATIENT,
            public_key=Ed25519Signer.generate(f"psn-{p}").public_key_bytes(), organization_id="org-bench")))
    for tx in setup[:count]:
        made += 1
        yield tx
    while made < count:
        record = ledger_pb2.RegisterRecord(
            record_id=f"rec-{made}", patient_id=f"psn-{made % patients}", organization_id="org-bench",
            content_sha256=hashlib.sha256(str(made).encode()).hexdigest(), content_size=2048,
            key_name="patient-key", key_version=1, version=1)
        metadata = ledger_pb2.RecordMetadata(resource_type="Observation",
                                             categories=[common_pb2.SENSITIVITY_CATEGORY_NORMAL],
                                             author_id="org-bench")
        record.sealed_metadata.CopyFrom(keys.sealer.seal_record(record, metadata))
        made += 1
        yield signed(keys.records, register_record=record)


def build_history(data_dir: pathlib.Path, keys: Keys, count: int, block_size: int = 500) -> None:
    """A ledger store under data_dir holding genesis and count transactions, as one validator commits them."""
    Ledger.open(data_dir, CHAIN, keys.ledger, keys.trust).close()  # genesis, meta, schema
    store = LedgerStore.open(data_dir)
    try:
        stored_head = store.head()
        assert stored_head is not None
        head = ledger_pb2.BlockHeader.FromString(stored_head.header)
        head_hash = stored_head.header_hash
        frontier = merkle.Frontier.from_leaf_hashes(store.leaf_hashes())
        validator = Validator(CHAIN, keys.trust)
        source = _transactions(keys, count)
        while head.log_size < count:
            txs = [tx for _, tx in zip(range(min(block_size, count - head.log_size)), source, strict=False)]
            pending = PendingState(store)
            height, leaves, results, entries = head.height + 1, [], [], []
            timestamp_ms = max(int(time.time() * 1000), head.timestamp_ms)
            for index, tx in enumerate(txs):
                result = validator.apply(tx, pending, head.log_size + index, block_time_ms=timestamp_ms)
                data = transactions.encode(tx)
                leaf = merkle.leaf_hash(data)
                leaves.append(leaf)
                frontier.append(leaf)
                results.append(result)
                entries.append(LogEntry(head.log_size + index, height, index, data, leaf, result.valid, result.reason))
            header = ledger_pb2.BlockHeader(
                chain_id=CHAIN, height=height, previous_header_hash=head_hash, transactions_root=merkle.root(leaves),
                results_hash=blocks.results_hash(results), log_size=frontier.size, log_root=frontier.root(),
                timestamp_ms=timestamp_ms)
            header_bytes = transactions.encode(header)
            signature = quorum.sign_header(keys.ledger, header_bytes)
            block = ledger_pb2.Block(header=header_bytes, transactions=txs, results=results, signatures=[signature])
            certificate = quorum.build_certificate(height, header_bytes, [signature])
            head_hash = blocks.header_hash(header_bytes)
            store.commit_block(StoredBlock(height, header_bytes, head_hash, transactions.encode(block)), entries,
                               pending, certificate=transactions.encode(certificate))
            head = header
    finally:
        store.close()


class DirectLedger:
    """LedgerService methods called in this process (no network), with the CPU the ledger spends serving them."""

    def __init__(self, ledger: Ledger, keys: Keys) -> None:
        self._servicer = LedgerServicer(ledger, None, 10.0)  # type: ignore[arg-type]
        self.serving_cpu = 0.0

    def _timed(self, call: Callable[[], object]) -> object:
        started = time.process_time()
        try:
            return call()
        finally:
            self.serving_cpu += time.process_time() - started

    def GetChainHead(self, request: object, timeout: float = 0) -> ledger_pb2.ChainHead:  # noqa: N802
        return self._timed(lambda: self._servicer.GetChainHead(request, None))  # type: ignore[return-value, arg-type]

    def GetBlock(self, request: object, timeout: float = 0) -> ledger_pb2.Block:  # noqa: N802
        return self._timed(lambda: self._servicer.GetBlock(request, None))  # type: ignore[return-value, arg-type]

    def ListTransactions(self, request: object, timeout: float = 0) -> ledger_pb2.ListTransactionsResponse:  # noqa: N802
        return self._timed(lambda: self._servicer.ListTransactions(request, None))  # type: ignore[return-value, arg-type]


def _cpu_ms(call: Callable[[], object]) -> float:
    started = time.process_time()
    call()
    return (time.process_time() - started) * 1000


#: Columns of :func:`print_restart_figures`: CPU ms, except the counts.
RESTART_COLUMNS = (("ledger open", 12), ("leaves read", 12), ("status replay", 14), ("status resume", 14),
                   ("status folded", 14), ("consent replay", 15), ("consent resume", 15), ("verify full", 12),
                   ("verify ckpt", 12))


def print_restart_figures(sizes: list[int], block_size: int = 500, indent: str = "") -> dict[int, dict[str, float]]:
    """Build a history of each size in a temporary directory, print one row of restart costs each; the rows."""
    print(indent + f"{'transactions':>12} " + " ".join(f"{name:>{width}}" for name, width in RESTART_COLUMNS)
          + "   (CPU ms; leaves read and status folded are counts)")
    rows: dict[int, dict[str, float]] = {}
    for size in sizes:
        rows[size] = figures = _restart_costs(size, block_size)
        print(indent + f"{size:>12} " + " ".join(f"{figures[name]:>{width}.0f}" for name, width in RESTART_COLUMNS))
    return rows


def print_figures(sizes: list[int], follow: int = 2000, block_size: int = 500) -> None:
    """Build a history of each size in a temporary directory and print the CPU-ms figures (module docstring)."""
    print_restart_figures(sizes, block_size)
    _print_follow_costs(follow, block_size)


def _restart_costs(size: int, block_size: int) -> dict[str, float]:
    """CPU ms of restarting the ledger and consent, and of verifying, over a history of size transactions."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="carechain-history-") as tmp:
        root = pathlib.Path(tmp)
        keys = Keys(root)
        build_history(root / "ledger", keys, size, block_size)
        figures["ledger open"] = _cpu_ms(lambda: Ledger.open(root / "ledger", CHAIN, keys.ledger, keys.trust).close())
        ledger = Ledger.open(root / "ledger", CHAIN, keys.ledger, keys.trust)
        try:
            figures["leaves read"] = ledger.replayed_leaves
            direct = DirectLedger(ledger, keys)
            snapshots = StatusSnapshots(root / "status-snapshot.json", keys.records)
            replayed = PrincipalStatus(direct.ListTransactions, snapshots=snapshots, get_block=ledger.block)
            figures["status replay"] = _cpu_ms(replayed.sync)
            replayed.save_snapshot()
            resumed = PrincipalStatus(direct.ListTransactions, snapshots=snapshots, get_block=ledger.block)
            figures["status resume"] = _cpu_ms(lambda: (resumed.resume(), resumed.sync()))
            figures["status folded"] = resumed.cursor - (snapshots.read() or {"log_size": 0})["log_size"]
            state = ConsentState(keys.sealer)
            reader = VerifiedLedgerReader(direct, CHAIN, keys.trust, quorum.ValidatorSet.single())
            figures["consent replay"] = _cpu_ms(lambda: state.sync(reader.list_transactions))
            consent_snapshots = ConsentSnapshots(root / "consent-snapshot.json", keys.consent)
            consent_snapshots.save(state, reader)
            fresh_state = ConsentState(keys.sealer)
            fresh_reader = VerifiedLedgerReader(direct, CHAIN, keys.trust, quorum.ValidatorSet.single())
            figures["consent resume"] = _cpu_ms(lambda: (consent_snapshots.load(fresh_state, fresh_reader),
                                                         fresh_state.sync(fresh_reader.list_transactions)))
            figures["verify full"] = _cpu_ms(lambda: verify_chain(ledger.store, keys.trust))
            checkpoint = ledger.checkpoint()
            figures["verify ckpt"] = _cpu_ms(lambda: verify_chain(ledger.store, keys.trust, trusted=checkpoint))
        finally:
            ledger.close()
    return figures


def _print_follow_costs(follow: int, block_size: int) -> None:
    """CPU per followed transaction: the ledger serving, consent and a principal-status follower."""
    with tempfile.TemporaryDirectory(prefix="carechain-follow-") as tmp:
        root = pathlib.Path(tmp)
        keys = Keys(root)
        build_history(root / "ledger", keys, follow, block_size)
        ledger = Ledger.open(root / "ledger", CHAIN, keys.ledger, keys.trust)
        try:
            servicer = LedgerServicer(ledger, None, 10.0)  # type: ignore[arg-type]
            direct = DirectLedger(ledger, keys)
            state = ConsentState(keys.sealer)
            reader = VerifiedLedgerReader(direct, CHAIN, keys.trust, quorum.ValidatorSet.single())
            consent = _cpu_ms(lambda: state.sync(reader.list_transactions))
            poller = PrincipalStatus(direct.ListTransactions)
            direct.serving_cpu = 0.0
            polled = _cpu_ms(poller.sync) - direct.serving_cpu * 1000
            serve_pages = direct.serving_cpu * 1000
            pushed_messages: list[ledger_pb2.WatchBlocksResponse] = []

            class Context:
                calls = 0

                def is_active(self) -> bool:
                    return len(pushed_messages) * 64 <= ledger.head()[0].height + 64

            serve_push = _cpu_ms(lambda: pushed_messages.extend(
                servicer.WatchBlocks.__wrapped__(servicer, ledger_pb2.WatchBlocksRequest(from_height=0),  # type: ignore[attr-defined]
                                                 Context())))
            pusher = PrincipalStatus(direct.ListTransactions)
            pushed = _cpu_ms(lambda: [pusher.fold_blocks(m.blocks) for m in pushed_messages])
        finally:
            ledger.close()
    per = 1000.0 / follow  # CPU ms -> CPU us per transaction
    print(f"\nper followed transaction ({follow} transactions, blocks of {block_size}), CPU us:")
    print(f"  consent verify + fold        {consent * per:8.1f}")
    print(f"  principal status, polled     {polled * per:8.1f}   "
          f"ledger serving ListTransactions {serve_pages * per:8.1f}")
    print(f"  principal status, pushed     {pushed * per:8.1f}   "
          f"ledger serving WatchBlocks      {serve_push * per:8.1f}")


def main() -> None:
    """Command line: ``--sizes 0,20000,200000 --follow 2000 --block-size 500``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,20000,200000", help="history sizes, comma-separated")
    parser.add_argument("--follow", type=int, default=2000, help="transactions to follow for the per-tx figures")
    parser.add_argument("--block-size", type=int, default=500)
    args = parser.parse_args()
    print_figures([int(s) for s in args.sizes.split(",") if s.strip()], args.follow, args.block_size)


if __name__ == "__main__":
    main()
