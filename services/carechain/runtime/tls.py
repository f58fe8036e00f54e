"""TLS for gRPC servers: credentials from settings.

Clients: :mod:`carechain.client.tls`; the development CA: :mod:`carechain.dev.certificates`.

With ``CARECHAIN_TLS_CERT_FILE``/``CARECHAIN_TLS_KEY_FILE`` a service serves TLS;
with ``CARECHAIN_TLS_CA_FILE`` it verifies the services it calls (and presents its
own certificate, for mutual TLS); ``CARECHAIN_TLS_REQUIRE_CLIENT_CERT`` makes the
server demand a client certificate signed by that CA.
"""

from __future__ import annotations

from typing import Any

import grpc


def server_credentials(settings: Any) -> grpc.ServerCredentials | None:
    """Server credentials of a service (None when tls_cert_file is unset: plaintext)."""
    if settings.tls_cert_file is None:
        return None
    if settings.tls_key_file is None:
        raise ValueError("CARECHAIN_TLS_KEY_FILE is required with CARECHAIN_TLS_CERT_FILE")
    if settings.tls_require_client_cert and settings.tls_ca_file is None:
        raise ValueError("CARECHAIN_TLS_REQUIRE_CLIENT_CERT needs CARECHAIN_TLS_CA_FILE")
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None,
        require_client_auth=settings.tls_require_client_cert,
    )


# --- a local certificate authority (development networks and tests) ----------------





