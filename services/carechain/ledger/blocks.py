"""Block encoding rules shared by the block cutter and verification.

- The header is the deterministic protobuf encoding of a ``BlockHeader``; its
  hash is SHA-256 of those bytes, and the next block's
  ``previous_header_hash`` is that hash (32 zero bytes at genesis, height 0).
- ``transactions_root`` is the RFC 9162 root over the block's leaf data, each
  leaf being the deterministic encoding of a ``Transaction``; ``log_root`` is
  the RFC 9162 root over every leaf of the log so far.
- ``results_hash`` is SHA-256 of the deterministic encoding of a ``Block``
  message in which only ``results`` is set, i.e. the concatenation, in
  transaction order, of ``0x1a || varint(len) || TransactionResult`` for each
  result (``valid`` as field 1 and ``reason`` as field 2, default values
  omitted). An empty block hashes the empty string.
- Validators sign ``"carechain-block/v1\\n" || header bytes`` with Ed25519.
"""

from __future__ import annotations

from collections.abc import Sequence

from carechain.core.crypto import sha256
from carechain.ledger.transactions import encode
from carechain.ledger.v1 import ledger_pb2

BLOCK_SIGNING_CONTEXT = b"carechain-block/v1\n"
GENESIS_PREVIOUS_HASH = bytes(32)


def results_hash(results: Sequence[ledger_pb2.TransactionResult]) -> bytes:
    """SHA-256 over a block's results (see the module docstring for the exact encoding)."""
    return sha256(encode(ledger_pb2.Block(results=list(results))))


def header_hash(header_bytes: bytes) -> bytes:
    """SHA-256 of an encoded header: what the next block links to."""
    return sha256(header_bytes)


def header_signing_message(header_bytes: bytes) -> bytes:
    """What a validator signs for a header."""
    return BLOCK_SIGNING_CONTEXT + header_bytes
