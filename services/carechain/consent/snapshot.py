"""Snapshots of the consent service's ledger-derived state, so a restart resumes instead of replaying history.

A snapshot holds, at one certified block boundary, the folded
:class:`carechain.consent.state.ConsentState` and the
:class:`carechain.ledger.reader.VerifiedLedgerReader` position (next height,
last header hash, log frontier, replayed contract state) with the log size
they reflect. It is one :class:`carechain.runtime.signed_file.SignedFile`
(``<data dir>/consent-snapshot.json``, 0600, written atomically): the body is
sealed under the ledger metadata key (it holds opened policies and record
categories, which are on the ledger only sealed) and the sealed body is signed
by the consent service's own key over
``"carechain-consent-snapshot/v1\\n" + SHA-256(sealed body)``.

On load it is used only if the signature verifies with svc-consent's key from
the trust bundle (an edited snapshot is refused) and the ledger's block at
that position hashes to the recorded header hash, carries the recorded log
size and root and is certified by the configured validator set (a snapshot of
another chain or of a rewritten history is refused). A refused or unreadable
snapshot is logged and ignored: the service replays from genesis, as without
one. No secrets are in it (decision-token keys and the metadata key are not).
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import grpc

from carechain.consent.state import ConsentState
from carechain.core.crypto import Signer
from carechain.core.errors import IntegrityError
from carechain.ledger import transactions
from carechain.ledger.reader import VerifiedLedgerReader
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.signed_file import SignedFile

log = logging.getLogger("carechain.consent.snapshot")

FILE_NAME = "consent-snapshot.json"
_DOMAIN = b"carechain-consent-snapshot/v1\n"
FORMAT_VERSION = 1
_PURPOSE = "consent-snapshot"
#: Save a new snapshot once this many transactions were folded since the last one.
SNAPSHOT_EVERY_TRANSACTIONS = 20_000


class ConsentSnapshots:
    """Save and load signed snapshots of one consent service's state (see the module docstring)."""

    def __init__(self, path: pathlib.Path, signer: Signer, public_key: bytes | None = None,
                 every: int = SNAPSHOT_EVERY_TRANSACTIONS) -> None:
        """public_key verifies snapshots (default: the signer's own key); every: transactions between saves."""
        self.path = pathlib.Path(path)
        self._file = SignedFile(self.path, signer, _DOMAIN, public_key)
        self.every = every
        self.saved_log_size = -1

    def save(self, state: ConsentState, reader: VerifiedLedgerReader) -> bool:
        """Write a snapshot of state and reader at their common log size; False when not at a block boundary."""
        exported = state.export(reader.export_position)
        if exported is None:
            return False
        exported["version"] = FORMAT_VERSION
        plaintext = json.dumps(exported, separators=(",", ":"), sort_keys=True).encode()
        self._file.write(transactions.encode(state.sealer.seal_local(_PURPOSE, plaintext)))
        self.saved_log_size = int(exported["state"]["cursor"])
        return True

    def save_if_due(self, state: ConsentState, reader: VerifiedLedgerReader) -> bool:
        """Save when every transactions were folded since the last snapshot (or none was saved yet)."""
        if state.cursor - max(self.saved_log_size, 0) < self.every and self.saved_log_size >= 0:
            return False
        if state.cursor == 0:
            return False
        return self.save(state, reader)

    def load(self, state: ConsentState, reader: VerifiedLedgerReader) -> int | None:
        """Resume fresh state and reader from the snapshot; the log size resumed at, or None (none, or refused)."""
        if not self.path.exists():
            return None
        try:
            data = self._verified_body(state)
            restored = ConsentState(state.sealer)
            restored.restore(data["state"])  # well-formed, before anything is restored (and built once)
            reader.restore_position(data["reader"])  # matches the certified chain
            state.take_over(restored)
        except (IntegrityError, ValueError, KeyError, TypeError, grpc.RpcError) as exc:
            problem = exc.message if isinstance(exc, IntegrityError) else type(exc).__name__
            log.warning("consent snapshot refused; replaying the ledger from genesis",
                        extra={"problem": problem, "path": str(self.path)})
            return None
        self.saved_log_size = state.cursor
        log.info("consent state resumed from its snapshot", extra={"log_size": state.cursor})
        return state.cursor

    def _verified_body(self, state: ConsentState) -> dict[str, Any]:
        body = self._file.read()
        if body is None:
            raise IntegrityError("snapshot: the file is gone")
        try:
            sealed = ledger_pb2.SealedData.FromString(body)
        except Exception as exc:  # noqa: BLE001 - signed but undecodable
            raise IntegrityError("snapshot: the sealed body does not decode") from exc
        data = json.loads(state.sealer.open_local(_PURPOSE, sealed))
        if data.get("version") != FORMAT_VERSION:
            raise IntegrityError("snapshot: unknown format version")
        if int(data["reader"]["log_size"]) != int(data["state"]["cursor"]):
            raise IntegrityError("snapshot: the reader and the state are at different log sizes")
        return dict(data)
