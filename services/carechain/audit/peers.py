"""The audit service's peers, reached lazily (Vault, identity, the ledger or consent may start later).

:class:`LedgerAccess` holds svc-audit's signer and its authenticated stubs: the
ledger (anchoring, checkpoints, principal status), consent (a patient's
delegations: guardians read the accounting) and identity (display names in the
accounting). It fills :class:`carechain.audit.accounting.PrincipalDirectory`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError
from carechain.identity.v1 import identity_pb2
from carechain.runtime.config import AuditSettings

log = logging.getLogger("carechain.audit.peers")


class LedgerAccess:
    """svc-audit's signer and peer stubs (ledger, consent, identity), created on first use."""

    def __init__(self, settings: AuditSettings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._signer: Signer | None = None
        self._peers: Any = None

    def signer(self) -> Signer:
        """svc-audit's signer (PEM file or Vault Transit key)."""
        from carechain.runtime.vault import service_signer

        with self._lock:
            if self._signer is None:
                self._signer = service_signer(self._settings, "audit")
            return self._signer

    def ledger(self) -> Any:
        """A LedgerService PeerStub authenticated as svc-audit."""
        return self._service_peers().ledger

    def _service_peers(self) -> Any:
        from carechain.runtime.peers import service_peers

        with self._lock:
            if self._peers is None:
                self._peers = service_peers(self._settings, self.signer())
            return self._peers

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        """The patient's delegations, from the consent service (which derives them from the ledger)."""
        response = self._service_peers().consent.ListDelegates(
            consent_pb2.ListDelegatesRequest(patient_id=patient_id))
        return list(response.delegations)

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        """A principal from the identity service; None when it is unknown or identity cannot answer."""
        try:
            return self._service_peers().identity.GetPrincipal(
                identity_pb2.GetPrincipalRequest(principal_id=principal_id))
        except (grpc.RpcError, CareChainError) as exc:
            log.warning("no display name for an accounting entry", extra={"error": type(exc).__name__})
            return None

    def close(self) -> None:
        """Close the peer channels."""
        with self._lock:
            if self._peers is not None:
                self._peers.close()
