"""What the everyday commands share: finding the network, acting as a key file's principal, one-line errors.

The network is found through ``--endpoints FILE`` or ``<--data-dir>/network.json`` (written by
``carechain up``). The caller acts with their own key file (``carechain keys new``), which names their
principal id (or pass ``--principal-id``). Errors are one line on stderr: ``error: <gRPC status>:
<message>`` with exit status 1 when the network refused or failed, ``error: <message>`` with exit
status 2 for a usage problem (missing file, no network, a key file naming no principal). Key material
is never printed; record contents only where the user asked for them (``records get``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shlex
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_DATA_DIR = "var/network"

#: Exit statuses: the network refused or a call failed; the command was used wrongly.
EXIT_FAILED, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """The command cannot run as given (exit status 2); the message says what to change."""


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-dir / --endpoints: where the running network is."""
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="the running network's data directory (its network.json)")
    parser.add_argument("--endpoints", default="", help="an endpoints file (network.json) instead of --data-dir's")


def add_caller_arguments(parser: argparse.ArgumentParser, who: str, required: bool = True) -> None:
    """--key-file / --principal-id: who the command acts as."""
    parser.add_argument("--key-file", required=required, default="",
                        help=f"your Ed25519 key file from `carechain keys new` ({who})")
    parser.add_argument("--principal-id", default="",
                        help="your principal id, when the key file does not name it")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def endpoints_of(args: argparse.Namespace) -> Any:
    """The running network's endpoints, from --endpoints or --data-dir."""
    from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints

    path = pathlib.Path(args.endpoints) if args.endpoints else pathlib.Path(args.data_dir) / ENDPOINTS_FILE
    try:
        return Endpoints.load(path)
    except FileNotFoundError:
        if args.endpoints:
            raise UsageError(f"--endpoints: {path} does not exist") from None
        raise UsageError(f"no running network in {args.data_dir} (no {ENDPOINTS_FILE}): start one with "
                         f"`{command()} up --data-dir {args.data_dir}` or pass --endpoints") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a CareChain endpoints file ({exc.__class__.__name__})") from None


def signer_of(args: argparse.Namespace) -> Any:
    """The caller's signer from --key-file (and --principal-id)."""
    from carechain.client.sdk import load_key_file

    path = pathlib.Path(args.key_file)
    try:
        return load_key_file(path, args.principal_id)
    except FileNotFoundError:
        raise UsageError(f"--key-file: {path} does not exist") from None
    except ValueError as exc:
        raise UsageError(f"--key-file: {exc}") from None


def client_of(args: argparse.Namespace, signer: Any = None) -> Any:
    """A client acting as the caller (or as signer)."""
    from carechain.client.sdk import CareChainClient

    return CareChainClient(endpoints_of(args), signer or signer_of(args))


def read_input(path: str, what: str) -> bytes:
    """The bytes of an input file (``-`` is stdin); UsageError naming the argument when unreadable."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror}") from None


def write_private_output(path: str, data: bytes) -> None:
    """Write data the user asked for (a record, a consent) to a file only its owner can read."""
    from carechain.core.crypto import write_private_file

    write_private_file(pathlib.Path(path), data)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def message_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as JSON-ready dict (enum names, camelCase as in proto3 JSON)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message)


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """``ACTIVE`` for CONSENT_STATUS_ACTIVE; ``-`` for 0 or unknown."""
    return enum.Name(value).removeprefix(prefix) if value and value in enum.values() else "-"


def enum_choice(enum: Any, prefix: str) -> Callable[[str], int]:
    """An argparse type accepting an enum value by its short name, any case (``treat`` for PURPOSE_OF_USE_TREAT)."""
    names = {name.removeprefix(prefix): number for name, number in enum.items() if number}

    def parse(value: str) -> int:
        try:
            return names[value.upper().replace("-", "_")]
        except KeyError:
            raise argparse.ArgumentTypeError(
                f"{value!r}: expected one of {', '.join(sorted(n.lower() for n in names))}") from None

    return parse


def command() -> str:
    """How to run ``carechain`` from here: the venv's script (often not on PATH), else ``python -m carechain``."""
    script = pathlib.Path(sys.executable).parent / "carechain"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m carechain"
    shown = os.path.relpath(script)
    return shlex.quote(shown if not shown.startswith("..") else str(script))


def report_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a command's failures into one line on stderr and its exit status (never a traceback)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        import grpc

        from carechain.core.errors import CareChainError

        try:
            return run(args)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"  # type: ignore[attr-defined]
            details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
            print(f"error: {code}: {details}", file=sys.stderr)
            return EXIT_FAILED
        except CareChainError as exc:  # refused on the client before any call (e.g. a bad FHIR Consent)
            print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
            return EXIT_FAILED

    return wrapped
