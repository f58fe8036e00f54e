"""Patients' keys and records' data keys, released only against consent decision tokens.

Each patient has a key-encryption key (``patient-<pseudonym>``) in the key
manager; each record has a data key stored only in wrapped form, bound to its
patient and record. A data key is released only against a single-use consent
decision token (:class:`carechain.core.decision_claims.DecisionClaims`) bound to
the record and its patient, after the consent service confirms the decision
still holds (so a revocation committed after the decision stops the release).

Batches (``generate_many``, ``release_many``) check every item exactly as the
single call does and answer each with its own result or error; what they share
is the work: one patient-key lookup per patient, one wrap or unwrap request per
patient key (Transit ``batch_input``), one registry transaction. A patient's key
is created once (at registration, or at the first write of a patient registered
before this) and known from then on, instead of a create-or-check per record.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

from carechain.core.crypto import same
from carechain.core.decision_claims import DecisionClaims, data_key_record_id, verify_decision_token
from carechain.core.errors import (
    AlreadyExists,
    CareChainError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
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

# A batch item's answer: its result, or the error the single call would have raised.
Outcome = object
# Consent re-checks (one CheckDecision call each) run on one shared pool of 4 x this many threads.
MAX_PARALLEL_DECISION_CHECKS = 8


_CHECK_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_CHECK_POOL_LOCK = threading.Lock()


def _decision_check_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool for consent re-checks: its threads are reused, not started for every release batch
    (starting them was ~7% of identity's CPU per GetRecord). Up to four batches' worth run at once."""
    global _CHECK_POOL
    with _CHECK_POOL_LOCK:
        if _CHECK_POOL is None:
            _CHECK_POOL = concurrent.futures.ThreadPoolExecutor(4 * MAX_PARALLEL_DECISION_CHECKS,
                                                                thread_name_prefix="check-decision")
        return _CHECK_POOL


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
        with self.hold_all([patient_id]):
            yield

    @contextmanager
    def hold_all(self, patient_ids: Iterable[str]) -> Iterator[None]:
        """Hold several patients' locks, always taken in the same (sorted) order: no deadlock between batches."""
        with self._guard:
            locks = [self._locks.setdefault(p, threading.Lock()) for p in sorted(set(patient_ids))]
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
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
        network_patient: Callable[[str], str] | None = None,
        linked_patients: Callable[[str], list[str]] | None = None,
    ) -> None:
        """check_decision asks consent whether a decision still holds (None: not asked, e.g. in tests).

        network_patient / linked_patients resolve patient identity links (docs/network-identity.md): a
        linked patient's data keys are wrapped under its network identity's key-encryption key. None: no links.
        """
        self._principals = principals
        self._registry = principals.registry
        self._keys = keys
        self._trust = trust
        self._submitter = submitter
        self._check_decision = check_decision
        self._clock = clock
        self._patient_locks = _PatientLocks()
        self._known_lock = threading.Lock()
        self._known_patients: set[str] = set()  # registered, and their key exists
        self._network_patient = network_patient or (lambda patient_id: patient_id)
        self._linked_patients = linked_patients or (lambda network_patient_id: [])

    def key_owner(self, patient_id: str) -> str:
        """The patient whose key-encryption key wraps patient_id's new data keys: its network identity."""
        return self._network_patient(patient_id)

    def create_patient_key(self, patient_id: str) -> None:
        """Create a patient's key-encryption key (at registration) and remember that it exists."""
        self._keys.create_key(patient_key_name(patient_id))
        with self._known_lock:
            self._known_patients.add(patient_id)

    def _require_patient_key(self, patient_id: str) -> None:
        """A registered patient whose key exists; checked and created once per patient, then remembered.

        Patients are never unregistered and their keys are only rotated, never deleted by this service,
        so what was true once stays true.
        """
        with self._known_lock:
            if patient_id in self._known_patients:
                return
        self._principals.require_patient(patient_id)
        self.create_patient_key(patient_id)  # a patient registered before keys were made at registration

    def generate(self, patient_id: str, record_id: str) -> tuple[bytes, str, int]:
        """A new data key for a record: (plaintext, key name, key version); the wrapped form is stored."""
        return _one(self.generate_many([(patient_id, record_id)]))  # type: ignore[return-value]

    def generate_many(self, items: list[tuple[str, str]]) -> list[Outcome]:
        """generate for each (patient_id, record_id): (plaintext, key name, version) or that item's error."""
        results: list[Outcome] = [None] * len(items)
        by_patient: dict[str, list[int]] = defaultdict(list)
        owners: dict[str, str] = {}  # patient -> whose key-encryption key wraps its data keys
        seen: set[str] = set()
        for i, (patient_id, record_id) in enumerate(items):
            if record_id in seen:
                results[i] = AlreadyExists(f"record {record_id} already has a data key")
                continue
            seen.add(record_id)
            try:
                self._require_patient_key(patient_id)
                owners.setdefault(patient_id, self.key_owner(patient_id))
                self._require_patient_key(owners[patient_id])
            except (NotFound, FailedPrecondition) as exc:
                results[i] = exc
                continue
            by_patient[patient_id].append(i)
        if not by_patient:
            return results
        # The owners' locks too: a rotation of the network identity's key must not miss a key made meanwhile.
        with self._patient_locks.hold_all([*by_patient, *owners.values()]):
            made: list[tuple[int, bytes, StoredDataKey]] = []
            for patient_id, indexes in by_patient.items():
                key_name = patient_key_name(owners[patient_id])
                keys = self._keys.generate_data_keys(
                    key_name, [data_key_context(patient_id, items[i][1]) for i in indexes])
                for i, (plaintext, wrapped) in zip(indexes, keys, strict=True):
                    made.append((i, plaintext, StoredDataKey(items[i][1], patient_id, key_name,
                                                             wrapped_key_version(wrapped), wrapped)))
            # The store refuses a record that has a key already (no look-up first: one request less per record
            # on Vault); the key made for it is then forgotten unused.
            stored = self._registry.add_data_keys([key for _, _, key in made])
        for (i, plaintext, key), added in zip(made, stored, strict=True):
            results[i] = ((plaintext, key.key_name, key.key_version) if added
                          else AlreadyExists(f"record {key.record_id} already has a data key"))
        return results

    def release(self, record_id: str, decision_token: str) -> bytes:
        """The plaintext data key of record_id, against a decision token for it; PermissionDenied saying why not."""
        return _one(self.release_many([(record_id, decision_token)]))  # type: ignore[return-value]

    def release_many(self, items: list[tuple[str, str]]) -> list[Outcome]:
        """release for each (record_id, decision_token): the plaintext key, or the error the single call raises.

        Every item is checked on its own (token signature and expiry, record, patient, consent re-check,
        single use); a bad token fails only its item.
        """
        results: list[Outcome] = [None] * len(items)
        claims: dict[int, DecisionClaims] = {}
        for i, (record_id, token) in enumerate(items):
            try:
                claims[i] = self._verify_release_claims(record_id, token)
            except CareChainError as exc:
                results[i] = exc
        stored_keys = self._registry.data_keys([items[i][0] for i in claims])
        for i in list(claims):
            record_id = items[i][0]
            stored = stored_keys.get(record_id)
            if stored is None:
                results[i] = NotFound(f"record {record_id} has no data key")
            elif not same(claims[i].patient_id, stored.patient_id):
                results[i] = PermissionDenied("decision token is for a different patient than the record's")
            if results[i] is not None:
                del claims[i]
        # Just before unwrapping: a revocation committed after the decision was issued still stops it.
        for i, refusal in self._check_decisions({i: items[i][1] for i in claims}).items():
            results[i] = refusal
            del claims[i]
        # Remember each jti as long as its token could still pass verification.
        now_ms = int(self._clock() * 1000)
        fresh = self._registry.use_decision_tokens(
            [(c.decision_id, int((c.expires_at + CLOCK_SKEW_SECONDS) * 1000)) for c in claims.values()], now_ms)
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, unused in zip(list(claims), fresh, strict=True):
            if unused:
                by_key[stored_keys[items[i][0]].key_name].append(i)
            else:
                results[i] = PermissionDenied("decision token already used")
                del claims[i]
        for key_name, indexes in by_key.items():
            unwrapped = self._keys.decrypt_data_keys(key_name, [
                (stored_keys[items[i][0]].wrapped,
                 data_key_context(stored_keys[items[i][0]].patient_id, items[i][0])) for i in indexes])
            for i, plaintext in zip(indexes, unwrapped, strict=True):
                results[i] = plaintext
                if not isinstance(plaintext, CareChainError):
                    log.info("data key released", extra={"record_id": items[i][0], "actor_id": claims[i].actor_id,
                                                         "consent_id": claims[i].consent_id})
        return results

    def _verify_release_claims(self, record_id: str, decision_token: str) -> DecisionClaims:
        """A decision token's claims if it is valid and for record_id (what needs no store); PermissionDenied.

        record_id may name a later version's data key (``<record id>:v<N>``): the permit is for the record,
        whose consent decision already covers every version's categories.
        """
        claims = self._verify_decision_token(decision_token)
        if claims.record_id != data_key_record_id(record_id):
            raise PermissionDenied("decision token is for a different record")
        if not claims.decision_id:
            raise PermissionDenied("decision token has no jti")
        return claims

    def _check_decisions(self, tokens: dict[int, str]) -> dict[int, CareChainError]:
        """Ask consent about each token (a few at once); the refusals. An error reaching consent propagates."""
        if self._check_decision is None or not tokens:
            return {}
        check = self._check_decision

        def refusal(token: str) -> CareChainError | None:
            permitted, reason = check(token)
            return None if permitted else PermissionDenied(reason or "consent revoked")

        many = getattr(check, "many", None)  # consent's CheckDecisions: the whole batch in one call
        if len(tokens) == 1:
            answers = [refusal(t) for t in tokens.values()]
        elif many is not None:
            answers = [None if permitted else PermissionDenied(reason or "consent revoked")
                       for permitted, reason in many(list(tokens.values()))]
        else:
            answers = list(_decision_check_pool().map(refusal, tokens.values()))
        return {i: answer for i, answer in zip(tokens, answers, strict=True) if answer is not None}

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
        """Rotate a patient's key and re-wrap every data key under it: (new version, how many re-wrapped).

        A linked patient's key-encryption key is its network identity's, so that is the one rotated, with the
        data keys of every patient linked to it.
        """
        self._principals.require_patient(patient_id)
        owner = self.key_owner(patient_id)
        key_name = patient_key_name(owner)
        patients = [owner, *self._linked_patients(owner)]
        for linked in patients[1:]:  # keys a failed move at link time left under the linked patient's own key
            self.move_patient_keys(linked, owner)
        with self._patient_locks.hold_all(patients):
            self._keys.create_key(key_name)
            version = self._keys.rotate(key_name)
            stored_keys = [s for p in patients for s in self._registry.patient_data_keys(p) if s.key_name == key_name]
            wrapped = self._keys.rewrap_many(
                key_name, [(s.wrapped, data_key_context(s.patient_id, s.record_id)) for s in stored_keys])
            rewrapped = [dataclasses.replace(s, key_version=version, wrapped=w)
                         for s, w in zip(stored_keys, wrapped, strict=True)]
            self._registry.replace_wrapped_keys(rewrapped)
            # Only now may old versions be refused: every stored key is wrapped under the new one.
            self._keys.set_min_decryption_version(key_name, version)
        self._submitter.sign_and_submit(key_rotation=ledger_pb2.KeyRotation(patient_id=owner, key_version=version))
        log.info("patient key rotated", extra={"patient_id": owner, "key_version": version,
                                               "rewrapped": len(rewrapped)})
        return version, len(rewrapped)

    def move_patient_keys(self, patient_id: str, owner: str) -> int:
        """Re-wrap every stored data key of patient_id under owner's key-encryption key; how many moved.

        At a link owner is the network identity, at an unlink the patient itself. The keys are unwrapped and
        wrapped again inside the key manager's process (Transit: never outside Vault's API), bound to the same
        patient and record as before; the old wrapping stays valid until the registry holds the new one.
        """
        self._principals.require_patient(patient_id)
        self._require_patient_key(owner)
        target = patient_key_name(owner)
        with self._patient_locks.hold_all([patient_id, owner]):
            stored = [s for s in self._registry.patient_data_keys(patient_id) if s.key_name != target]
            by_key: dict[str, list[StoredDataKey]] = defaultdict(list)
            for key in stored:
                by_key[key.key_name].append(key)
            moved: list[StoredDataKey] = []
            for key_name, keys in by_key.items():
                contexts = [data_key_context(k.patient_id, k.record_id) for k in keys]
                plaintexts = self._keys.decrypt_data_keys(key_name, [(k.wrapped, c) for k, c in zip(
                    keys, contexts, strict=True)])
                for plaintext in plaintexts:
                    if isinstance(plaintext, CareChainError):
                        raise plaintext
                wrapped = self._keys.wrap_data_keys(target, list(zip(plaintexts, contexts, strict=True)))  # type: ignore[arg-type]
                moved += [dataclasses.replace(k, key_name=target, key_version=wrapped_key_version(w), wrapped=w)
                          for k, w in zip(keys, wrapped, strict=True)]
            self._registry.replace_wrapped_keys(moved)
        return len(moved)


def _one(outcomes: list[Outcome]) -> object:
    """The only outcome of a batch of one: its result, or its error raised."""
    if isinstance(outcomes[0], BaseException):
        raise outcomes[0]
    return outcomes[0]
