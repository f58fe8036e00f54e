"""Bulk import: a FHIR Bundle (batch or transaction) or a stream of resources, each its own record.

Every resource goes through :meth:`RecordsGateway.put_record`, exactly as one PutRecord: its own
record id, labels, data key, ciphertext, ledger entry and audit events. Many writes run at once
(at most ``concurrency`` per import, on one bounded pool shared by all imports), because the
downstream calls (data keys, blobs, ledger submits, audit appends) are batched across concurrent
writes; an import only ever holds ``concurrency`` resources in memory, and a stream is read only
as fast as its writes finish and its results are taken (gRPC flow control does the rest). How many
are under way adapts (:class:`Window`): an import that meets UNAVAILABLE / DEADLINE_EXCEEDED slows
down instead of failing every resource. A failed resource is not retried (a write may fail after
its commit point); the caller resends what did not commit (``carechain records import --resume``).

Bundles (docs/sdk.md, "Bulk import"):

- **batch**: each entry succeeds or fails on its own (FHIR batch-response: ``response.status``,
  an OperationOutcome for a failure). Entries may not refer to each other (FHIR: no
  interdependencies in a batch), except to the bundle's Patient entry, which is the registered patient.
- **transaction**: every entry is checked before anything is written: the FHIR validation of
  PutRecord, the patient, and ``urn:uuid`` references, each rewritten to ``<type>/<id>`` of the entry
  whose ``fullUrl`` it is (an entry without an id gets the uuid of its fullUrl as its id). One bad
  entry refuses the bundle (INVALID_ARGUMENT naming ``bundle_json.entry[i]...``) with nothing
  written. Once writes start there is no multi-record atomicity (the ledger commits each record on
  its own): after the first failure no further write starts, the records already committed stay,
  and the response says for each entry whether it committed, failed, or was not attempted.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from carechain.core.errors import CareChainError, InvalidArgument, PermissionDenied
from carechain.core.fhir import parse_json, validate_resource
from carechain.identity.v1 import identity_pb2
from carechain.records.gateway import RecordsGateway, StoredRecord, organization_of
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller, Kind

log = logging.getLogger("carechain.records.bulk")

DEFAULT_CONCURRENCY = 32
INITIAL_WINDOW = 8
# A write failing with one of these says a service is overloaded or down: the import slows down.
OVERLOADED = frozenset(c.value[0] for c in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                             grpc.StatusCode.RESOURCE_EXHAUSTED))
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
MAX_BUNDLE_ENTRIES = 10_000
MAX_CLIENT_REF_CHARS = 200
BUNDLE_FIELD = "bundle_json"
URN_UUID = "urn:uuid:"

# gRPC status -> the HTTP status and OperationOutcome issue code of a FHIR batch-response entry.
_HTTP = {
    grpc.StatusCode.OK: ("201 Created", ""),
    grpc.StatusCode.INVALID_ARGUMENT: ("400 Bad Request", "invalid"),
    grpc.StatusCode.UNAUTHENTICATED: ("401 Unauthorized", "login"),
    grpc.StatusCode.PERMISSION_DENIED: ("403 Forbidden", "forbidden"),
    grpc.StatusCode.NOT_FOUND: ("404 Not Found", "not-found"),
    grpc.StatusCode.ABORTED: ("409 Conflict", "conflict"),
    grpc.StatusCode.ALREADY_EXISTS: ("409 Conflict", "duplicate"),
    grpc.StatusCode.FAILED_PRECONDITION: ("412 Precondition Failed", "processing"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("429 Too Many Requests", "throttled"),
    grpc.StatusCode.UNAVAILABLE: ("503 Service Unavailable", "transient"),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("504 Gateway Timeout", "timeout"),
}
_NOT_PASSED_ON = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)
NOT_ATTEMPTED = "not attempted: an earlier entry of the transaction failed"


def outcome_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message one failed write reports (as the server would end a PutRecord with it).

    A peer's INTERNAL/UNKNOWN (or a bug here) is reported as INTERNAL without its message, which may
    hold a value; it is logged once by type, never by message.
    """
    if isinstance(exc, CareChainError) and exc.code != grpc.StatusCode.INTERNAL:
        return exc.code, exc.message
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") and exc.code() not in _NOT_PASSED_ON:
        return exc.code(), exc.details() or ""
    log.error("internal error in an imported write", extra={"error_type": type(exc).__name__})
    return grpc.StatusCode.INTERNAL, "internal error"


