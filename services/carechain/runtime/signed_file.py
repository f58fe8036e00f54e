"""Signed files: a service's snapshot of derived state, written atomically and trusted only if its signature verifies.

A service that folds the ledger (consent, and the principal-status follower of
every service) saves what it derived so that a restart resumes instead of
replaying history. The file is a JSON envelope::

    {"body": "<hex of the body bytes>", "signer_id": "<key id>", "signature": "<hex>"}

signed by the service's own key over ``domain + SHA-256(body)`` (the domain
names the kind and version of snapshot, so one kind of signed file can never
be passed off as another). It is written to a temporary file (0600, in a 0700 directory), fsynced
and renamed over the old one, then the directory is fsynced, so a crash
leaves the old snapshot or the new one, never a torn file.

:meth:`SignedFile.read` returns the body only if the signer id is the
expected one and the signature verifies; anything else raises
:class:`carechain.core.errors.IntegrityError` (the caller logs it and replays
from the start, as without a snapshot). Whether the body still matches the
ledger (same chain, same history) is the caller's check.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable

from carechain.core.crypto import Signer, verify_signature
from carechain.core.errors import IntegrityError
from carechain.core.files import PRIVATE_FILE_MODE, private_dir


class SignedFile:
    """One signed file at path: written by signer, read back only if signed by signer's key (module docstring)."""

    def __init__(self, path: pathlib.Path, signer: Signer | Callable[[], Signer], domain: bytes,
                 public_key: bytes | None = None) -> None:
        """domain separates kinds of signed files; public_key verifies (default: the signer's own key).

        signer may be a function returning it, called at the first read or write (a Vault signer of a
        service that starts before Vault is reachable).
        """
        self.path = pathlib.Path(path)
        self._signer_source = signer
        self._domain = domain
        self._public_key = public_key

    def _signer(self) -> Signer:
        source = self._signer_source
        return source if hasattr(source, "sign") else source()  # type: ignore[operator, return-value]

    def _message(self, body: bytes) -> bytes:
        return self._domain + hashlib.sha256(body).digest()

    def write(self, body: bytes) -> None:
        """Sign body and replace the file with it atomically (0600, fsynced, directory fsynced)."""
        signer = self._signer()
        envelope = {"body": body.hex(), "signer_id": signer.key_id, "signature": signer.sign(self._message(body)).hex()}
        private_dir(self.path.parent)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w") as out:
            json.dump(envelope, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def read(self) -> bytes | None:
        """The signed body; None when there is no file; IntegrityError when unreadable or not validly signed."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IntegrityError(f"{self.path.name}: cannot be read ({type(exc).__name__})") from None
        try:
            envelope = json.loads(text)
            body = bytes.fromhex(str(envelope["body"]))
            signature = bytes.fromhex(str(envelope["signature"]))
            signer_id = envelope.get("signer_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{self.path.name}: not a signed file") from None
        signer = self._signer()
        public_key = self._public_key if self._public_key is not None else signer.public_key_bytes()
        if signer_id != signer.key_id or not verify_signature(public_key, signature, self._message(body)):
            raise IntegrityError(f"{self.path.name}: the signature does not verify with this service's key")
        return body
