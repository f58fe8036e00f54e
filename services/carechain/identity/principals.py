"""Principals: registration, who sees what of them, deactivation and key rotation.

Principals are registered here and on the ledger (without names or FHIR ids).
A patient's display name and FHIR id are shown only to the patient, their
delegates and their organisation (services get the FHIR id, never the name).
The operator and the CareChain services are not registered: they are the
principals of the trust bundle (:meth:`Principals.trusted`).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.crypto import load_public_key
from carechain.core.errors import AlreadyExists, CareChainError, InvalidArgument, NotFound, PermissionDenied
from carechain.core.layout import OPERATOR_ID, SERVICES, TrustBundle, service_principal_id
from carechain.identity.registry import IdentityStore, PrincipalRecord, new_organization_id, new_practitioner_id
from carechain.identity.v1 import identity_pb2
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller
from carechain.runtime.delegates import IsDelegate
from carechain.runtime.principal_status import PrincipalStatus

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind

MAX_DISPLAY_NAME = 200
REGISTRABLE_KINDS = (Kind.PRINCIPAL_KIND_ORGANIZATION, Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT,
                     Kind.PRINCIPAL_KIND_AUDITOR)
# Registered by the operator; the others by their organisation.
NETWORK_KINDS = (Kind.PRINCIPAL_KIND_ORGANIZATION, Kind.PRINCIPAL_KIND_AUDITOR)
MEMBER_KINDS = (Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT)
AUDITOR_ID_PREFIX = "aud-"
_SPECIALTY = re.compile(r"^[a-z]+(-[a-z]+)*$")
# FHIR R4 "id" datatype.
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_auditor_id() -> str:
    """A fresh auditor id."""
    return AUDITOR_ID_PREFIX + uuid.uuid4().hex


class Principals:
    """The registered principals (in the registry and on the ledger) and the trust bundle's."""

    def __init__(
        self,
        registry: IdentityStore,
        trust: TrustBundle,
        submitter: ServiceSubmitter,
        status: PrincipalStatus | None = None,
        is_delegate: IsDelegate | None = None,
    ) -> None:
        """status follows lifecycle transactions (deactivations, rotated keys); is_delegate asks consent."""
        self.registry = registry
        self.trust = trust
        self.status = status
        self._submitter = submitter
        self._is_delegate = is_delegate
        self._registration_lock = threading.Lock()

    # --- registration ------------------------------------------------------------

    def register(
        self, caller: Caller, kind: int, display_name: str, public_key: bytes, organization_id: str = "",
        specialty: str = "", fhir_patient_id: str = "",
    ) -> PrincipalRecord:
        """Register a principal on the ledger, then in the registry (who may register what is checked before)."""
        if kind not in REGISTRABLE_KINDS:
            raise InvalidArgument("kind", "must be ORGANIZATION, AUDITOR, PRACTITIONER or PATIENT")
        organization_id = self._registrar_organization(caller, kind, organization_id)
        display_name = display_name.strip()
        if not display_name:
            raise InvalidArgument("display_name", "is required")
        if len(display_name) > MAX_DISPLAY_NAME:
            raise InvalidArgument("display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
        check_public_key(public_key)
        _check_kind_attributes(kind, specialty, fhir_patient_id)

        with self._registration_lock:
            if kind == Kind.PRINCIPAL_KIND_ORGANIZATION:
                principal_id = new_organization_id()
            elif kind == Kind.PRINCIPAL_KIND_AUDITOR:
                principal_id = new_auditor_id()
            elif kind == Kind.PRINCIPAL_KIND_PRACTITIONER:
                principal_id = new_practitioner_id()
            else:
                principal_id = self.registry.patient_pseudonym(organization_id, fhir_patient_id)
                if self.registry.principal(principal_id) is not None:
                    raise AlreadyExists(f"patient is already registered as {principal_id}")
            # Only public attributes go on the ledger: no display name, no FHIR id.
            committed = self._submitter.sign_and_submit(register_principal=ledger_pb2.RegisterPrincipal(
                principal_id=principal_id,
                kind=kind,
                public_key=public_key,
                organization_id=organization_id,
                specialty=specialty,
                # The calling organisation (checked by the access table) attests the specialty on the ledger.
                specialty_attested_by=organization_id if specialty else "",
            ))
            principal = PrincipalRecord(
                principal_id=principal_id,
                kind=kind,
                display_name=display_name,
                public_key=public_key,
                organization_id=organization_id,
                specialty=specialty,
                fhir_patient_id=fhir_patient_id,
                ledger_log_index=committed.log_index,
            )
            self.registry.add_principal(principal)
        log.info(
            "principal registered",
            extra={"principal_id": principal_id, "kind": Kind.Name(kind), "log_index": committed.log_index},
        )
        return principal

    def _registrar_organization(self, caller: Caller, kind: int, organization_id: str) -> str:
        """The new principal's organisation (who may register what is checked by the access table)."""
        if kind in NETWORK_KINDS:
            if organization_id:
                raise InvalidArgument("organization_id", "must be empty for an organisation or an auditor")
            return ""
        return caller.principal_id

    # --- lookup ----------------------------------------------------------------------

    def get(self, caller: Caller, principal_id: str) -> identity_pb2.Principal:
        """A principal as caller may see it (a patient's private fields only to those entitled)."""
        if not principal_id:
            raise InvalidArgument("principal_id", "is required")
        principal = self.registry.principal(principal_id)
        if principal is None:
            trusted = self.trusted(principal_id)
            if trusted is None:
                raise NotFound(f"principal {principal_id} is not registered")
            return identity_pb2.Principal(
                principal_id=trusted.principal_id, kind=trusted.kind, display_name=trusted.principal_id,
                public_key=self.trust.key(trusted.principal_id) or b"",
            )
        if principal.kind != Kind.PRINCIPAL_KIND_PATIENT:
            # Organisations, practitioners and auditors are known to the network by name.
            return self.current_message(principal, show_private=True, show_fhir_id=False)
        private = self._may_see_patient(caller, principal)
        return self.current_message(principal, show_private=private, show_fhir_id=private or caller.is_service)

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

    def trusted(self, principal_id: str) -> Caller | None:
        """The operator or a CareChain service from the trust bundle."""
        if self.trust.key(principal_id) is None:
            return None
        if principal_id == OPERATOR_ID:
            return Caller(OPERATOR_ID, Kind.PRINCIPAL_KIND_OPERATOR)
        if principal_id in {service_principal_id(s) for s in SERVICES}:
            return Caller(principal_id, Kind.PRINCIPAL_KIND_SERVICE)
        return None

    def require_patient(self, patient_id: str) -> PrincipalRecord:
        """A registered patient; NotFound otherwise."""
        patient = self.registry.principal(patient_id)
        if patient is None or patient.kind != Kind.PRINCIPAL_KIND_PATIENT:
            raise NotFound(f"patient {patient_id} is not registered")
        return patient

    def current_message(
        self, principal: PrincipalRecord, *, show_private: bool = False, show_fhir_id: bool = False
    ) -> identity_pb2.Principal:
        """The principal as registered, with its current (possibly rotated) public key."""
        message = principal_message(principal, show_private=show_private, show_fhir_id=show_fhir_id)
        rotated = self.status.current_key(principal.principal_id) if self.status is not None else None
        if rotated:
            message.public_key = rotated
        return message

    def refresh_status(self) -> None:
        """Catch up with lifecycle transactions (the known set if the ledger is down)."""
        if self.status is None:
            return
        try:
            self.status.sync()
        except Exception:  # noqa: BLE001 - the follower's last known deactivations still apply
            log.debug("principal lifecycle not refreshed before issuing a token")

    # --- lifecycle ---------------------------------------------------------------------

    def lifecycle_target(self, caller: Caller, principal_id: str) -> PrincipalRecord:
        """The registered principal the caller may deactivate or re-key: it is its registering authority."""
        principal = self.registry.principal(require_principal_id(principal_id))
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

    def deactivate(self, caller: Caller, principal_id: str) -> identity_pb2.Principal:
        """Deactivate a principal on the ledger (its live tokens stop at once)."""
        principal = self.lifecycle_target(caller, principal_id)
        self._submitter.sign_and_submit(deactivate_principal=ledger_pb2.DeactivatePrincipal(
            principal_id=principal.principal_id))
        self.refresh_status()
        log.info("principal deactivated", extra={"principal_id": principal.principal_id})
        return self.current_message(principal)

    def rotate_key(self, caller: Caller, principal_id: str, public_key: bytes) -> identity_pb2.Principal:
        """Replace a principal's public key on the ledger (only the new key proves possession after)."""
        principal = self.lifecycle_target(caller, principal_id)
        check_public_key(public_key)
        self._submitter.sign_and_submit(rotate_principal_key=ledger_pb2.RotatePrincipalKey(
            principal_id=principal.principal_id, public_key=public_key))
        self.refresh_status()
        log.info("principal key rotated", extra={"principal_id": principal.principal_id})
        return self.current_message(principal)


def principal_message(principal: PrincipalRecord, *, show_private: bool, show_fhir_id: bool) -> identity_pb2.Principal:
    """The Principal message of a registered principal, its private fields shown only as asked."""
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


def check_public_key(public_key: bytes) -> None:
    """InvalidArgument unless public_key is a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidArgument("public_key", f"must be a raw 32-byte Ed25519 public key, got {len(public_key)} bytes")
    try:
        load_public_key(public_key)
    except ValueError as exc:
        raise InvalidArgument("public_key", "is not a valid Ed25519 public key") from exc


def check_fhir_patient_id(fhir_patient_id: str) -> None:
    """InvalidArgument naming fhir_patient_id unless it is a FHIR R4 id (the value is never echoed)."""
    if not _FHIR_ID.match(fhir_patient_id):
        raise InvalidArgument("fhir_patient_id", "required for patients: a FHIR id (1-64 of A-Z a-z 0-9 - .)")


def _check_kind_attributes(kind: int, specialty: str, fhir_patient_id: str) -> None:
    if kind == Kind.PRINCIPAL_KIND_PRACTITIONER:
        if not _SPECIALTY.match(specialty):
            raise InvalidArgument(
                "specialty", "required for practitioners: a lower-case code such as oncology or general-practice"
            )
    elif specialty:
        raise InvalidArgument("specialty", "only practitioners have a specialty")
    if kind == Kind.PRINCIPAL_KIND_PATIENT:
        check_fhir_patient_id(fhir_patient_id)
    elif fhir_patient_id:
        raise InvalidArgument("fhir_patient_id", "only patients have a FHIR patient id")


def require_principal_id(principal_id: str) -> str:
    """principal_id, if it is a well-formed principal id; InvalidArgument naming the field otherwise."""
    if not _PRINCIPAL_ID.match(principal_id):
        raise InvalidArgument("principal_id", "is required: 1-128 of letters, digits, '.', '_', '-'")
    return principal_id
