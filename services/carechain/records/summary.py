"""The patient summary (in the spirit of FHIR ``Patient/$everything``): every record the caller may read.

The patient's records come from the search's scan (:class:`carechain.records.search.RecordSearch`:
the ledger's patient index, metadata opened once, limited by resource types and last update). Each
record is then read exactly as GetRecord reads it (:meth:`RecordsGateway.get_record`: decided,
break-glass as asked, data key released against the decision, ciphertext checked and decrypted,
audited one by one). Several reads run at once on a small shared pool, so their Decide, key
release and blob fetch go out as the gateway's batches (DecideMany, ReleaseDataKeys, GetBlobs);
records still come out in log order (with break-glass, reads go one at a time until the first is
permitted, so that consent opens one window, then several at once). A record consent does not
permit is counted in ``withheld`` (its denial audited as a GetRecord denial), never named; a large
record (read only with GetRecordStream) is counted in ``large_records`` and not read. As for a
search, a caller the patient's consent permits nothing at all is PERMISSION_DENIED (GetRecord's
denial message).

:func:`summary_bundle` is the same as one FHIR R4 Bundle (type searchset): each entry a fullUrl
and the resource with its meta.security labels, and an OperationOutcome entry saying how many
records were withheld.
"""

from __future__ import annotations

import contextvars
import json
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from carechain.common.v1 import common_pb2
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.consent.rules import validate_break_glass_request
from carechain.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.labels.security_labels import security_labels
from carechain.records.gateway import ReadRecord, RecordsGateway, validate_purpose, with_security_labels
from carechain.records.search import Match, RecordFilter, RecordSearch
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller

#: Reads of one summary in flight at once (each a GetRecord), and threads shared by all summaries.
READS_IN_FLIGHT = 16
READ_WORKERS = 16
#: The largest Bundle GetPatientSummaryBundle answers with: the 4 MiB message cap, less room for the rest.
MAX_BUNDLE_BYTES = 4 * 1024 * 1024 - 64 * 1024
TOO_LARGE = "the summary is larger than the 4 MiB message cap: read it with GetPatientSummary (the stream)"


@dataclass
class SummaryCounts:
    """What ends a summary: records sent, withheld by consent, and large records left out."""

    returned: int = 0
    withheld: int = 0
    large_records: int = 0

    def message(self) -> records_pb2.PatientSummaryEnd:
        return records_pb2.PatientSummaryEnd(returned=self.returned, withheld=self.withheld,
                                             large_records=self.large_records)


