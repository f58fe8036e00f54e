"""``carechain smart ...``: a hospital's SMART Backend Services client (docs/fhir-smart.md).

    carechain smart keygen --out FILE [--alg ES384|RS384] [--kid KID] [--json]
        a new client key in FILE (0600, PKCS#8 PEM; never sent) and its public JWKS in FILE.jwks.json
    carechain smart register-keys --key-file KEY --jwks FILE [--json]
        register the JWKS as the SMART client keys of the principal of KEY (an organisation or a
        practitioner); the OAuth2 client_id is that principal's id
"""

from __future__ import annotations

import argparse
import json
import pathlib
import uuid
from typing import Any

from carechain.cli.session import (
    UsageError,
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    print_json,
    read_input,
    report_errors,
)

JWKS_SUFFIX = ".jwks.json"
# carechain.client.smart_keys.CLIENT_ALGORITHMS, without importing the crypto stack to build the parser.
ALGORITHMS = ("ES384", "RS384")


def jwks_file(key_file: pathlib.Path) -> pathlib.Path:
    """Where keygen writes the public JWKS of a client key file."""
    return key_file.with_name(key_file.name + JWKS_SUFFIX)


@report_errors
def cmd_keygen(args: argparse.Namespace) -> int:
    """Make a client key pair: the private key file and the public JWKS beside it."""
    from carechain.client.smart_keys import new_client_key, public_jwks, write_client_key

    out = pathlib.Path(args.out)
    public = jwks_file(out)
    if (out.exists() or public.exists()) and not args.force:
        raise UsageError(f"--out: {out} or {public} exists (a key is never overwritten; pass --force to replace it)")
    key = new_client_key(args.alg)
    kid = args.kid or f"{args.alg.lower()}-{uuid.uuid4().hex[:12]}"
    write_client_key(out, key)
    public.write_text(json.dumps(public_jwks((key, kid)), indent=2) + "\n")
    if args.json:
        print_json({"key_file": str(out), "jwks_file": str(public), "kid": kid, "alg": args.alg})
    else:
        print(f"wrote client key {out} (0600; keep it, never send it) and public JWKS {public} (kid {kid})")
        print(f"register it: carechain smart register-keys --key-file YOUR_PRINCIPAL_KEY --jwks {public}")
    return 0


@report_errors
def cmd_register_keys(args: argparse.Namespace) -> int:
    """Register a JWKS as the caller's SMART client keys."""
    text = read_input(args.jwks, "--jwks").decode("utf-8", errors="replace")
    with client_of(args) as client:
        registered = client.register_client_keys(text)
    if args.json:
        print_json({"client_id": registered.client_id, "key_ids": list(registered.key_ids)})
    else:
        print(f"registered {len(registered.key_ids)} key(s) ({', '.join(registered.key_ids)}) "
              f"for client_id {registered.client_id}")
    return 0


def add_smart_commands(sub: Any) -> None:
    """Add ``carechain smart ...`` to the top-level subparsers."""
    smart = sub.add_parser("smart", help="SMART Backend Services client keys (the FHIR gateway's /token)")
    smart_sub = smart.add_subparsers(dest="smart_command", required=True)

    keygen = smart_sub.add_parser("keygen", help="make an ES384 or RS384 client key and its public JWKS")
    keygen.add_argument("--out", required=True, help="the private key file to create (its JWKS: FILE.jwks.json)")
    keygen.add_argument("--alg", choices=ALGORITHMS, default="ES384", help="signing algorithm")
    keygen.add_argument("--kid", default="", help="key id (default: the alg and a random suffix)")
    keygen.add_argument("--force", action="store_true", help="replace existing files")
    add_output_arguments(keygen)
    keygen.set_defaults(func=cmd_keygen)

    register = smart_sub.add_parser("register-keys", help="register a JWKS as your SMART client keys")
    register.add_argument("--jwks", required=True, help="the JWKS file (public keys only; - for stdin)")
    add_caller_arguments(register, "an organisation or practitioner")
    add_network_arguments(register)
    add_output_arguments(register)
    register.set_defaults(func=cmd_register_keys)
