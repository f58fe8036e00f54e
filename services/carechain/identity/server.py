"""The identity service: principals, access tokens and patients' keys.

- Principals are registered here and on the ledger (without names or FHIR ids).
  A patient's display name and FHIR id are shown only to the patient, their
  delegates and their organisation (services get the FHIR id, never the name).
- Who may call what is the :data:`ACCESS` table (docs/security.md).
- Access tokens are issued after proof of possession of a principal's key.
- Each patient has a key-encryption key (``patient-<pseudonym>``) in the key
  manager; each record has a data key stored only in wrapped form, released
  only against a single-use consent decision token bound to the record,
  after the consent service confirms the decision still holds (revocation).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc

from carechain.client.auth import TokenSource, token_request_message
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer, Signer, load_public_key, same, verify_signature
from carechain.core.errors import (
    AlreadyExists,
    CareChainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from carechain.core.layout import (
    DECISION_ISSUER_ID,
    OPERATOR_ID,
    SERVICES,
    TOKEN_ISSUER_ID,
    TrustBundle,
    audience,
    service_principal_id,
)
from carechain.core.tokens import ACCESS_TOKEN_TYPE, CLOCK_SKEW_SECONDS, DECISION_TOKEN_TYPE, issue_token, verify_token
from carechain.identity.registry import (
    IdentityStore,
    PrincipalRecord,
    Registry,
    StoredDataKey,
    new_organization_id,
    new_practitioner_id,
)
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.access import ANY, AccessTable, Allow, Scope, own_patient_field
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import IdentitySettings
from carechain.runtime.keyring import KeyManager, LocalKeyring, wrapped_key_version
from carechain.runtime.peers import Peers
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import Register, register_servicer, run_service

if TYPE_CHECKING:
    import hvac

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind

# Submits a signed transaction to the ledger; raises when the validator marks it invalid.
SubmitTransaction = Callable[[ledger_pb2.Transaction], ledger_pb2.SubmitTransactionResponse]
# Asks the consent service whether a decision token still holds: (permitted, reason).
CheckDecision = Callable[[str], tuple[bool, str]]
# Asks the consent service whether principal (2nd) is an active delegate of patient (1st).
IsDelegate = Callable[[str, str], bool]

KEYRING_DIR = "keyring"
CHALLENGE_BYTES = 32
MAX_DISPLAY_NAME = 200
REGISTRABLE_KINDS = (Kind.PRINCIPAL_KIND_ORGANIZATION, Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT,
                     Kind.PRINCIPAL_KIND_AUDITOR)
# Registered by the operator; the others by their organisation.
NETWORK_KINDS = (Kind.PRINCIPAL_KIND_ORGANIZATION, Kind.PRINCIPAL_KIND_AUDITOR)
MEMBER_KINDS = (Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT)
AUDITOR_ID_PREFIX = "aud-"
AUDIENCES = frozenset(audience(s) for s in SERVICES)
_SPECIALTY = re.compile(r"^[a-z]+(-[a-z]+)*$")
# FHIR R4 "id" datatype.
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Same message for an unknown principal and a bad signature, so ids cannot be probed.
_NOT_PROVEN = "unknown principal or invalid signature"


def patient_key_name(patient_id: str) -> str:
    """Name of a patient's key-encryption key in the key manager."""
    return f"patient-{patient_id}"


def data_key_context(patient_id: str, record_id: str) -> bytes:
    """Context a record's wrapped data key is bound to, so it cannot be moved to another record."""
    return f"{patient_id}|{record_id}".encode()


def local_token_source(signer: Signer, ttl_seconds: float) -> TokenSource:
    """Access tokens for the identity service itself, minted locally (it is the issuer)."""
    caller = Caller(signer.key_id, Kind.PRINCIPAL_KIND_SERVICE)

    def fetch(token_audience: str) -> tuple[str, int]:
        return issue_token(signer, ACCESS_TOKEN_TYPE, caller_claims(caller, token_audience), ttl_seconds)

    return TokenSource(fetch)


def _operator_registers(caller: Caller, request: identity_pb2.RegisterPrincipalRequest, servicer: object) -> None:
    if caller.principal_id != OPERATOR_ID:
        raise PermissionDenied("only the network operator registers organisations and auditors")
    if request.kind in MEMBER_KINDS:
        raise PermissionDenied("only an organisation registers its practitioners and patients")


