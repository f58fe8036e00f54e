"""Runs the FHIR REST gateway: ``carechain serve fhir`` (uvicorn), configured by CARECHAIN_* variables.

Settings: :class:`carechain.runtime.config.FhirSettings` (``CARECHAIN_LISTEN_ADDRESS`` its HTTP host:port,
``CARECHAIN_RECORDS_ADDRESS``, ``CARECHAIN_PUBLIC_BASE_URL``, ``CARECHAIN_SMART_TOKEN_URL``,
``CARECHAIN_TRUST_DIR`` (the token issuer's key, to verify bearer tokens), TLS files, ``CARECHAIN_LOG_LEVEL``);
tracing by the standard ``OTEL_*`` variables. SIGTERM: uvicorn stops accepting, in-flight requests get the grace period.
"""

from __future__ import annotations

import ssl

import uvicorn

from carechain.client.channels import intercept, plain_channel
from carechain.client.tls import ClientTLS
from carechain.core.layout import TrustBundle
from carechain.core.telemetry import configure_tracing, shutdown_tracing
from carechain.core.tokens import TokenVerifier
from carechain.fhir.app import GatewayConfig, Records, build_app, observed
from carechain.fhir.smart import token_verifier
from carechain.runtime import metrics
from carechain.runtime.auth import Caller
from carechain.runtime.config import FhirSettings
from carechain.runtime.logs import configure_logging

NAME = "fhir"


def gateway_config(settings: FhirSettings, verifier: TokenVerifier[Caller] | None = None) -> GatewayConfig:
    """The app's configuration from the settings (verifier: see :func:`main`)."""
    return GatewayConfig(public_base_url=settings.public_base_url, max_resource_bytes=settings.max_resource_bytes,
                         max_bundle_bytes=settings.max_bundle_bytes, rpc_timeout_seconds=settings.rpc_timeout_seconds,
                         bundle_timeout_seconds=settings.bundle_timeout_seconds,
                         smart_token_url=settings.smart_token_url, verifier=verifier)


def uvicorn_config(settings: FhirSettings, app: object) -> uvicorn.Config:
    """uvicorn on listen_address: HTTPS with https_cert_file, client certificates with https_require_client_cert."""
    host, _, port = settings.listen_address.rpartition(":")
    tls: dict[str, object] = {}
    if settings.https_cert_file is not None:
        if settings.https_key_file is None:
            raise SystemExit("fhir: CARECHAIN_HTTPS_KEY_FILE is required with CARECHAIN_HTTPS_CERT_FILE")
        tls = {"ssl_certfile": str(settings.https_cert_file), "ssl_keyfile": str(settings.https_key_file)}
        if settings.https_require_client_cert:
            if settings.tls_ca_file is None:
                raise SystemExit("fhir: CARECHAIN_HTTPS_REQUIRE_CLIENT_CERT needs CARECHAIN_TLS_CA_FILE")
            tls.update(ssl_ca_certs=str(settings.tls_ca_file), ssl_cert_reqs=ssl.CERT_REQUIRED)
    # No uvicorn log configuration and no access log: the app writes one JSON line per request itself.
    return uvicorn.Config(app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_config=None,
                          access_log=False, timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
                          server_header=False, **tls)  # type: ignore[arg-type]


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = FhirSettings()
    configure_logging(NAME, settings.log_level)
    configure_tracing(NAME)
    metrics.configure_metrics(NAME, settings.metrics_listen_address)
    # Bearer tokens are verified against the token issuer's key before any call (a forged one is 401 here).
    config = gateway_config(settings, token_verifier(TrustBundle.load(settings.trust_dir)))
    channel = intercept(plain_channel(settings.records_address, ClientTLS.from_settings(settings)), "records")
    app = observed(build_app(Records(channel, config), config))
    try:
        uvicorn.Server(uvicorn_config(settings, app)).run()
    finally:
        channel.close()
        metrics.shutdown_metrics()
        shutdown_tracing()
