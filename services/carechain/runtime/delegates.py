"""Whether a principal is a patient's active delegate, asked of the consent service (it follows the ledger).

Services that act for a patient on a delegate's request (identity registering a patient's key, records
erasing a patient's records) ask this before acting; the ledger's contract checks the same delegation at
block time for the transactions that follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2
from carechain.runtime.auth import Caller

#: (patient_id, principal_id) -> whether principal_id is an active delegate of patient_id now.
IsDelegate = Callable[[str, str], bool]


def consent_delegates(consent_stub: object, relationship: int = 0) -> IsDelegate:
    """IsDelegate through ConsentService.ListDelegates (called as the service holding the stub).

    relationship (a policy.v1 DelegateRelationship, e.g. GUARDIAN: a personal representative) limits it to
    delegates of that relationship; 0: any.
    """

    def is_delegate(patient_id: str, principal_id: str) -> bool:
        response = consent_stub.ListDelegates(  # type: ignore[attr-defined]
            consent_pb2.ListDelegatesRequest(patient_id=patient_id)
        )
        now_ms = int(time.time() * 1000)
        return any(
            d.delegate_id == principal_id and d.status == consent_pb2.DELEGATION_STATUS_ACTIVE
            and (not relationship or d.relationship == relationship)
            and d.period.start_ms <= now_ms and (not d.period.end_ms or now_ms < d.period.end_ms)
            for d in response.delegations
        )

    return is_delegate


def acts_for_patient(caller: Caller, patient_id: str, is_delegate: IsDelegate) -> bool:
    """Whether the caller is the patient (a patient principal) or, as a person, is_delegate of the patient.

    A patient the consent service does not know (NOT_FOUND, INVALID_ARGUMENT) has no delegates: the answer is
    False, as for anyone else's patient, so a refusal reveals nothing about whether the patient exists.
    """
    if not patient_id:
        return False
    if caller.kind == common_pb2.PRINCIPAL_KIND_PATIENT and caller.principal_id == patient_id:
        return True
    if caller.kind not in (common_pb2.PRINCIPAL_KIND_PATIENT, common_pb2.PRINCIPAL_KIND_PRACTITIONER):
        return False
    try:
        return is_delegate(patient_id, caller.principal_id)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):  # type: ignore[attr-defined]
            return False
        raise
