"""``carechain keys ...``: the caller's own Ed25519 key file.

    carechain keys new --out FILE [--id PRINCIPAL_ID] [--json]
        a new key in FILE (0600, PKCS#8 PEM naming the principal id when given) and its public key
        in FILE.pub (send that to whoever registers you)
    carechain keys set-id --key-file FILE PRINCIPAL_ID
        record the id registration assigned in the key file
    carechain keys show --key-file FILE [--json]
        the principal id and public key (never the private key)
"""

from __future__ import annotations

import argparse
import base64
import pathlib
from typing import Any

from carechain.cli.session import UsageError, add_output_arguments, print_json, report_errors


@report_errors
def cmd_new(args: argparse.Namespace) -> int:
    """Create a key file and its .pub."""
    from carechain.client.sdk import new_key_file, public_key_file

    out = pathlib.Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out: {out} exists (a key is never overwritten; pass --force to replace it)")
    try:
        signer = new_key_file(out, args.id)
    except ValueError as exc:
        raise UsageError(f"--id: {exc}") from None
    public = public_key_file(out)
    if args.json:
        print_json({"key_file": str(out), "public_key_file": str(public), "principal_id": args.id,
                    "public_key": base64.b64encode(signer.public_key_bytes()).decode()})
        return 0
    print(f"wrote private key {out} (0600; keep it, never send it) and public key {public}")
    if not args.id:
        print(f"send {public} to whoever registers you, then record the id they assign: "
              f"carechain keys set-id --key-file {out} ID")
    return 0


@report_errors
def cmd_set_id(args: argparse.Namespace) -> int:
    """Name the principal in a key file."""
    from carechain.client.sdk import load_key_file, name_key_file

    path = pathlib.Path(args.key_file)
    try:
        load_key_file(path, args.principal_id)  # a key file at all, before rewriting it
        name_key_file(path, args.principal_id)
    except FileNotFoundError:
        raise UsageError(f"--key-file: {path} does not exist") from None
    except ValueError as exc:
        raise UsageError(f"--key-file: {exc}") from None
    print(f"{path} now acts as {args.principal_id}")
    return 0


@report_errors
def cmd_show(args: argparse.Namespace) -> int:
    """Print a key file's principal id and public key."""
    from carechain.client.sdk import load_key_file

    path = pathlib.Path(args.key_file)
    try:
        signer = load_key_file(path, "-")  # the key alone, whether or not the file names its principal
    except FileNotFoundError:
        raise UsageError(f"--key-file: {path} does not exist") from None
    except ValueError as exc:
        raise UsageError(f"--key-file: {exc}") from None
    try:
        named = load_key_file(path).key_id
    except ValueError:
        named = ""
    public = base64.b64encode(signer.public_key_bytes()).decode()
    if args.json:
        print_json({"key_file": str(path), "principal_id": named, "public_key": public})
    else:
        print(f"principal {named or '(not named yet: carechain keys set-id)'}  public key {public}")
    return 0


def add_keys_commands(sub: Any) -> None:
    """Add ``carechain keys ...`` to the top-level subparsers."""
    keys = sub.add_parser("keys", help="your own Ed25519 key file")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    new = keys_sub.add_parser("new", help="create a key file (0600) and its public key file (.pub)")
    new.add_argument("--out", required=True, help="the key file to create")
    new.add_argument("--id", default="", help="the principal id, when already known (registration assigns it)")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    add_output_arguments(new)
    new.set_defaults(func=cmd_new)

    set_id = keys_sub.add_parser("set-id", help="record the principal id registration assigned")
    set_id.add_argument("--key-file", required=True)
    set_id.add_argument("principal_id")
    set_id.set_defaults(func=cmd_set_id)

    show = keys_sub.add_parser("show", help="a key file's principal id and public key")
    show.add_argument("--key-file", required=True)
    add_output_arguments(show)
    show.set_defaults(func=cmd_show)
