"""``carechain consent sign-fhir``: the X-Consent-Signature JWS over a Consent file's exact bytes."""

from __future__ import annotations

import json
import pathlib

import pytest

from carechain.cli import build_parser
from carechain.core.consent_jws import body_sha256, verify_consent_jws
from carechain.core.crypto import Ed25519Signer


def _run(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


def test_sign_fhir_prints_a_jws_over_the_exact_file_bytes(tmp_path: pathlib.Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    key = Ed25519Signer.generate("psn-patient")
    key_file = tmp_path / "pat.key"
    key.save(key_file)
    consent = tmp_path / "consent.json"
    consent.write_bytes(b'{"resourceType": "Consent",\n "status": "active"}\n')  # any formatting: bytes count
    assert _run("consent", "sign-fhir", "--key-file", str(key_file), "--principal-id", "psn-patient",
                "--chain-id", "carechain-local", str(consent)) == 0
    printed = capsys.readouterr().out.strip()
    claims = verify_consent_jws(printed, key.public_key_bytes())
    assert (claims.signer_id, claims.sub, claims.chain_id) == ("psn-patient", "psn-patient", "carechain-local")
    assert claims.consent_sha256 == body_sha256(consent.read_bytes())
    assert "PRIVATE" not in printed and json.loads(consent.read_bytes())["status"] == "active"


def test_a_delegate_signs_for_the_patient(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = Ed25519Signer.generate("psn-guardian")
    key.save(tmp_path / "g.key")
    (tmp_path / "c.json").write_bytes(b"{}")
    assert _run("consent", "sign-fhir", "--key-file", str(tmp_path / "g.key"), "--principal-id", "psn-guardian",
                "--patient", "psn-child", "--chain-id", "c", str(tmp_path / "c.json")) == 0
    claims = verify_consent_jws(capsys.readouterr().out.strip(), key.public_key_bytes())
    assert (claims.signer_id, claims.sub) == ("psn-guardian", "psn-child")