def _result(index: int, client_ref: str, stored: StoredRecord | None = None,
            failure: tuple[grpc.StatusCode, str] | None = None) -> records_pb2.ImportResult:
    if stored is not None:
        return records_pb2.ImportResult(index=index, client_ref=client_ref, code=0, record_id=stored.record_id,
                                        categories=stored.categories, content_sha256=stored.content_sha256,
                                        ledger_log_index=stored.log_index)
    code, message = failure or (grpc.StatusCode.INTERNAL, "internal error")
    return records_pb2.ImportResult(index=index, client_ref=client_ref, code=code.value[0], message=message)


@dataclass
class _Entry:
    """One bundle entry, ready to write (or already failed)."""

    index: int
    resource: dict[str, Any] | None = None
    patient_id: str = ""
    failure: tuple[grpc.StatusCode, str] | None = None
    attempted: bool = False
    stored: StoredRecord | None = None

    def fail(self, status: grpc.StatusCode, message: str) -> None:
        self.failure = (status, message)


class BulkImporter:
    """Imports bundles and resource streams through the gateway's put_record, several writes at once."""

    def __init__(self, gateway: RecordsGateway, identity: Callable[[], Any], max_record_bytes: int,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._gateway = gateway
        self._identity = identity
        self._max_record_bytes = max_record_bytes
        self.concurrency = concurrency
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="records-import")

    def close(self) -> None:
        """Stop the pool (writes under way finish)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, task: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        # Each write runs in the served call's context (its deadline and trace go to the peers it calls).
        return self._pool.submit(contextvars.copy_context().run, task)

    # --- a stream of resources ----------------------------------------------

    def import_stream(self, caller: Caller, requests: Iterator[records_pb2.ImportRecordsRequest]
                      ) -> Iterator[records_pb2.ImportResult]:
        """One ImportResult per request, in completion order; at most ``concurrency`` writes or untaken results."""
        slots = Window(self.concurrency)
        done: queue.Queue[records_pb2.ImportResult | _End] = queue.Queue()
        stop = threading.Event()
        context = contextvars.copy_context()

        def write(index: int, request: records_pb2.ImportRecordsRequest) -> None:
            client_ref = request.client_ref[:MAX_CLIENT_REF_CHARS]
            try:
                if len(request.client_ref) > MAX_CLIENT_REF_CHARS:
                    raise InvalidArgument("client_ref", f"is longer than {MAX_CLIENT_REF_CHARS} characters")
                done.put(_result(index, client_ref, self._gateway.put_record(caller, request.patient_id,
                                                                            request.resource_json)))
            except Exception as exc:  # noqa: BLE001 - each resource reports its own outcome
                done.put(_result(index, client_ref, failure=outcome_of(exc)))

        def read() -> None:
            # Reads the next request only when a slot is free (a slot is held until its result is taken),
            # so a fast sender is held back by gRPC flow control and memory stays bounded.
            count, error = 0, None
            try:
                for request in requests:
                    if not slots.acquire(stop):
                        return
                    self._pool.submit(context.copy().run, write, count, request)
                    count += 1
            except Exception as exc:  # noqa: BLE001 - a broken request stream ends the call with its status
                error = exc
            finally:
                done.put(_End(count, error))

        threading.Thread(target=read, name="records-import-reader", daemon=True).start()
        end: _End | None = None
        sent = 0
        try:
            while end is None or sent < end.count:
                item = done.get()
                if isinstance(item, _End):
                    end = item
                    if end.error is not None and not isinstance(end.error, grpc.RpcError):
                        raise end.error
                    continue
                slots.release(overloaded=item.code in OVERLOADED)
                sent += 1
                yield item
        finally:
            stop.set()

    # --- a bundle ---------------------------------------------------------

    def import_bundle(self, caller: Caller, bundle_json: bytes, patient_ids: list[str]
                      ) -> records_pb2.ImportBundleResponse:
        """Import a batch or transaction Bundle (see the module docstring)."""
        bundle = _parse_bundle(bundle_json)
        transaction = bundle["type"] == "transaction"
        patients = self._patients(caller, patient_ids)
        entries = _plan(bundle["entry"], patients, transaction)
        if transaction:
            for entry in entries:
                if entry.failure is None:
                    self._validate(entry, patients)
                if entry.failure is not None:
                    status, message = entry.failure
                    raise _TransactionRefused(status, f"{BUNDLE_FIELD}.entry[{entry.index}]: {message}")
        self._write(caller, entries, stop_on_failure=transaction)
        return _response(entries, "transaction-response" if transaction else "batch-response")

    def _patients(self, caller: Caller, patient_ids: list[str]) -> dict[str, str]:
        """FHIR patient id -> pseudonym of each listed patient; refuses patients of another organisation."""
        if not patient_ids:
            raise InvalidArgument("patient_ids", "name at least one patient (pseudonym) the bundle is about")
        organization_id = organization_of(caller)
        patients: dict[str, str] = {}
        for i, patient_id in enumerate(dict.fromkeys(patient_ids)):
            try:
                principal = self._identity().GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=patient_id))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    raise InvalidArgument(f"patient_ids[{i}]", "is not a registered patient") from exc
                raise
            if principal.kind != Kind.PRINCIPAL_KIND_PATIENT:
                raise InvalidArgument(f"patient_ids[{i}]", "is not a registered patient")
            if not organization_id or principal.organization_id != organization_id:
                # The whole bundle is refused: nothing of it is written for anyone.
                raise PermissionDenied("an organization (or its practitioner) imports records only for its own "
                                       f"patients: patient_ids[{i}] is not one")
            patients[principal.fhir_patient_id] = patient_id
        return patients

    def _validate(self, entry: _Entry, patients: dict[str, str]) -> None:
        """A transaction's up-front check: the same FHIR and patient validation as PutRecord."""
        fhir_id = next(f for f, p in patients.items() if p == entry.patient_id)
        try:
            validate_resource(_compact(entry.resource), fhir_id, self._max_record_bytes, pseudonym=entry.patient_id)
        except InvalidArgument as exc:
            entry.fail(exc.code, exc.message)

    def _write(self, caller: Caller, entries: list[_Entry], stop_on_failure: bool) -> None:
        """put_record for every entry not failed yet, ``concurrency`` at a time."""
        failed = threading.Event()

        def write(entry: _Entry) -> None:
            if stop_on_failure and failed.is_set():
                return
            entry.attempted = True
            try:
                stored = self._gateway.put_record(caller, entry.patient_id, _compact(entry.resource))
            except Exception as exc:  # noqa: BLE001 - each entry reports its own outcome
                entry.fail(*outcome_of(exc))
                failed.set()
                return
            entry.stored = stored

        slots = Window(self.concurrency)
        futures = []
        for entry in entries:
            if entry.failure is not None:
                continue
            slots.acquire()
            if stop_on_failure and failed.is_set():
                slots.release()
                break
            future = self._submit(lambda e=entry: write(e))
            future.add_done_callback(lambda _f, e=entry: slots.release(
                overloaded=e.failure is not None and e.failure[0].value[0] in OVERLOADED))
            futures.append(future)
        concurrent.futures.wait(futures)
        for entry in entries:
            if entry.failure is None and not entry.attempted:
                entry.fail(grpc.StatusCode.ABORTED, NOT_ATTEMPTED)


