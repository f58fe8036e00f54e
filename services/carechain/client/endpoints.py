"""Where a CareChain network's services listen: the endpoints file a running network writes for its clients."""

from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass, field

from carechain.client.tls import ClientTLS

ENDPOINTS_FILE = "network.json"



@dataclass(frozen=True)
class Endpoints:
    """host:port of each service."""

    records: str
    identity: str
    storage: str
    ledger: str
    consent: str
    audit: str
    chain_id: str = "carechain-local"
    # Mutual TLS: CA to verify the services, and the client certificate to present (empty: plaintext).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Ledger validators: host:port of each (comma-separated), their ids, the quorum (0 = majority), and
    # the trust directory holding their public keys (for client-side verification).
    ledger_validators: str = ""
    validator_ids: str = ""
    quorum: int = 0
    trust_dir: str = ""
    # Prometheus /metrics host:port of each process ("ledger", "ledger-2", ..., "records"); empty: not exported.
    metrics: dict[str, str] = field(default_factory=dict)
    # Base URL of the FHIR R4 REST gateway (docs/fhir.md); empty: not running.
    fhir_base_url: str = ""

    def address(self, service: str) -> str:
        return str(getattr(self, service))

    def client_tls(self) -> ClientTLS | None:
        """TLS settings for a client of this network, or None for plaintext."""
        if not self.tls_ca_file:
            return None
        return ClientTLS(
            pathlib.Path(self.tls_ca_file),
            pathlib.Path(self.tls_cert_file) if self.tls_cert_file else None,
            pathlib.Path(self.tls_key_file) if self.tls_key_file else None,
        )

    def save(self, path: pathlib.Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: pathlib.Path) -> Endpoints:
        """Read the endpoints a running network wrote; FileNotFoundError if none is running there."""
        return cls(**json.loads(path.read_text()))
