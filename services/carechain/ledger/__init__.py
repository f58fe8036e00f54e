"""The ledger: signed transactions, validated and ordered into signed, hash-chained blocks.

Modules:

- ``transactions``: building, signing and decoding transactions (deterministic encoding);
- ``submission``: ``submit()``, how other services sign, submit and read the verdict;
- ``contract`` / ``state``: the deterministic contract rules and the state they derive;
- ``sealing``: sealed record metadata (no clinical field in clear on the ledger);
- ``linking``: an organisation's attestation of a patient identity link (docs/network-identity.md);
- ``blocks`` / ``quorum``: header hashing, results hash, signing rules and quorum certificates;
- ``reader``: a ledger reader that re-verifies every block it is served (consent uses it);
- ``chain``: the ``Ledger`` facade of one validator node, wiring the four pieces below;
- ``admission``: the checks before ordering and the submitters waiting for their block;
- ``cutter``: the block-cutting thread (order -> validated, signed block -> one store commit);
- ``finality``: header votes, quorum certificates, catch-up checks, the final height;
- ``queries``: head, blocks, the log and RFC 9162 proofs;
- ``ordering``: the :class:`Orderer` seam; ``memory_orderer`` (in process; a shared in-memory order for
  tests) and ``etcd_orderer`` (etcd's Raft log) implement it;
- ``sqlite_store``: the SQLite chain store (blocks, log, state, one transaction per block);
- ``copy_check``: full re-verification of a stored copy of the chain (also offline);
- ``server``: the gRPC LedgerService.

docs/ledger.md describes the design. Other packages may import only :data:`CLIENT_MODULES` (and ``v1``).
"""

#: Modules other services and clients may import: the transaction and block formats, quorum certificates,
#: sealing, submission, link attestations and the verifying reader (with the contract and state it replays).
CLIENT_MODULES = ("transactions", "submission", "blocks", "quorum", "sealing", "reader", "contract", "state",
                  "linking")
