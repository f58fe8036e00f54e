"""Record versions (issue 14, part 4): UpdateRecord, ListRecordVersions, and every version's parts.

A new version is written like a new record (:meth:`RecordsGateway.put_record` with ``amends``): its
own data key (identity keeps it under :func:`carechain.core.decision_claims.data_key_id`), its own blob,
and a RegisterRecord with version = latest + 1 linked to the latest (``previous_log_index``,
``previous_content_sha256``), acknowledged once blob, ledger commit and audit are durable. Only the
authoring organisation and its practitioners amend a record; the ledger contract refuses a version by
another organisation, one that is not the latest + 1, or one for another patient. The resource type
stays the record's. A version's sealed categories are the union over the versions so far, so a label
gained in any version protects every version (consent folds the same union).

History is metadata (:class:`carechain.records.v1.records_pb2.RecordVersion`: number, log index, block
time, author organisation and practitioner, content hash), given only under the consent decision a
read of the record would get, and audited as a read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from carechain.audit.v1 import audit_pb2
from carechain.core.decision_claims import data_key_id
from carechain.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway, StoredRecord, VerifiedEntry, organization_of
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller

#: What a caller may not amend; the same answer for a record that does not exist (ids cannot be probed).
NOT_AUTHOR = "only the authoring organization (or its practitioners) updates a record"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class VersionParts:
    """What one version of a record left in identity and storage (erasure destroys them all)."""

    version: int
    data_key_id: str  # identity's id of the version's data key
    content_sha256: str  # the version's blob in storage
    content_size: int


def record_version_parts(ledger: Any, record_id: str) -> list[VersionParts]:
    """Every version's data key id and blob of a record, oldest first, from the ledger (a LedgerService stub).

    For erasure: crypto-shredding a record destroys each of these keys and deletes each blob.
    """
    latest = ledger.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id=record_id))
    entries = [ledger.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id=record_id, version=v)).record
               for v in range(1, latest.latest_version)]
    return [VersionParts(max(r.version, 1), data_key_id(record_id, r.version), r.content_sha256, r.content_size)
            for r in [*entries, latest.record]]


class RecordVersions:
    """UpdateRecord and ListRecordVersions over the gateway's write and read flows."""

    def __init__(self, gateway: RecordsGateway) -> None:
        self._gateway = gateway

    def update(self, caller: Caller, record_id: str, resource_json: bytes, if_version: int = 0) -> StoredRecord:
        """Write the next version of record_id (see the module docstring); if_version: the version amended."""
        if not record_id:
            raise InvalidArgument("record_id", "is required")
        latest = self._latest_for_author(caller, record_id)
        if latest.erased:
            raise FailedPrecondition("record_id: the record was erased")
        if if_version and if_version != latest.version:
            # Optimistic concurrency (FHIR If-Match): someone amended it since the caller read it.
            raise FailedPrecondition(f"if_version: the record's latest version is {latest.version}")
        return self._gateway.put_record(caller, latest.record.patient_id, resource_json, amends=latest)

    def _latest_for_author(self, caller: Caller, record_id: str) -> VerifiedEntry:
        """The record's latest version, fresh from the ledger, if the caller's organisation wrote it."""
        try:
            latest = self._gateway.verified_entry(record_id, fresh=True)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise PermissionDenied(NOT_AUTHOR) from exc
            raise
        organization_id = organization_of(caller)
        if not organization_id or latest.record.organization_id != organization_id:
            raise PermissionDenied(NOT_AUTHOR)
        return latest

    def history(self, caller: Caller, record_id: str, purpose: int, page_size: int = 0,
                page_token: str = "") -> records_pb2.ListRecordVersionsResponse:
        """A page of the record's versions, oldest first, if consent permits the caller to read the record."""
        self._gateway.require_read_ids(caller, record_id, purpose)
        page_size = page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"at most {MAX_PAGE_SIZE}")
        first = _first_version(page_token)
        latest = self._gateway.verified_entry(record_id)
        decision, latest, audit_fields = self._gateway.decide_read(caller, latest, purpose)
        # Only the versions consent decided on (a newer one it has not folded yet is not listed).
        newest = min(latest.version, decision.record_version or latest.version)
        last = min(newest, first + page_size - 1)
        versions = [
            (latest if v == latest.version else self._gateway.verified_entry(record_id, v)).record_version()
            for v in range(first, last + 1)
        ]
        # Fail closed: the listing is a disclosure of metadata, accounted for like a read.
        self._gateway.audit.report(audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS,
                                   reason=f"version history: {decision.reason}", **audit_fields)
        return records_pb2.ListRecordVersionsResponse(
            versions=versions, next_page_token=str(last + 1) if last < newest else "")


def _first_version(page_token: str) -> int:
    """The first version a page starts at (an empty token: version 1)."""
    if not page_token:
        return 1
    if not page_token.isdigit() or int(page_token) < 1:
        raise InvalidArgument("page_token", "is not a token this listing returned")
    return int(page_token)
