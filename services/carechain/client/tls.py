"""TLS for clients: the CA that verifies CareChain services, and a client certificate for mutual TLS."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class ClientTLS:
    """What a client needs to call TLS services: the CA, and its own certificate for mutual TLS."""

    ca_file: pathlib.Path
    cert_file: pathlib.Path | None = None
    key_file: pathlib.Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ClientTLS | None:
        """Client TLS of a service (None when tls_ca_file is unset: plaintext)."""
        if settings.tls_ca_file is None:
            return None
        return cls(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )
