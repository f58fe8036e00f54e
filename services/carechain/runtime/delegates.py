"""Whether a principal is a patient's active delegate, asked of the consent service (it follows the ledger).

Services that act for a patient on a delegate's request (identity registering a patient's key, records
erasing a patient's records) ask this before acting; the ledger's contract checks the same delegation at
block time for the transactions that follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from carechain.consent.v1 import consent_pb2

#: (patient_id, principal_id) -> whether principal_id is an active delegate of patient_id now.
IsDelegate = Callable[[str, str], bool]


def consent_delegates(consent_stub: object) -> IsDelegate:
    """IsDelegate through ConsentService.ListDelegates (called as the service holding the stub)."""

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