class Window:
    """How many writes an import has under way: at most ``limit``, fewer while the network is overloaded.

    Additive increase, multiplicative decrease (as TCP): it starts at :data:`INITIAL_WINDOW`, grows by
    one per window of results, and halves (at most once per window) when a write fails with a status
    that says a service is overloaded or down, so an import backs off rather than failing in bulk.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = float(min(limit, INITIAL_WINDOW))
        self._in_flight = 0
        self._since_decrease = 0
        self._changed = threading.Condition()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for room for one more write; False if stop was set meanwhile."""
        with self._changed:
            while self._in_flight >= int(self.size):
                if stop is not None and stop.is_set():
                    return False
                self._changed.wait(0.5)
            if stop is not None and stop.is_set():
                return False
            self._in_flight += 1
            return True

    def release(self, overloaded: bool = False) -> None:
        """One write is over (its result taken); overloaded: it failed because a service could not keep up."""
        with self._changed:
            self._in_flight -= 1
            self._since_decrease += 1
            if overloaded and self._since_decrease >= self.size:
                self.size, self._since_decrease = max(1.0, self.size / 2), 0
            elif not overloaded:
                self.size = min(float(self.limit), self.size + 1 / self.size)
            self._changed.notify_all()


@dataclass(frozen=True)
class _End:
    """The request stream ended after count requests (error: why it broke, if it did)."""

    count: int
    error: BaseException | None = None