class PatientSummaries:
    """Patient summaries over the gateway's read path."""

    def __init__(self, gateway: RecordsGateway, search: RecordSearch, workers: int = READ_WORKERS) -> None:
        self._gateway = gateway
        self._search = search
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="summary-read")

    def close(self) -> None:
        """Stop the read pool (reads in flight finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _filter(self, caller: Caller, request: records_pb2.PatientSummaryRequest) -> RecordFilter:
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        validate_purpose(request.purpose)
        validate_break_glass_request(request.break_glass, request.break_glass_reason)
        # A summary is a search: a SMART token covers only the types it may search (each read is checked for r).
        return RecordFilter.of(resource_types=request.resource_types, updated_since_ms=request.since_ms,
                               updated_since_field="since_ms").within_scopes(caller.scope)

    def reads(self, caller: Caller, request: records_pb2.PatientSummaryRequest
              ) -> Iterator[ReadRecord | SummaryCounts]:
        """Each permitted record (a ReadRecord, in log order), then the SummaryCounts."""
        record_filter = self._filter(caller, request)
        yield from self._reads(caller, request, self._search.matches(request.patient_id, record_filter))

    def _reads(self, caller: Caller, request: records_pb2.PatientSummaryRequest, matches: Iterator[Match]
               ) -> Iterator[ReadRecord | SummaryCounts]:
        counts = SummaryCounts()
        pending: deque[Future[ReadRecord | None]] = deque()
        try:
            for match in matches:
                if match.large:
                    counts.large_records += 1
                    continue
                # In the request's context (its trace): each read's spans and audit events belong to this call.
                pending.append(self._pool.submit(contextvars.copy_context().run, self._read, caller, match.record_id,
                                                 request))
                # Break-glass: one read at a time until one is permitted, so that consent opens one window
                # (concurrent first requests would each record a window of their own on the ledger).
                alone = request.break_glass and not counts.returned
                if alone or len(pending) >= READS_IN_FLIGHT:
                    yield from self._collect(pending.popleft(), counts)
            while pending:
                yield from self._collect(pending.popleft(), counts)
        finally:
            for future in pending:  # the caller went away or a read failed: start no more reads
                future.cancel()
        if not counts.returned and not self._search.permits_any(caller, request.patient_id, request.purpose):
            raise PermissionDenied(DENIAL_MESSAGE)
        yield counts

    @staticmethod
    def _collect(future: Future[ReadRecord | None], counts: SummaryCounts) -> Iterator[ReadRecord]:
        read = future.result()  # a failed read (audited by the gateway) ends the summary with its error
        if read is None:
            counts.withheld += 1
            return
        counts.returned += 1
        yield read

    def _read(self, caller: Caller, record_id: str, request: records_pb2.PatientSummaryRequest) -> ReadRecord | None:
        """The record as GetRecord reads it, or None when consent does not permit it (audited as a denial)."""
        try:
            return self._gateway.get_record(caller, record_id, request.purpose, common_pb2.CONSENT_ACTION_ACCESS,
                                            request.break_glass, request.break_glass_reason)
        except PermissionDenied:
            return None

    def bundle(self, caller: Caller, request: records_pb2.PatientSummaryRequest) -> records_pb2.PatientSummaryBundle:
        """The summary as one FHIR Bundle; FAILED_PRECONDITION (before any read) when it would not fit."""
        record_filter = self._filter(caller, request)
        matches = [m for m in self._search.matches(request.patient_id, record_filter)]
        # Ciphertext sizes bound the resources': refuse early rather than read (and audit) what cannot be sent.
        if sum(m.entry.record.content_size for m in matches if not m.large) > MAX_BUNDLE_BYTES:
            if not self._search.permits_any(caller, request.patient_id, request.purpose):
                raise PermissionDenied(DENIAL_MESSAGE)  # a stranger learns nothing, not even the size
            raise FailedPrecondition(TOO_LARGE)
        reads: list[ReadRecord] = []
        counts = SummaryCounts()
        for item in self._reads(caller, request, iter(matches)):
            if isinstance(item, SummaryCounts):
                counts = item
            else:
                reads.append(item)
        bundle_json = json.dumps(summary_bundle(reads, counts.withheld), separators=(",", ":"),
                                 ensure_ascii=False).encode()
        if len(bundle_json) > MAX_BUNDLE_BYTES:
            raise FailedPrecondition(TOO_LARGE)
        return records_pb2.PatientSummaryBundle(bundle_json=bundle_json, end=counts.message())


def labelled_resource(read: ReadRecord) -> dict[str, object]:
    """The resource of a read with its security labels in meta.security (Part 2 handling labels included)."""
    if read.labelled_resource_json:
        return dict(json.loads(read.labelled_resource_json))
    # meta.versionId and meta.lastUpdated as a read sets them (the stored bytes stay in resource_json).
    return dict(json.loads(with_security_labels(read.versioned_resource_json or read.resource_json,
                                                security_labels(read.categories, with_confidentiality=True))))


def withheld_outcome(withheld: int) -> dict[str, object]:
    """An OperationOutcome saying how many records were withheld (never which or why)."""
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "suppressed",
        "diagnostics": f"{withheld} record{'s were' if withheld != 1 else ' was'} withheld: "
                       "not permitted by the patient's consent"}]}


def summary_bundle(reads: list[ReadRecord], withheld: int) -> dict[str, object]:
    """A FHIR R4 searchset Bundle of the reads, with an OperationOutcome entry when records were withheld."""
    entries: list[dict[str, object]] = [
        {"fullUrl": f"urn:uuid:{read.record_id}", "resource": labelled_resource(read), "search": {"mode": "match"}}
        for read in reads]
    if withheld:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": withheld_outcome(withheld),
                        "search": {"mode": "outcome"}})
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "total": len(reads),
            "entry": entries}
