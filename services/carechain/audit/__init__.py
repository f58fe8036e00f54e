"""The audit service: hash-chained audit events sealed in Merkle batches and anchored on the ledger.

Other packages may import only :data:`CLIENT_MODULES` (and ``v1``); the rest is internal.
"""

#: Modules other services and clients may import: building audit events; the hash chain and event proofs
#: (the SDK checks them).
CLIENT_MODULES = ("events", "hashchain")
