"""Network patient identity in the identity service: links submitted, keys moved, local ids resolved.

A patient's network identity N is one of their patient principals (usually the first registration).
Another organisation's principal L for the same person is linked to N by a ``LinkPatientIdentity``
transaction: the organisation that registered L attests it (:mod:`carechain.ledger.linking`) and N
(or N's active delegate) signs the transaction. This service only relays the signed transaction to
the ledger, whose contract rules decide (:mod:`carechain.ledger.contract`); once committed, L's
stored data keys are re-wrapped under N's key-encryption key, so the patient has one key-encryption
key (new data keys for L use N's key from then on, :class:`carechain.identity.data_keys.DataKeys`).
An unlink moves them back under L's own key. Resolution (:meth:`PatientLinks.resolve`) answers an
organisation only about its own identifiers, in the spirit of IHE PIXm. docs/network-identity.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.core.errors import CareChainError, InvalidArgument, NotFound, PermissionDenied
from carechain.identity.data_keys import DataKeys
from carechain.identity.principals import Principals, check_fhir_patient_id
from carechain.identity.v1 import identity_pb2
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller, organization_of
from carechain.runtime.principal_status import PrincipalStatus

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind
# The same answer for an unknown FHIR id and for anything the caller may not learn.
NOT_RESOLVED = "no patient with this FHIR id at the calling organisation"


def signed_by_caller(caller: Caller, transaction: ledger_pb2.Transaction | None, payload: str) -> object:
    """The payload of a transaction the caller signed itself; InvalidArgument / PermissionDenied otherwise.

    Whether the caller may act for the network patient (the patient, an active delegate, or for an unlink
    the linked patient's organisation) is the ledger's contract rule, judged at block time.
    """
    if transaction is None or not transaction.body:
        raise InvalidArgument("transaction", "required")
    if transaction.signer_id != caller.principal_id:
        raise PermissionDenied("the transaction must be signed by the caller")
    body = decode_body(transaction)
    if body.WhichOneof("payload") != payload:
        raise InvalidArgument("transaction.body", f"payload must be {payload}")
    return getattr(body, payload)


class PatientLinks:
    """Links and unlinks patient principals through the ledger and keeps one key-encryption key per patient."""

    def __init__(self, principals: Principals, data_keys: DataKeys, submitter: ServiceSubmitter,
                 status: PrincipalStatus | None, network_patient: Callable[[str], str],
                 linked_patients: Callable[[str], list[str]]) -> None:
        """network_patient / linked_patients resolve links as the ledger's committed state (PrincipalStatus)."""
        self._principals = principals
        self._data_keys = data_keys
        self._submitter = submitter
        self._status = status
        self._network_patient = network_patient
        self._linked_patients = linked_patients

    def link(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> identity_pb2.LinkPatientResponse:
        """Submit a LinkPatientIdentity the caller signed, then move L's data keys under N's key."""
        link = self._signed(caller, transaction, "link_patient_identity",
                            ("network_patient_id", "linked_patient_id", "organization_id", "attestation"))
        return self._commit(transaction, link.linked_patient_id, link.network_patient_id, "linked")

    def unlink(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> identity_pb2.LinkPatientResponse:
        """Submit an UnlinkPatientIdentity the caller signed, then move L's data keys back under its own key."""
        unlink = self._signed(caller, transaction, "unlink_patient_identity",
                              ("network_patient_id", "linked_patient_id"))
        return self._commit(transaction, unlink.linked_patient_id, unlink.linked_patient_id, "unlinked")

    @staticmethod
    def _signed(caller: Caller, transaction: ledger_pb2.Transaction | None, payload: str,
                required: tuple[str, ...]) -> Any:
        """The payload of the caller's signed transaction, its required fields present (INVALID_ARGUMENT naming one)."""
        message = signed_by_caller(caller, transaction, payload)
        for name in required:
            if not getattr(message, name):
                raise InvalidArgument(f"transaction.body.{payload}.{name}", "required")
        return message

    def _commit(self, transaction: ledger_pb2.Transaction | None, linked_patient_id: str, key_owner: str,
                what: str) -> identity_pb2.LinkPatientResponse:
        """Submit to the ledger (its contract rules decide), then wrap the linked patient's keys under key_owner's."""
        committed = self._submitter.submit(transaction)  # type: ignore[arg-type]
        self._follow_committed()
        try:
            moved = self._data_keys.move_patient_keys(linked_patient_id, key_owner)
        except CareChainError as exc:
            # Committed all the same: the keys stay readable under the old key, and the next rotation of the
            # network key (RotatePatientKey) moves what is left.
            log.warning("data keys not re-wrapped after a link change", extra={"grpc_code": exc.code.name})
            moved = 0
        log.info(f"patient identity {what}", extra={"log_index": committed.log_index, "rewrapped": moved})
        return identity_pb2.LinkPatientResponse(ledger_log_index=committed.log_index, rewrapped=moved)

    def resolve(self, caller: Caller, fhir_patient_id: str) -> identity_pb2.ResolvePatientResponse:
        """The network identity of the caller organisation's patient fhir_patient_id, and its own pseudonyms.

        Only the caller organisation's own identifiers: another organisation's links are never named, and
        an id the caller did not register is NOT_FOUND exactly like an unknown one.
        """
        check_fhir_patient_id(fhir_patient_id)
        organization_id = organization_of(caller)
        local_id = self._principals.registry.patient_pseudonym(organization_id, fhir_patient_id)
        local = self._principals.registry.principal(local_id)
        if local is None or local.kind != Kind.PRINCIPAL_KIND_PATIENT or local.organization_id != organization_id:
            raise NotFound(NOT_RESOLVED)
        self._follow_committed()
        network_id = self._network_patient(local_id)
        own = [p for p in [network_id, *self._linked_patients(network_id)] if self._registered_by(p, organization_id)]
        return identity_pb2.ResolvePatientResponse(network_patient_id=network_id, organization_patient_ids=own)

    def _registered_by(self, patient_id: str, organization_id: str) -> bool:
        principal = self._principals.registry.principal(patient_id)
        return principal is not None and principal.organization_id == organization_id

    def _follow_committed(self) -> None:
        """Catch the lifecycle follower up with the ledger (links just committed resolve at once here)."""
        if self._status is not None:
            self._status.sync()

