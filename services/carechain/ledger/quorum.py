"""Validator sets, header votes and quorum certificates.

A network has a fixed, configured set of validators (principal ids, e.g.
``validator-north-clinic``; their Ed25519 public keys are in the trust
bundle) and a quorum (default: a majority, ``n // 2 + 1``). Every validator
computes the header of each block from the shared order and signs
``"carechain-block/v1\\n" || header`` (:func:`carechain.ledger.blocks.header_signing_message`).
A signed header is a :class:`HeaderVote`; validators exchange votes through the
orderer (:class:`VoteBoard`, etcd keys ``<prefix>/<chain>/sigs/<height>/<validator>``,
each written once). A block is *final* when ``quorum`` distinct validators of
the set signed the same header; those signatures, sorted by validator id,
form its :class:`QuorumCertificate`. Because each header carries the hash of
the previous one, a certificate on block h also fixes every block before h.

:func:`check_certificate` is pure (no server, no store): verification, the
SDK's client-side verifier and catch-up all use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from carechain.core.crypto import Signer, sha256, verify_signature
from carechain.core.errors import IntegrityError
from carechain.core.layout import TrustBundle, service_principal_id
from carechain.ledger import blocks
from carechain.ledger.transactions import encode
from carechain.ledger.v1 import ledger_pb2

#: The validator of a single-validator network (the embedded default).
DEFAULT_VALIDATOR_ID = service_principal_id("ledger")


def majority(size: int) -> int:
    """Smallest majority of size validators."""
    return size // 2 + 1


@dataclass(frozen=True)
class ValidatorSet:
    """The validators whose signatures count, and how many must agree."""

    members: tuple[str, ...]
    quorum: int

    @classmethod
    def of(cls, members: Iterable[str], quorum: int = 0) -> ValidatorSet:
        """A set of the given ids (sorted, de-duplicated); quorum 0 = majority."""
        ids = tuple(sorted({m.strip() for m in members if m.strip()}))
        if not ids:
            raise ValueError("a validator set needs at least one validator")
        quorum = quorum or majority(len(ids))
        if not 1 <= quorum <= len(ids):
            raise ValueError(f"quorum {quorum} is outside 1..{len(ids)} validators")
        return cls(ids, quorum)

    @classmethod
    def single(cls, validator_id: str = DEFAULT_VALIDATOR_ID) -> ValidatorSet:
        """One validator, quorum 1 (the embedded network)."""
        return cls((validator_id,), 1)

    def __contains__(self, validator_id: object) -> bool:
        return validator_id in self.members

    def to_json(self) -> str:
        """Canonical text form (stored with the chain, so offline verification knows the set)."""
        return json.dumps({"members": list(self.members), "quorum": self.quorum}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ValidatorSet:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls.of(data["members"], int(data["quorum"]))


#: Environment variables naming the configured validator set (the ledger's own settings use the same).
VALIDATORS_ENV = "CARECHAIN_VALIDATORS"
QUORUM_ENV = "CARECHAIN_QUORUM"


def configured_validator_set(validators: str | None = None, quorum_size: int | None = None) -> ValidatorSet:
    """The validator set from configuration, never from a ledger store.

    validators: comma-separated ids (default ``$CARECHAIN_VALIDATORS``, else the
    embedded network's ``svc-ledger`` alone); quorum_size: default
    ``$CARECHAIN_QUORUM``, else a majority. ValueError names the setting when
    it is malformed.
    """
    text = os.environ.get(VALIDATORS_ENV, "") if validators is None else validators
    members = [m for m in text.split(",") if m.strip()] or [DEFAULT_VALIDATOR_ID]
    if quorum_size is None:
        raw = os.environ.get(QUORUM_ENV, "").strip() or "0"
        try:
            quorum_size = int(raw)
        except ValueError:
            raise ValueError(f"{QUORUM_ENV} must be a number, not {raw!r}") from None
    try:
        return ValidatorSet.of(members, quorum_size)
    except ValueError as exc:
        raise ValueError(f"{VALIDATORS_ENV}/{QUORUM_ENV}: {exc}") from None


@runtime_checkable
class VoteBoard(Protocol):
    """Where validators publish and read their signed headers (etcd in production)."""

    def publish_vote(self, height: int, validator_id: str, vote: bytes) -> bytes:
        """Store vote for (height, validator) unless one exists; returns the vote that holds."""
        ...

    def votes(self, first_height: int, last_height: int) -> dict[int, dict[str, bytes]]:
        """Every published vote for heights first..last (inclusive): height -> validator -> vote."""
        ...


def sign_header(signer: Signer, header_bytes: bytes) -> ledger_pb2.ValidatorSignature:
    """signer's signature over an encoded header."""
    return ledger_pb2.ValidatorSignature(
        validator_id=signer.key_id, signature=signer.sign(blocks.header_signing_message(header_bytes))
    )


def signature_valid(header_bytes: bytes, signature: ledger_pb2.ValidatorSignature, trust: TrustBundle) -> bool:
    """True when signature is by a trusted key over header_bytes."""
    key = trust.key(signature.validator_id)
    return key is not None and verify_signature(key, signature.signature, blocks.header_signing_message(header_bytes))


def encode_vote(header_bytes: bytes, signature: ledger_pb2.ValidatorSignature) -> bytes:
    """A HeaderVote's bytes as published."""
    return encode(ledger_pb2.HeaderVote(header=header_bytes, signature=signature))


def decode_vote(raw: bytes) -> ledger_pb2.HeaderVote | None:
    """A published vote, or None when it does not decode."""
    try:
        return ledger_pb2.HeaderVote.FromString(raw)
    except Exception:  # noqa: BLE001 - garbage on the board is ignored, not trusted
        return None


def build_certificate(
    height: int, header_bytes: bytes, signatures: Iterable[ledger_pb2.ValidatorSignature]
) -> ledger_pb2.QuorumCertificate:
    """A certificate of the given signatures (one per validator, sorted by id)."""
    by_id = {s.validator_id: s for s in signatures}
    return ledger_pb2.QuorumCertificate(
        height=height,
        header_hash=blocks.header_hash(header_bytes),
        signatures=[by_id[v] for v in sorted(by_id)],
    )


def check_certificate(
    header_bytes: bytes,
    certificate: ledger_pb2.QuorumCertificate,
    trust: TrustBundle,
    validators: ValidatorSet,
) -> None:
    """Raise IntegrityError unless certificate holds valid signatures of a quorum of validators over header_bytes."""
    try:
        header = ledger_pb2.BlockHeader.FromString(header_bytes)
    except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
        raise IntegrityError("quorum certificate: the header does not decode") from exc
    if certificate.height != header.height:
        raise IntegrityError(f"quorum certificate is for height {certificate.height}, not {header.height}")
    if certificate.header_hash != sha256(header_bytes):
        raise IntegrityError("quorum certificate names another header hash")
    seen: set[str] = set()
    for signature in certificate.signatures:
        validator_id = signature.validator_id
        if validator_id in seen:
            raise IntegrityError(f"quorum certificate: {validator_id} signed twice")
        if validator_id not in validators:
            raise IntegrityError(f"quorum certificate: {validator_id} is not in the validator set")
        if not signature_valid(header_bytes, signature, trust):
            raise IntegrityError(f"quorum certificate: signature of {validator_id} is invalid")
        seen.add(validator_id)
    if len(seen) < validators.quorum:
        raise IntegrityError(
            f"quorum certificate has {len(seen)} validator signatures; the quorum is {validators.quorum}"
        )