class _TransactionRefused(CareChainError):
    """A transaction refused before any write, with the status of its first bad entry."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = status


def _compact(resource: dict[str, Any] | None) -> bytes:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_bundle(raw: bytes) -> dict[str, Any]:
    """The Bundle JSON, checked as far as an import needs before looking at entries."""
    if not raw:
        raise InvalidArgument(BUNDLE_FIELD, "is empty")
    if len(raw) > MAX_BUNDLE_BYTES:
        raise InvalidArgument(BUNDLE_FIELD, f"is {len(raw)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        bundle = parse_json(raw)
    except InvalidArgument as exc:
        raise InvalidArgument(BUNDLE_FIELD, exc.message.removeprefix("resource_json").lstrip(": ")) from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidArgument(f"{BUNDLE_FIELD}.resourceType", "must be Bundle")
    if bundle.get("type") not in ("batch", "transaction"):
        raise InvalidArgument(f"{BUNDLE_FIELD}.type", "must be batch or transaction")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"{BUNDLE_FIELD}.entry", "must be a non-empty array")
    if len(entries) > MAX_BUNDLE_ENTRIES:
        raise InvalidArgument(f"{BUNDLE_FIELD}.entry", f"has {len(entries)} entries; the limit is {MAX_BUNDLE_ENTRIES}")
    return bundle


def _plan(raw_entries: list[Any], patients: dict[str, str], transaction: bool) -> list[_Entry]:
    """Each entry's resource with its references resolved and its patient found, or why it cannot be written."""
    entries = [_Entry(i) for i in range(len(raw_entries))]
    targets: dict[str, str] = {}  # urn:uuid fullUrl -> "<type>/<id>"
    patient_urls: set[str] = set()
    for entry, raw in zip(entries, raw_entries, strict=True):
        problem = _entry_problem(raw)
        if problem:
            entry.fail(grpc.StatusCode.INVALID_ARGUMENT, problem)
            continue
        resource = dict(raw["resource"])
        entry.resource = resource
        full_url = raw.get("fullUrl")
        if not (isinstance(full_url, str) and full_url.startswith(URN_UUID)):
            continue
        if full_url in targets:
            entry.fail(grpc.StatusCode.INVALID_ARGUMENT, "fullUrl: the same urn:uuid is the fullUrl of two entries")
            continue
        kind = resource["resourceType"]
        if kind == "Patient":
            if resource.get("id") not in patients:
                entry.fail(grpc.StatusCode.INVALID_ARGUMENT,
                           "resource.id: a Patient entry must have the FHIR id of one of patient_ids")
                continue
            patient_urls.add(full_url)
        elif transaction and "id" not in resource:
            resource["id"] = full_url.removeprefix(URN_UUID)  # FHIR ids are at most 64 characters: a uuid fits
        if "id" in resource:
            targets[full_url] = f"{kind}/{resource['id']}"
    resolvable = targets if transaction else {url: targets[url] for url in patient_urls}
    for entry in entries:
        if entry.resource is None or entry.failure is not None:
            continue
        try:
            _rewrite_references(entry.resource, resolvable, "resource", transaction)
            entry.patient_id = _patient_of(entry.resource, patients)
        except InvalidArgument as exc:
            entry.fail(exc.code, exc.message)
    return entries