def _organization_registers(caller: Caller, request: identity_pb2.RegisterPrincipalRequest, servicer: object) -> None:
    if request.kind in NETWORK_KINDS:
        raise PermissionDenied("only the network operator registers organisations and auditors")
    if request.organization_id and request.organization_id != caller.principal_id:
        raise PermissionDenied("organization_id must be the calling organisation")


SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
# Who may call what (docs/security.md).
def _registering_authority(caller: Caller, request: Any, servicer: IdentityServicer) -> None:
    servicer.lifecycle_target(caller, request.principal_id)


_REGISTERING_AUTHORITY = Scope("registering authority", "principals it registered (the operator: organisations)",
                               _registering_authority)

ACCESS = AccessTable(SERVICE, {
    "RegisterPrincipal": Allow.of(
        operator=Scope("network members", "organisations and auditors", _operator_registers),
        organization=Scope("own members", "its own practitioners and patients", _organization_registers),
    ),
    "GetPrincipal": Allow.everyone("a patient's display name and FHIR id only to the patient, their delegates and "
                                   "their organisation; services get the FHIR id"),
    "CreateChallenge": Allow.anonymous("proof of possession, step 1"),
    "IssueToken": Allow.anonymous("proof of possession, step 2"),
    "GetTokenIssuerKeys": Allow.anonymous("public keys"),
    "GenerateDataKey": Allow.of(service=ANY, services=["records"]),
    "ReleaseDataKey": Allow.of(service=ANY, services=["records"], note="with a single-use consent decision token"),
    "DeleteDataKey": Allow.of(service=ANY, services=["records"], note="its reconciler: keys of writes never committed"),
    "RotatePatientKey": Allow.of(patient=own_patient_field(required=True), operator=ANY),
    "DeactivatePrincipal": Allow.of(organization=_REGISTERING_AUTHORITY, operator=_REGISTERING_AUTHORITY),
    "RotatePrincipalKey": Allow.of(organization=_REGISTERING_AUTHORITY, operator=_REGISTERING_AUTHORITY),
})


