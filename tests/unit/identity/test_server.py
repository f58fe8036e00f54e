"""The identity service as built from settings (carechain.identity.server)."""

from __future__ import annotations

import pathlib

import grpc
from identity_fixtures import (
    FakeLedger,
    Kind,
    login,
)

from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import (
    TOKEN_ISSUER_ID,
    NetworkLayout,
    audience,
)
from carechain.identity.server import build
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.runtime.config import IdentitySettings
from carechain.runtime.server import start_service


def test_built_service_runs_from_a_network_directory(tmp_path: pathlib.Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    layout.ensure()
    ledger = FakeLedger(Ed25519Signer.from_file(TOKEN_ISSUER_ID, layout.key_file(TOKEN_ISSUER_ID)).public_key_bytes())
    settings = IdentitySettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("identity"),
                                signing_key_file=layout.key_file(TOKEN_ISSUER_ID), trust_dir=layout.trust_dir,
                                shutdown_grace_seconds=0)
    register, closers = build(settings, ledger=ledger)
    running = start_service("identity", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        token = login(stub, layout.operator_signer(), audience("identity")).token
        key = Ed25519Signer.generate("pending")
        org = stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_ORGANIZATION, display_name="Org", public_key=key.public_key_bytes()),
            metadata=[("authorization", f"Bearer {token}")])
        assert org.principal_id.startswith("org-")
        assert len(ledger.committed) == 1
    finally:
        channel.close()
        running.stop()
    secret_mode = (layout.service_dir("identity") / "pseudonym.key").stat().st_mode & 0o777
    assert secret_mode == 0o600
