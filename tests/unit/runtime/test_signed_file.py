"""Signed files: round trip, private and atomic; refused when edited, signed by another key or of another kind."""

from __future__ import annotations

import json
import stat

import pytest

from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import IntegrityError
from carechain.runtime.signed_file import SignedFile

DOMAIN = b"carechain-test-snapshot/v1\n"


def test_a_written_body_reads_back_from_a_private_file_with_nothing_left_behind(tmp_path):
    signer = Ed25519Signer.generate("svc-audit")
    signed = SignedFile(tmp_path / "state" / "snapshot.json", signer, DOMAIN)
    assert signed.read() is None  # no file yet
    signed.write(b"\x00body bytes\xff")
    signed.write(b"second body")  # replaces the first
    assert signed.read() == b"second body"
    assert stat.S_IMODE(signed.path.stat().st_mode) == 0o600
    assert [p.name for p in signed.path.parent.iterdir()] == ["snapshot.json"]


def test_an_edited_body_is_refused(tmp_path):
    signed = SignedFile(tmp_path / "snapshot.json", Ed25519Signer.generate("svc-audit"), DOMAIN)
    signed.write(b'{"deactivated":["pat-1"]}')
    envelope = json.loads(signed.path.read_text())
    envelope["body"] = b'{"deactivated":[]}'.hex()
    signed.path.write_text(json.dumps(envelope))
    with pytest.raises(IntegrityError, match="signature"):
        signed.read()


def test_a_file_signed_by_another_key_or_for_another_kind_is_refused(tmp_path):
    signer = Ed25519Signer.generate("svc-audit")
    impostor = Ed25519Signer.generate("svc-audit")  # same id, another key
    SignedFile(tmp_path / "snapshot.json", impostor, DOMAIN).write(b"body")
    with pytest.raises(IntegrityError, match="signature"):
        SignedFile(tmp_path / "snapshot.json", signer, DOMAIN).read()
    SignedFile(tmp_path / "snapshot.json", signer, b"carechain-other-snapshot/v1\n").write(b"body")
    with pytest.raises(IntegrityError, match="signature"):
        SignedFile(tmp_path / "snapshot.json", signer, DOMAIN).read()
    other_service = Ed25519Signer.generate("svc-records")
    SignedFile(tmp_path / "snapshot.json", other_service, DOMAIN).write(b"body")
    with pytest.raises(IntegrityError, match="signature"):  # verified with svc-records' key, still not svc-audit's
        SignedFile(tmp_path / "snapshot.json", signer, DOMAIN, public_key=other_service.public_key_bytes()).read()


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"body": "zz", "signature": ""}', '{"signature": "00"}'])
def test_a_file_that_is_not_an_envelope_is_refused(tmp_path, text):
    path = tmp_path / "snapshot.json"
    path.write_text(text)
    with pytest.raises(IntegrityError, match="not a signed file"):
        SignedFile(path, Ed25519Signer.generate("svc-audit"), DOMAIN).read()
