"""Server bootstrap with TLS: a plaintext health-only port for probes, TLS everywhere else."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carechain.client.tls import ClientTLS
from carechain.dev.backends.process import free_port
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.runtime.config import AuditSettings
from carechain.runtime.server import start_service


def _check(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_tls_service_with_a_plaintext_health_port(tmp_path) -> None:
    ca = LocalCertificateAuthority(tmp_path / "tls")
    server_cert = ca.issue("audit", ["localhost"])
    health_address = f"127.0.0.1:{free_port()}"
    settings = AuditSettings(
        listen_address="127.0.0.1:0",
        tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file,
        tls_ca_file=ca.ca_file,
        health_listen_address=health_address,
    )
    running = start_service("audit", settings, lambda server: [])
    try:
        with grpc.insecure_channel(health_address) as probe:
            assert _check(probe) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(running.address) as plaintext, pytest.raises(grpc.RpcError):
            _check(plaintext)
        with grpc.secure_channel(running.address, ClientTLS(ca.ca_file).credentials()) as secure:
            assert _check(secure) == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop()
    with grpc.insecure_channel(health_address) as probe, pytest.raises(grpc.RpcError):
        _check(probe)


def test_a_certificate_without_its_key_is_refused(tmp_path) -> None:
    ca = LocalCertificateAuthority(tmp_path / "tls")
    cert = ca.issue("audit", ["localhost"])
    settings = AuditSettings(listen_address="127.0.0.1:0", tls_cert_file=cert.cert_file)
    with pytest.raises(ValueError, match="CARECHAIN_TLS_KEY_FILE"):
        start_service("audit", settings, lambda server: [])