def new_auditor_id() -> str:
    """A fresh auditor id."""
    return AUDITOR_ID_PREFIX + uuid.uuid4().hex


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


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """Implements carechain.identity.v1.IdentityService."""

    def __init__(
        self,
        *,
        signer: Signer,
        trust: TrustBundle,
        registry: IdentityStore,
        keys: KeyManager,
        submit_transaction: SubmitTransaction,
        chain_id: str,
        token_ttl_seconds: float,
        challenge_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
        check_decision: CheckDecision | None = None,
        is_delegate: IsDelegate | None = None,
        principal_status: PrincipalStatus | None = None,
    ) -> None:
        self._signer = signer
        self._is_delegate = is_delegate
        self._status = principal_status
        self._check_decision = check_decision
        self._trust = trust
        self._registry = registry
        self._keys = keys
        self._submit = submit_transaction
        self._chain_id = chain_id
        self._token_ttl = token_ttl_seconds
        self._challenge_ttl = challenge_ttl_seconds
        self._clock = clock
        self._auth = Authenticator(trust, audience("identity"), principal_status)
        self._registration_lock = threading.Lock()
        self._patient_locks = _PatientLocks()

    # --- principals ------------------------------------------------------------

    def RegisterPrincipal(self, request, context):  # noqa: N802 - gRPC method name
        caller = caller_of(context)
        kind = request.kind
        if kind not in REGISTRABLE_KINDS:
            raise InvalidArgument("kind", "must be ORGANIZATION, AUDITOR, PRACTITIONER or PATIENT")
        organization_id = self._check_registrar(caller, kind, request.organization_id)
        display_name = request.display_name.strip()
        if not display_name:
            raise InvalidArgument("display_name", "is required")
        if len(display_name) > MAX_DISPLAY_NAME:
            raise InvalidArgument("display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
        _check_public_key(request.public_key)
        _check_kind_attributes(kind, request.specialty, request.fhir_patient_id)

        with self._registration_lock:
            if kind == Kind.PRINCIPAL_KIND_ORGANIZATION:
                principal_id = new_organization_id()
            elif kind == Kind.PRINCIPAL_KIND_AUDITOR:
                principal_id = new_auditor_id()
            elif kind == Kind.PRINCIPAL_KIND_PRACTITIONER:
                principal_id = new_practitioner_id()
            else:
                principal_id = self._registry.patient_pseudonym(organization_id, request.fhir_patient_id)
                if self._registry.principal(principal_id) is not None:
                    raise AlreadyExists(f"patient is already registered as {principal_id}")
            # Only public attributes go on the ledger: no display name, no FHIR id.
            entry = ledger_pb2.RegisterPrincipal(
                principal_id=principal_id,
                kind=kind,
                public_key=request.public_key,
                organization_id=organization_id,
                specialty=request.specialty,
                # The calling organisation (checked by _check_registrar) attests the specialty on the ledger.
                specialty_attested_by=organization_id if request.specialty else "",
            )
            committed = self._submit_to_ledger(register_principal=entry)
            principal = PrincipalRecord(
                principal_id=principal_id,
                kind=kind,
                display_name=display_name,
                public_key=request.public_key,
                organization_id=organization_id,
                specialty=request.specialty,
                fhir_patient_id=request.fhir_patient_id,
                ledger_log_index=committed.log_index,
            )
            self._registry.add_principal(principal)
        log.info(
            "principal registered",
            extra={"principal_id": principal_id, "kind": Kind.Name(kind), "log_index": committed.log_index},
        )
        return _principal_message(principal, show_private=True, show_fhir_id=True)

    def _check_registrar(self, caller: Caller, kind: int, organization_id: str) -> str:
        """The new principal's organisation (who may register what is checked by ACCESS)."""
        if kind in NETWORK_KINDS:
            if organization_id:
                raise InvalidArgument("organization_id", "must be empty for an organisation or an auditor")
            return ""
        return caller.principal_id

    def GetPrincipal(self, request, context):  # noqa: N802 - gRPC method name
        caller = caller_of(context)
        if not request.principal_id:
            raise InvalidArgument("principal_id", "is required")
        principal = self._registry.principal(request.principal_id)
        if principal is None:
            trusted = self._trusted_principal(request.principal_id)
            if trusted is None:
                raise NotFound(f"principal {request.principal_id} is not registered")
            return identity_pb2.Principal(
                principal_id=trusted.principal_id, kind=trusted.kind, display_name=trusted.principal_id,
                public_key=self._trust.key(trusted.principal_id) or b"",
            )
        if principal.kind != Kind.PRINCIPAL_KIND_PATIENT:
            # Organisations, practitioners and auditors are known to the network by name.
            return self._current_principal_message(principal, show_private=True, show_fhir_id=False)
        private = self._may_see_patient(caller, principal)
        return self._current_principal_message(principal, show_private=private,
                                              show_fhir_id=private or caller.is_service)

    def _may_see_patient(self, caller: Caller, patient: PrincipalRecord) -> bool:
        """Whether caller may see a patient's display name and FHIR id: self, their organisation, a delegate."""
        if caller.principal_id == patient.principal_id:
            return True
        if caller.kind == Kind.PRINCIPAL_KIND_ORGANIZATION:
            return caller.principal_id == patient.organization_id
        if caller.kind in (Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_PRACTITIONER) and self._is_delegate:
            try:
                return self._is_delegate(patient.principal_id, caller.principal_id)
            except (grpc.RpcError, CareChainError) as exc:
                # Fail closed: without the consent service's answer, only the public fields.
                log.warning("cannot check delegation", extra={"reason": type(exc).__name__})
        return False

    # --- proof of possession and access tokens ---------------------------------

    def CreateChallenge(self, request, context):  # noqa: N802 - gRPC method name
        principal_id = _require_principal_id(request.principal_id)
        # Issued for any id, known or not, so the answer does not reveal who is registered.
        challenge = os.urandom(CHALLENGE_BYTES)
        now_ms = self._now_ms()
        expires_at_ms = now_ms + int(self._challenge_ttl * 1000)
        self._registry.add_challenge(principal_id, challenge, expires_at_ms, now_ms)
        return identity_pb2.Challenge(challenge=challenge, expires_at_ms=expires_at_ms)

    def IssueToken(self, request, context):  # noqa: N802 - gRPC method name
        principal_id = _require_principal_id(request.principal_id)
        if request.audience not in AUDIENCES:
            raise InvalidArgument("audience", f"must be one of {', '.join(sorted(AUDIENCES))}")
        if not request.challenge:
            raise InvalidArgument("challenge", "is required (from CreateChallenge)")
        if not self._registry.take_challenge(principal_id, request.challenge, self._now_ms()):
            raise Unauthenticated("challenge is unknown, already used or expired")
        if self._status is not None:
            self._refresh_status()  # first: the key _resolve returns must be the current (rotated) one
        resolved = self._resolve(principal_id)
        if resolved is not None and self._status is not None:
            if self._status.deactivated(principal_id):
                # The same answer as a failed proof: a token request learns nothing about lifecycle.
                log.info("token refused: principal deactivated", extra={"principal_id": principal_id})
                raise Unauthenticated(_NOT_PROVEN)
        message = token_request_message(request.audience, request.challenge)
        if resolved is None or not verify_signature(resolved[1], request.signature, message):
            raise Unauthenticated(_NOT_PROVEN)
        caller, _ = resolved
        token, expires_at_ms = issue_token(
            self._signer, ACCESS_TOKEN_TYPE, caller_claims(caller, request.audience), self._token_ttl
        )
        log.info("token issued", extra={"principal_id": principal_id, "audience": request.audience})
        return identity_pb2.AccessToken(token=token, expires_at_ms=expires_at_ms)

    def _resolve(self, principal_id: str) -> tuple[Caller, bytes] | None:
        """The caller identity and public key of a trusted or registered principal."""
        trusted = self._trusted_principal(principal_id)
        if trusted is not None:
            return trusted, self._trust.key(principal_id) or b""
        principal = self._registry.principal(principal_id)
        if principal is None:
            return None
        # An organisation acts for itself: its own id is its organisation claim.
        organization_id = (
            principal.principal_id if principal.kind == Kind.PRINCIPAL_KIND_ORGANIZATION else principal.organization_id
        )
        caller = Caller(principal.principal_id, principal.kind, organization_id, principal.specialty)
        # After a RotatePrincipalKey only the new key proves possession.
        rotated = self._status.current_key(principal_id) if self._status is not None else None
        return caller, rotated or principal.public_key

    def _refresh_status(self) -> None:
        """Catch up with lifecycle transactions before issuing a token (the known set if the ledger is down)."""
        if self._status is None:
            return
        try:
            self._status.sync()
        except Exception:  # noqa: BLE001 - the follower's last known deactivations still apply
            log.debug("principal lifecycle not refreshed before issuing a token")

    def _trusted_principal(self, principal_id: str) -> Caller | None:
        """The operator or a CareChain service from the trust bundle."""
        if self._trust.key(principal_id) is None:
            return None
        if principal_id == OPERATOR_ID:
            return Caller(OPERATOR_ID, Kind.PRINCIPAL_KIND_OPERATOR)
        if principal_id in {service_principal_id(s) for s in SERVICES}:
            return Caller(principal_id, Kind.PRINCIPAL_KIND_SERVICE)
        return None

    def GetTokenIssuerKeys(self, request, context):  # noqa: N802 - gRPC method name
        return identity_pb2.TokenIssuerKeys(
            keys=[identity_pb2.IssuerKey(key_id=self._signer.key_id, public_key=self._signer.public_key_bytes())]
        )

    # --- data keys -------------------------------------------------------------

    def GenerateDataKey(self, request, context):  # noqa: N802 - gRPC method name
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        record_id = _require_record_id(request.record_id)
        self._require_patient(request.patient_id)
        key_name = patient_key_name(request.patient_id)
        with self._patient_locks.hold(request.patient_id):
            if self._registry.data_key(record_id) is not None:
                raise AlreadyExists(f"record {record_id} already has a data key")
            self._keys.create_key(key_name)  # no-op after the patient's first record
            plaintext, wrapped = self._keys.generate_data_key(key_name, data_key_context(request.patient_id, record_id))
            version = wrapped_key_version(wrapped)
            self._registry.add_data_key(StoredDataKey(record_id, request.patient_id, key_name, version, wrapped))
        return identity_pb2.DataKey(
            plaintext_key=plaintext,
            key_ref=identity_pb2.KeyReference(key_name=key_name, key_version=version, record_id=record_id),
        )

    def ReleaseDataKey(self, request, context):  # noqa: N802 - gRPC method name
        record_id = _require_record_id(request.record_id)
        claims = self._verify_decision_token(request.decision_token)
        if claims.get("rid") != record_id:
            raise PermissionDenied("decision token is for a different record")
        stored = self._registry.data_key(record_id)
        if stored is None:
            raise NotFound(f"record {record_id} has no data key")
        if not isinstance(claims.get("psn"), str) or not same(claims["psn"], stored.patient_id):
            raise PermissionDenied("decision token is for a different patient than the record's")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise PermissionDenied("decision token has no jti")
        if self._check_decision is not None:
            # Just before unwrapping: a revocation committed after the decision was issued still stops it.
            permitted, reason = self._check_decision(request.decision_token)
            if not permitted:
                raise PermissionDenied(reason or "consent revoked")
        # Remember the jti as long as the token could still pass verification.
        used_until_ms = int((float(claims["exp"]) + CLOCK_SKEW_SECONDS) * 1000)
        if not self._registry.use_decision_token(jti, used_until_ms, self._now_ms()):
            raise PermissionDenied("decision token already used")
        plaintext = self._keys.decrypt_data_key(
            stored.key_name, stored.wrapped, data_key_context(stored.patient_id, record_id)
        )
        log.info(
            "data key released",
            extra={"record_id": record_id, "actor_id": str(claims.get("sub", "")), "consent_id": claims.get("cid")},
        )
        return identity_pb2.ReleasedDataKey(plaintext_key=plaintext)

    def DeleteDataKey(self, request, context):  # noqa: N802 - gRPC method name
        # Only records calls this, for a write it audited as attempted and never found on the ledger.
        record_id = _require_record_id(request.record_id)
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        with self._patient_locks.hold(request.patient_id):
            if not self._registry.remove_data_key(record_id, request.patient_id):
                raise NotFound(f"record {record_id} has no data key of this patient")
        log.info("orphan data key deleted", extra={"record_id": record_id})
        return identity_pb2.DeleteDataKeyResponse()

    def _verify_decision_token(self, token: str) -> dict[str, object]:
        """Claims of a consent decision token for this service, or PermissionDenied saying why not."""
        if not token:
            raise PermissionDenied("a consent decision token is required")
        consent_key = self._trust.key(DECISION_ISSUER_ID)
        if consent_key is None:
            raise FailedPrecondition(f"trust bundle lacks the decision issuer key {DECISION_ISSUER_ID}")
        try:
            return verify_token(token, {DECISION_ISSUER_ID: consent_key}, DECISION_TOKEN_TYPE, audience("identity"))
        except Unauthenticated as exc:
            # The records service is authenticated; the decision token is an authorisation artefact.
            raise PermissionDenied(f"decision token rejected: {exc.message}") from exc

    def RotatePatientKey(self, request, context):  # noqa: N802 - gRPC method name
        patient_id = request.patient_id  # ACCESS: the patient themselves, or the operator
        if not patient_id:
            raise InvalidArgument("patient_id", "is required")
        self._require_patient(patient_id)
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
        self._submit_to_ledger(key_rotation=ledger_pb2.KeyRotation(patient_id=patient_id, key_version=version))
        log.info("patient key rotated", extra={"patient_id": patient_id, "key_version": version,
                                               "rewrapped": len(rewrapped)})
        return identity_pb2.RotatePatientKeyResponse(key_version=version, rewrapped=len(rewrapped))

    # --- principal lifecycle ---------------------------------------------------

    def DeactivatePrincipal(self, request, context):  # noqa: N802 - gRPC method name
        principal = self.lifecycle_target(caller_of(context), request.principal_id)
        self._submit_to_ledger(deactivate_principal=ledger_pb2.DeactivatePrincipal(
            principal_id=principal.principal_id))
        self._refresh_status()
        log.info("principal deactivated", extra={"principal_id": principal.principal_id})
        return self._current_principal_message(principal)

    def RotatePrincipalKey(self, request, context):  # noqa: N802 - gRPC method name
        principal = self.lifecycle_target(caller_of(context), request.principal_id)
        _check_public_key(request.public_key)
        self._submit_to_ledger(rotate_principal_key=ledger_pb2.RotatePrincipalKey(
            principal_id=principal.principal_id, public_key=request.public_key))
        self._refresh_status()
        log.info("principal key rotated", extra={"principal_id": principal.principal_id})
        return self._current_principal_message(principal)

    def lifecycle_target(self, caller: Caller, principal_id: str) -> PrincipalRecord:
        """The registered principal the caller may deactivate or re-key: it is its registering authority."""
        principal = self._registry.principal(_require_principal_id(principal_id))
        if principal is None:
            raise NotFound(f"principal {principal_id} is not registered")
        if principal.kind == Kind.PRINCIPAL_KIND_ORGANIZATION:
            allowed = caller.kind == Kind.PRINCIPAL_KIND_OPERATOR and caller.principal_id == OPERATOR_ID
        else:
            allowed = (
                caller.kind == Kind.PRINCIPAL_KIND_ORGANIZATION and caller.principal_id == principal.organization_id
            )
        if not allowed:
            raise PermissionDenied("only the principal's registering organisation (the operator for an organisation)")
        return principal

    def _current_principal_message(
        self, principal: PrincipalRecord, *, show_private: bool = False, show_fhir_id: bool = False
    ) -> identity_pb2.Principal:
        """The principal as registered, with its current (possibly rotated) public key."""
        message = _principal_message(principal, show_private=show_private, show_fhir_id=show_fhir_id)
        rotated = self._status.current_key(principal.principal_id) if self._status is not None else None
        if rotated:
            message.public_key = rotated
        return message

    # --- helpers ---------------------------------------------------------------

    def _require_patient(self, patient_id: str) -> PrincipalRecord:
        patient = self._registry.principal(patient_id)
        if patient is None or patient.kind != Kind.PRINCIPAL_KIND_PATIENT:
            raise NotFound(f"patient {patient_id} is not registered")
        return patient

    def _submit_to_ledger(self, **payload: object) -> ledger_pb2.SubmitTransactionResponse:
        """Sign a transaction as this service and submit it; PermissionDenied if the ledger rejects it."""
        body = transactions.new_body(self._chain_id, self._signer.key_id, **payload)
        response = self._submit(transactions.sign_transaction(body, self._signer))
        if not response.valid:
            raise PermissionDenied(f"ledger rejected the transaction: {response.reason}")
        return response

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _principal_message(principal: PrincipalRecord, *, show_private: bool, show_fhir_id: bool) -> identity_pb2.Principal:
    return identity_pb2.Principal(
        principal_id=principal.principal_id,
        kind=principal.kind,
        display_name=principal.display_name if show_private else "",
        public_key=principal.public_key,
        organization_id=principal.organization_id,
        specialty=principal.specialty,
        fhir_patient_id=principal.fhir_patient_id if show_fhir_id else "",
        ledger_log_index=principal.ledger_log_index,
    )


def _check_public_key(public_key: bytes) -> None:
    if len(public_key) != 32:
        raise InvalidArgument("public_key", f"must be a raw 32-byte Ed25519 public key, got {len(public_key)} bytes")
    try:
        load_public_key(public_key)
    except ValueError as exc:
        raise InvalidArgument("public_key", "is not a valid Ed25519 public key") from exc


def _check_kind_attributes(kind: int, specialty: str, fhir_patient_id: str) -> None:
    if kind == Kind.PRINCIPAL_KIND_PRACTITIONER:
        if not _SPECIALTY.match(specialty):
            raise InvalidArgument(
                "specialty", "required for practitioners: a lower-case code such as oncology or general-practice"
            )
    elif specialty:
        raise InvalidArgument("specialty", "only practitioners have a specialty")
    if kind == Kind.PRINCIPAL_KIND_PATIENT:
        if not _FHIR_ID.match(fhir_patient_id):
            raise InvalidArgument("fhir_patient_id", "required for patients: a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    elif fhir_patient_id:
        raise InvalidArgument("fhir_patient_id", "only patients have a FHIR patient id")


def _require_principal_id(principal_id: str) -> str:
    if not _PRINCIPAL_ID.match(principal_id):
        raise InvalidArgument("principal_id", "is required: 1-128 of letters, digits, '.', '_', '-'")
    return principal_id


def _require_record_id(record_id: str) -> str:
    if not _RECORD_ID.match(record_id):
        raise InvalidArgument("record_id", "is required: 1-128 of letters, digits, '.', '_', ':', '-'")
    return record_id


def consent_check(consent_stub: object) -> CheckDecision:
    """CheckDecision through ConsentService.CheckDecision (errors reaching consent propagate: fail closed)."""
    from carechain.consent.v1 import consent_pb2

    def check(decision_token: str) -> tuple[bool, str]:
        response = consent_stub.CheckDecision(  # type: ignore[attr-defined]
            consent_pb2.CheckDecisionRequest(decision_token=decision_token)
        )
        return response.permitted, response.reason

    return check


def consent_delegates(consent_stub: object) -> IsDelegate:
    """IsDelegate through ConsentService.ListDelegates (called as svc-identity)."""
    from carechain.consent.v1 import consent_pb2

    def is_delegate(patient_id: str, principal_id: str) -> bool:
        response = consent_stub.ListDelegates(  # type: ignore[attr-defined]
            consent_pb2.ListDelegatesRequest(patient_id=patient_id)
        )
        now_ms = int(time.time() * 1000)
        return any(
            d.delegate_id == principal_id and d.status == consent_pb2.DELEGATION_STATUS_ACTIVE
            and d.period.start_ms <= now_ms and (not d.period.end_ms or now_ms < d.period.end_ms)
            for d in response.delegations
        )

    return is_delegate


def build(
    settings: IdentitySettings, submit_transaction: SubmitTransaction | None = None
) -> tuple[Register, list[Callable[[], None]]]:
    """The identity servicer, its stores and signer chosen by settings.

    - key_backend=local: SQLite registry and local keyring under settings.data_dir;
      key_backend=vault: registry in Vault KV v2, patients' keys in Vault Transit
      (nothing on local disk: identity can run as a stateless Deployment).
    - signing_backend=file: settings.signing_key_file; vault: Transit key
      settings.signing_key_name (default svc-identity).

    submit_transaction defaults to the ledger at settings.ledger_address,
    called with access tokens this service mints for itself.
    """
    vault = None
    if settings.key_backend == "vault" or settings.signing_backend == "vault":
        from carechain.runtime.vault import vault_client

        vault = vault_client(settings)
    signer = _signer(settings, vault)
    trust = TrustBundle.load(settings.trust_dir)
    trusted_key = trust.key(TOKEN_ISSUER_ID)
    if trusted_key is None or not same(trusted_key, signer.public_key_bytes()):
        raise FailedPrecondition(
            f"CARECHAIN_SIGNING_KEY_FILE: key does not match {TOKEN_ISSUER_ID}.pub in CARECHAIN_TRUST_DIR"
        )
    closers: list[Callable[[], None]] = []
    peers = Peers(settings, local_token_source(signer, settings.token_ttl_seconds))
    closers.append(peers.close)
    if submit_transaction is None:

        def submit_transaction(tx: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
            from carechain.ledger.submission import submit

            return submit(peers.ledger, tx)

    registry, keyring = _stores(settings, vault)
    closers += [registry.close, keyring.close]
    principal_status = PrincipalStatus.following(lambda: peers.ledger).start()
    closers.append(principal_status.close)
    servicer = IdentityServicer(
        signer=signer,
        trust=trust,
        registry=registry,
        keys=keyring,
        submit_transaction=submit_transaction,
        chain_id=settings.chain_id,
        token_ttl_seconds=settings.token_ttl_seconds,
        challenge_ttl_seconds=settings.challenge_ttl_seconds,
        check_decision=consent_check(peers.consent) if settings.check_decisions else None,
        is_delegate=consent_delegates(peers.consent),
        principal_status=principal_status,
    )

    return register_identity(servicer), closers


def register_identity(servicer: IdentityServicer) -> Register:
    """A register function adding servicer, guarded by ACCESS, to a server."""
    return register_servicer(identity_pb2_grpc.add_IdentityServiceServicer_to_server, servicer, ACCESS, servicer._auth)


def _signer(settings: IdentitySettings, vault: hvac.Client | None) -> Signer:
    if settings.signing_backend == "file":
        return Ed25519Signer.from_file(TOKEN_ISSUER_ID, settings.signing_key_file)
    from carechain.runtime.vault import service_signer

    return service_signer(settings, "identity", vault)


def _stores(settings: IdentitySettings, vault: hvac.Client | None) -> tuple[IdentityStore, KeyManager]:
    """The registry and key manager for settings.key_backend (each has a close())."""
    if settings.key_backend == "local":
        return Registry(settings.data_dir), LocalKeyring(settings.data_dir / KEYRING_DIR)
    from carechain.identity.vault_registry import VaultRegistry
    from carechain.runtime.vault_keyring import VaultTransitKeyManager

    assert vault is not None
    registry = VaultRegistry(vault, kv_mount=settings.vault_kv_mount, transit_mount=settings.vault_transit_mount)
    return registry, VaultTransitKeyManager(vault, settings.vault_transit_mount)


def main() -> None:
    """Run the identity service configured from CARECHAIN_* environment variables."""
    settings = IdentitySettings()
    register, closers = build(settings)
    run_service("identity", settings, register, closers)
