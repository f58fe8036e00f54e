"""The audit service: hash-chained audit events sealed in Merkle batches and anchored on the ledger.

Modules (docs/audit.md "Where the code lives"):

- ``events``: ``AuditReporter``, how every service reports an event;
- ``hashchain``: the chain, batch roots and event proofs (the format the SDK checks);
- ``alerts``: the notification and review item a break-glass event creates;
- ``store`` (the :class:`AuditStore` seam), ``sqlite_store``, ``etcd_store``;
- ``trail``, ``accounting``, ``reviews``, ``streaming``, ``verification``: the domain behind the RPCs;
- ``anchoring``, ``checkpoints``: sealing and anchoring batches, ledger checkpoints in the trail;
- ``fhir_audit``: the FHIR AuditEvent export; ``peers``: svc-audit's signer and peer stubs;
- ``server``: the gRPC AuditService (access table, proto <-> domain, wiring).

Other packages may import only :data:`CLIENT_MODULES` (and ``v1``); the rest is internal.
"""

#: Modules other services and clients may import: building audit events; the hash chain and event proofs
#: (the SDK checks them); opaque page tokens bound to their query (the records search pages with them).
CLIENT_MODULES = ("events", "hashchain", "paging")
