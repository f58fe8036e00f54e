"""Patients' keys and records' data keys, released only against consent decision tokens.

Each patient has a key-encryption key (``patient-<pseudonym>``) in the key
manager; each record has a data key stored only in wrapped form, bound to its
patient and record. A data key is released only against a single-use consent
decision token (:class:`carechain.core.decision_claims.DecisionClaims`) bound to
the record and its patient, after the consent service confirms the decision
still holds (so a revocation committed after the decision stops the release).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from carechain.core.crypto import same
from carechain.core.decision_claims import DecisionClaims, verify_decision_token
from carechain.core.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied, Unauthenticated
from carechain.core.layout import DECISION_ISSUER_ID, TrustBundle
from carechain.core.tokens import CLOCK_SKEW_SECONDS
from carechain.identity.principals import Principals
from carechain.identity.registry import StoredDataKey
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.keyring import KeyManager, wrapped_key_version

log = logging.getLogger("carechain.identity")

# Asks the consent service whether a decision token still holds: (permitted, reason).
CheckDecision = Callable[[str], tuple[bool, str]]


def patient_key_name(patient_id: str) -> str:
    """Name of a patient's key-encryption key in the key manager."""
    return f"patient-{patient_id}"


def data_key_context(patient_id: str, record_id: str) -> bytes:
    """Context a record's wrapped data key is bound to, so it cannot be moved to another record."""
    return f"{patient_id}|{record_id}".encode()


class _PatientLocks:
    """One lock per patient: data key creation and key rotation must not interleave."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, patient_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(patient_id, threading.Lock())
        with lock:
            yield


class DataKeys:
    """Creates, releases and re-wraps records' data keys under their patients' keys."""

    def __init__(
        self,
        principals: Principals,
        keys: KeyManager,
        trust: TrustBundle,
        submitter: ServiceSubmitter,
        check_decision: CheckDecision | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """check_decision asks consent whether a decision still holds (None: not asked, e.g. in tests)."""
        self._principals = principals
        self._registry = principals.registry
        self._keys = keys
        self._trust = trust
        self._submitter = submitter
        self._check_decision = check_decision
        self._clock = clock
        self._patient_locks = _PatientLocks()

    def generate(self, patient_id: str, record_id: str) -> tuple[bytes, str, int]:
        """A new data key for a record: (plaintext, key name, key version); the wrapped form is stored."""
        self._principals.require_patient(patient_id)
        key_name = patient_key_name(patient_id)
        with self._patient_locks.hold(patient_id):
            if self._registry.data_key(record_id) is not None:
                raise AlreadyExists(f"record {record_id} already has a data key")
            self._keys.create_key(key_name)  # no-op after the patient's first record
            plaintext, wrapped = self._keys.generate_data_key(key_name, data_key_context(patient_id, record_id))
            version = wrapped_key_version(wrapped)
            self._registry.add_data_key(StoredDataKey(record_id, patient_id, key_name, version, wrapped))
        return plaintext, key_name, version

    def release(self, record_id: str, decision_token: str) -> bytes:
        """The plaintext data key of record_id, against a decision token for it; PermissionDenied saying why not."""
        claims = self._verify_decision_token(decision_token)
        if claims.record_id != record_id:
            raise PermissionDenied("decision token is for a different record")
        stored = self._registry.data_key(record_id)
        if stored is None:
            raise NotFound(f"record {record_id} has no data key")
        if not same(claims.patient_id, stored.patient_id):
            raise PermissionDenied("decision token is for a different patient than the record's")
        if not claims.decision_id:
            raise PermissionDenied("decision token has no jti")
        if self._check_decision is not None:
            # Just before unwrapping: a revocation committed after the decision was issued still stops it.
            permitted, reason = self._check_decision(decision_token)
            if not permitted:
                raise PermissionDenied(reason or "consent revoked")
        # Remember the jti as long as the token could still pass verification.
        used_until_ms = int((claims.expires_at + CLOCK_SKEW_SECONDS) * 1000)
        if not self._registry.use_decision_token(claims.decision_id, used_until_ms, int(self._clock() * 1000)):
            raise PermissionDenied("decision token already used")
        plaintext = self._keys.decrypt_data_key(
            stored.key_name, stored.wrapped, data_key_context(stored.patient_id, record_id)
        )
        log.info(
            "data key released",
            extra={"record_id": record_id, "actor_id": claims.actor_id, "consent_id": claims.consent_id},
        )
        return plaintext

    def delete(self, record_id: str, patient_id: str) -> None:
        """Delete a record's wrapped key; only for a write audited as attempted and never on the ledger.

        The records service's reconciler is the only caller (ACCESS); NotFound when the record has no key of
        that patient.
        """
        with self._patient_locks.hold(patient_id):
            if not self._registry.remove_data_key(record_id, patient_id):
                raise NotFound(f"record {record_id} has no data key of this patient")
        log.info("orphan data key deleted", extra={"record_id": record_id})

    def _verify_decision_token(self, token: str) -> DecisionClaims:
        """The claims of a consent decision token for this service, or PermissionDenied saying why not."""
        if not token:
            raise PermissionDenied("a consent decision token is required")
        consent_key = self._trust.key(DECISION_ISSUER_ID)
        if consent_key is None:
            raise FailedPrecondition(f"trust bundle lacks the decision issuer key {DECISION_ISSUER_ID}")
        try:
            return verify_decision_token(token, consent_key)
        except Unauthenticated as exc:
            # The records service is authenticated; the decision token is an authorisation artefact.
            raise PermissionDenied(f"decision token rejected: {exc.message}") from exc

    def rotate_patient_key(self, patient_id: str) -> tuple[int, int]:
        """Rotate a patient's key and re-wrap every data key under it: (new version, how many re-wrapped)."""
        self._principals.require_patient(patient_id)
        key_name = patient_key_name(patient_id)
        with self._patient_locks.hold(patient_id):
            self._keys.create_key(key_name)
            version = self._keys.rotate(key_name)
            rewrapped = [
                dataclasses.replace(
                    stored,
                    key_version=version,
                    wrapped=self._keys.rewrap(key_name, stored.wrapped, data_key_context(patient_id, stored.record_id)),
                )
                for stored in self._registry.patient_data_keys(patient_id)
            ]
            self._registry.replace_wrapped_keys(rewrapped)
            # Only now may old versions be refused: every stored key is wrapped under the new one.
            self._keys.set_min_decryption_version(key_name, version)
        self._submitter.sign_and_submit(key_rotation=ledger_pb2.KeyRotation(patient_id=patient_id, key_version=version))
        log.info("patient key rotated", extra={"patient_id": patient_id, "key_version": version,
                                               "rewrapped": len(rewrapped)})
        return version, len(rewrapped)
