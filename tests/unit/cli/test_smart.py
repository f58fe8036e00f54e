"""``carechain smart keygen``: a client key file (0600) and a public JWKS that identity accepts."""

from __future__ import annotations

import json
import pathlib
import stat

import pytest

from carechain.cli import build_parser
from carechain.cli.smart import ALGORITHMS
from carechain.client.smart_keys import CLIENT_ALGORITHMS, client_assertion, key_algorithm, load_client_key
from carechain.identity.smart_clients import validate_jwks


def _run(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_keygen_writes_a_private_key_and_a_public_jwks(tmp_path: pathlib.Path, alg: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "client.pem"
    assert _run("smart", "keygen", "--out", str(out), "--alg", alg, "--kid", "k1", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kid"] == "k1" and printed["alg"] == alg
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_client_key(out)
    assert key_algorithm(key) == alg
    jwks_text = pathlib.Path(printed["jwks_file"]).read_text()
    canonical, kids = validate_jwks(jwks_text)  # public only, accepted as identity would
    assert kids == ["k1"] and '"d"' not in jwks_text
    assert client_assertion(key, "k1", "org-1", "https://x/token").count(".") == 2


def test_keygen_never_overwrites(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "client.pem"
    assert _run("smart", "keygen", "--out", str(out)) == 0
    before = out.read_bytes()
    assert _run("smart", "keygen", "--out", str(out)) == 2
    assert out.read_bytes() == before
    assert "--force" in capsys.readouterr().err


def test_the_parser_offers_the_client_algorithms() -> None:
    assert ALGORITHMS == CLIENT_ALGORITHMS
