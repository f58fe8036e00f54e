"""Key files of the SDK: created 0600 with a .pub, naming their principal, never echoing key material."""

from __future__ import annotations

import pathlib
import stat

import pytest

from carechain.client.sdk import (
    KEY_FILE_PRINCIPAL_HEADER,
    load_key_file,
    load_public_key_file,
    name_key_file,
    new_key_file,
    public_key_file,
)
from carechain.core.crypto import Ed25519Signer, verify_signature


def test_a_new_key_file_is_private_and_its_pub_is_the_public_key(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys" / "me.key"
    signer = new_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_public_key_file(public_key_file(path)) == signer.public_key_bytes()
    assert load_public_key_file(path) == signer.public_key_bytes()  # the key file itself gives its public key
    assert "PRIVATE" not in public_key_file(path).read_text()


def test_a_key_file_names_its_principal_once_registered(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "me.key"
    signer = new_key_file(path)
    with pytest.raises(ValueError, match="names no principal"):
        load_key_file(path)
    name_key_file(path, "psn-abc")
    name_key_file(path, "psn-def")  # renaming replaces the line, keeps the key
    loaded = load_key_file(path)
    assert loaded.key_id == "psn-def" and path.read_text().count(KEY_FILE_PRINCIPAL_HEADER) == 1
    assert verify_signature(signer.public_key_bytes(), loaded.sign(b"m"), b"m")
    assert load_key_file(path, "prac-override").key_id == "prac-override"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_plain_pkcs8_key_works_with_an_explicit_id(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "operator.pem"
    Ed25519Signer.generate("operator").save(path)
    assert load_key_file(path, "operator").key_id == "operator"
    name_key_file(path, "operator")
    # Other PEM readers still read a named key file (the id line is RFC 7468 explanatory text).
    assert Ed25519Signer.from_file("operator", path).public_key_bytes() == load_key_file(path).public_key_bytes()


def test_bad_files_are_named_without_their_content(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "not-a-key"
    path.write_text("secret-looking text")
    with pytest.raises(ValueError) as caught:
        load_key_file(path, "x")
    assert "not a PEM private key" in str(caught.value) and "secret-looking" not in str(caught.value)
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key_file(path)
    with pytest.raises(ValueError, match="white space"):
        new_key_file(tmp_path / "k", "two words")


def test_the_audit_listings_fetch_every_page(tmp_path: pathlib.Path) -> None:
    from audit_fixtures import OPERATOR, PATIENT, RECORDS, AuthedStub, event, running_audit

    from carechain.audit.v1 import audit_pb2
    from carechain.client.sdk import CareChainClient

    with running_audit(tmp_path) as env:
        for _ in range(3):  # 300 events (the service's default page is 100), every tenth an alert
            env.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[
                event(alert=i % 10 == 0, reason=f"#{i}") for i in range(100)]), RECORDS)

        def client_as(caller) -> CareChainClient:  # type: ignore[no-untyped-def]
            client = object.__new__(CareChainClient)  # only the audit stub, over the real gRPC server
            client.signer = Ed25519Signer.generate(caller.principal_id)
            client.audit = AuthedStub(env.stub, caller)
            return client

        patient = client_as(PATIENT)
        disclosures = patient.accounting_of_disclosures()
        assert len(disclosures) == 300 and len({d.sequence for d in disclosures}) == 300
        assert [d.sequence for d in disclosures] == sorted((d.sequence for d in disclosures), reverse=True)
        assert len(patient.access_history()) == 300
        assert len(patient.notifications()) == 30
        assert len(patient.export_audit_fhir()["entry"]) == 300
        assert len(client_as(OPERATOR).review_items()) == 30