def _entry_problem(raw: Any) -> str:
    """Why a bundle entry cannot be imported as a create, or ""."""
    if not isinstance(raw, dict):
        return "must be an object"
    request = raw.get("request")
    if not isinstance(request, dict) or request.get("method") != "POST":
        return "request.method: only POST (create) entries can be imported"
    if "ifNoneExist" in request or "ifMatch" in request or "ifNoneMatch" in request:
        return "request: conditional creates are not supported"
    resource = raw.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return "resource: must be a FHIR resource with a resourceType"
    return ""


def _rewrite_references(node: Any, targets: dict[str, str], path: str, transaction: bool) -> None:
    """Replace every ``urn:uuid`` reference with its entry's ``<type>/<id>`` (in place)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith(URN_UUID):
                if value in targets:
                    node[key] = targets[value]
                elif transaction:
                    raise InvalidArgument(f"{path}.reference",
                                          "is a urn:uuid that no entry of the bundle has as fullUrl")
                else:
                    raise InvalidArgument(f"{path}.reference", "a batch entry may not refer to another entry "
                                                               "(FHIR batch: no interdependencies); use a transaction")
            else:
                _rewrite_references(value, targets, f"{path}.{key}", transaction)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _rewrite_references(item, targets, f"{path}[{i}]", transaction)


def _patient_of(resource: dict[str, Any], patients: dict[str, str]) -> str:
    """The pseudonym of the listed patient the resource is about (the gateway checks it properly)."""
    if resource["resourceType"] == "Patient":
        fhir_id = resource.get("id")
        if fhir_id not in patients:
            raise InvalidArgument("resource.id", "a Patient entry must have the FHIR id of one of patient_ids")
        return patients[fhir_id]
    named: set[str] = set()
    _patient_references(resource, named)
    # Patient/<pseudonym> names a listed patient as its FHIR id does (the FHIR REST gateway's logical id).
    named = {patients.get(target, target) for target in named}
    if len(named) > 1:
        raise InvalidArgument("resource", "refers to more than one patient")
    if named:
        [patient_id] = named
        if patient_id not in patients.values():
            raise InvalidArgument("resource", "is about a patient not in patient_ids")
        return patient_id
    if len(patients) == 1:
        return next(iter(patients.values()))  # validation then says what is missing
    raise InvalidArgument("resource", "names no patient (Patient/<id> reference)")


def _patient_references(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("Patient/"):
                found.add(value.removeprefix("Patient/"))
            else:
                _patient_references(value, found)
    elif isinstance(node, list):
        for item in node:
            _patient_references(item, found)


def _response(entries: list[_Entry], bundle_type: str) -> records_pb2.ImportBundleResponse:
    """The FHIR batch/transaction-response Bundle and the per-entry results, in entry order."""
    results, response_entries = [], []
    for entry in entries:
        stored = entry.stored
        if entry.failure is None and stored is not None:
            result = _result(entry.index, "", stored)
            response: dict[str, Any] = {"status": "201 Created", "location": f"Record/{stored.record_id}",
                                        "etag": 'W/"1"'}
        else:
            status, message = entry.failure or (grpc.StatusCode.INTERNAL, "internal error")
            result = _result(entry.index, "", failure=(status, message))
            http, issue = _HTTP.get(status, ("500 Internal Server Error", "exception"))
            response = {"status": http, "outcome": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": issue, "diagnostics": message}]}}
        results.append(result)
        response_entries.append({"response": response})
    committed = sum(1 for r in results if r.code == 0)
    body = {"resourceType": "Bundle", "type": bundle_type, "entry": response_entries}
    return records_pb2.ImportBundleResponse(
        response_bundle_json=json.dumps(body, separators=(",", ":")).encode(), results=results,
        committed=committed, failed=len(results) - committed)
