"""The ledger: signed transactions, validated and ordered into signed, hash-chained blocks.

Modules:

- ``transactions``: building, signing and decoding transactions (deterministic encoding);
- ``ordering``: the :class:`Orderer` seam (in-process now, etcd later);
- ``validator`` / ``state``: the deterministic contract rules and the state they derive;
- ``blocks``: header hashing, results hash and signing rules;
- ``store``: the SQLite chain store (blocks, log, state, one transaction per block);
- ``chain``: one validator node (admission, block cutter, queries, proofs);
- ``verify``: full re-verification of a stored chain (also offline);
- ``server``: the gRPC LedgerService; ``client``: ``submit()`` for other services.
"""
