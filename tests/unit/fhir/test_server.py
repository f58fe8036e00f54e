"""How `carechain serve fhir` turns its settings into uvicorn's configuration and the app's."""

from __future__ import annotations

import pathlib
import ssl

import pytest

from carechain.fhir.server import gateway_config, uvicorn_config
from carechain.runtime.config import FhirSettings


def test_plain_http_by_default_on_the_documented_port() -> None:
    settings = FhirSettings(_env_file=None)
    config = uvicorn_config(settings, app=object())
    assert (config.host, config.port) == ("127.0.0.1", 7106)
    assert config.ssl_certfile is None and config.access_log is False and config.log_config is None
    assert gateway_config(settings).max_bundle_bytes == 32 * 1024 * 1024


def test_https_and_client_certificates(tmp_path: pathlib.Path) -> None:
    cert, key, ca = (tmp_path / name for name in ("tls.crt", "tls.key", "ca.crt"))
    settings = FhirSettings(listen_address="0.0.0.0:8443", https_cert_file=cert, https_key_file=key,
                            https_require_client_cert=True, tls_ca_file=ca)
    config = uvicorn_config(settings, app=object())
    assert (config.host, config.port) == ("0.0.0.0", 8443)
    assert (config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs) == (str(cert), str(key), str(ca))
    assert config.ssl_cert_reqs == ssl.CERT_REQUIRED
    with pytest.raises(SystemExit, match="CARECHAIN_HTTPS_KEY_FILE"):
        uvicorn_config(FhirSettings(https_cert_file=cert), app=object())
    with pytest.raises(SystemExit, match="CARECHAIN_TLS_CA_FILE"):
        uvicorn_config(FhirSettings(https_cert_file=cert, https_key_file=key, https_require_client_cert=True),
                       app=object())


def test_the_smart_token_url_defaults_to_the_public_base_url() -> None:
    assert gateway_config(FhirSettings(_env_file=None)).token_url == ""  # no base URL: no token endpoint
    based = FhirSettings(_env_file=None, public_base_url="https://fhir.example.org/r4/")
    assert gateway_config(based).token_url == "https://fhir.example.org/r4/token"
    explicit = FhirSettings(_env_file=None, public_base_url="https://fhir.example.org/r4",
                            smart_token_url="https://auth.example.org/token")
    assert gateway_config(explicit).token_url == "https://auth.example.org/token"
