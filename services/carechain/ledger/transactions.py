"""Building, signing and checking ledger transactions.

A transaction's body is encoded once, deterministically, and the signature is
over those exact bytes (prefixed for domain separation); validators never
re-encode, so verification cannot depend on the protobuf library version.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from carechain.core.crypto import Signer, sha256, verify_signature
from carechain.core.errors import InvalidArgument
from carechain.ledger.v1 import ledger_pb2

TX_SIGNING_CONTEXT = b"carechain-tx/v1\n"
NONCE_BYTES = 16
LOG_PAGE = 500


def encode(message: object) -> bytes:
    """Deterministic protobuf encoding."""
    return message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]


def new_body(chain_id: str, submitter_id: str, **payload: object) -> ledger_pb2.TransactionBody:
    """A body with a fresh nonce and timestamp; payload is one oneof field, e.g. grant_consent=..."""
    if len(payload) != 1:
        raise ValueError("a transaction carries exactly one payload")
    return ledger_pb2.TransactionBody(
        chain_id=chain_id,
        nonce=os.urandom(NONCE_BYTES),
        created_at_ms=int(time.time() * 1000),
        submitter_id=submitter_id,
        **payload,  # type: ignore[arg-type]
    )


def sign_transaction(body: ledger_pb2.TransactionBody, signer: Signer) -> ledger_pb2.Transaction:
    """Encode body and sign it as signer; the signer must be the submitter."""
    if body.submitter_id != signer.key_id:
        raise ValueError("the submitter must sign its own transaction")
    body_bytes = encode(body)
    return ledger_pb2.Transaction(
        body=body_bytes, signer_id=signer.key_id, signature=signer.sign(TX_SIGNING_CONTEXT + body_bytes)
    )


def decode_body(tx: ledger_pb2.Transaction) -> ledger_pb2.TransactionBody:
    """Parse a transaction's body; InvalidArgument when it is not a TransactionBody."""
    body = ledger_pb2.TransactionBody()
    try:
        body.ParseFromString(tx.body)
    except Exception as exc:  # protobuf raises DecodeError
        raise InvalidArgument("transaction.body", "not a TransactionBody encoding") from exc
    if body.WhichOneof("payload") is None:
        raise InvalidArgument("transaction.body", "carries no payload")
    if body.submitter_id != tx.signer_id:
        raise InvalidArgument("transaction.signer_id", "must equal body.submitter_id")
    if len(body.nonce) < NONCE_BYTES:
        raise InvalidArgument("transaction.body.nonce", f"must be at least {NONCE_BYTES} random bytes")
    return body


def signature_valid(tx: ledger_pb2.Transaction, public_key: bytes) -> bool:
    """True when tx is signed by public_key."""
    return verify_signature(public_key, tx.signature, TX_SIGNING_CONTEXT + tx.body)


def transaction_hash(tx: ledger_pb2.Transaction) -> bytes:
    """SHA-256 of the encoded transaction (the log tree leaf data)."""
    return sha256(encode(tx))


def logged_transactions(ledger: Any, from_log_index: int = 0,
                        page_size: int = LOG_PAGE) -> Iterator[ledger_pb2.LoggedTransaction]:
    """Every logged transaction from from_log_index to the end of the log, read page by page.

    ledger is a LedgerService stub (or anything with its ``ListTransactions``); valid and invalid
    transactions both come, with their ``result``.
    """
    index = max(from_log_index, 0)
    while True:
        page = ledger.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=index, limit=page_size))
        if not page.transactions:
            return
        yield from page.transactions
        index = page.transactions[-1].log_index + 1
