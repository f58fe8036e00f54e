"""Mutual TLS: the whole story over TLS; plaintext or certificate-less callers are refused."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carechain.client.tls import ClientTLS
from carechain.core.layout import SERVICES
from carechain.dev.demo import run_demo
from carechain.dev.localnet import LocalNetwork


@pytest.fixture(scope="module")
def tls_network(tmp_path_factory):
    network = LocalNetwork(tmp_path_factory.mktemp("tls-network"), tls=True)
    network.start()
    try:
        yield network
    finally:
        network.stop()


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_the_story_runs_over_mutual_tls(tls_network) -> None:
    outcome = run_demo(tls_network.endpoints, tls_network.layout.operator_signer(), say=lambda _: None)
    assert outcome.cancer_read_identical and outcome.psychiatric_denial and outcome.chain_ok
    for service in SERVICES:
        serving = [json.loads(line) for line in (tls_network.log_dir / f"{service}.log").read_text().splitlines()
                   if '"msg": "serving"' in line]
        assert serving and serving[-1]["tls"] and serving[-1]["mutual_tls"], f"{service} is not serving mutual TLS"


def test_plaintext_and_certificate_less_callers_are_refused(tls_network) -> None:
    address = tls_network.endpoints.records
    with grpc.insecure_channel(address) as plaintext:
        with pytest.raises(grpc.RpcError) as caught:
            _health(plaintext)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    no_client_cert = ClientTLS(tls_network.certificate_authority.ca_file)
    with grpc.secure_channel(address, no_client_cert.credentials()) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _health(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, tls_network.endpoints.client_tls().credentials()) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
