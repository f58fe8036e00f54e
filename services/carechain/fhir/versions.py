"""Record versions over FHIR REST (issue 15): read, vread, update with ``If-Match``, and instance history.

Routes (:func:`version_routes`), each one or a few records RPCs made with the caller's token:

- ``GET /{type}/{id}``: records GetRecord (the latest version consent has folded); the resource with
  ``meta.versionId`` and ``meta.lastUpdated`` from the ledger, ``ETag: W/"<n>"`` and ``Last-Modified``;
- ``GET /{type}/{id}/_history/{vid}`` (vread): GetRecord with ``version``; a version the record does not
  have is 404;
- ``PUT /{type}/{id}`` (update): records UpdateRecord; ``If-Match: W/"<n>"`` is ``if_version`` (a stale one
  is 412). CareChain assigns record ids, so there is no update-as-create: only the authoring organisation
  updates, and an unknown id gets its refusal (403, not R4's 405 for an id that did not exist), as on the
  gRPC path, so ids cannot be probed. The body's ``id`` is the URL's, for a Patient too (records accepts
  the id of the record a version amends as a Patient's id: the ledger says whose record it is); the
  served Patient references are by the pseudonym records answers. An update that loses a race with
  another is 412 with ``If-Match`` (409 without);
- ``GET /{type}/{id}/_history`` (history-instance): records ListRecordVersions as a FHIR ``history``
  Bundle, newest version first as FHIR orders it, each entry with the version's resource (a GetRecord
  with ``version``, audited as a read like any), paged by ``_count`` with ``next`` links.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import re
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carechain.fhir.app import (
    _ID,
    GatewayConfig,
    Records,
    _base_url,
    _checked_type,
    _created,
    fhir_response,
    negotiate,
    reader_credentials,
    typed_resource,
)
from carechain.fhir.auth import RequestCredentials, request_credentials
from carechain.fhir.outcomes import FhirError
from carechain.fhir.patients import as_served, patient_of, record_version_number, served_version
from carechain.records.v1 import records_pb2

#: ``W/"3"`` (what this server sends) or ``"3"``: a version number as an entity tag.
_ETAG = re.compile(r'^(?:W/)?"([1-9][0-9]{0,8})"$')
#: History entries per page (FHIR ``_count``): the default, and the most (records' ListRecordVersions page limit).
DEFAULT_HISTORY_COUNT = 20
MAX_HISTORY_COUNT = 100
#: What an update that lost a race with another update of the record answers (the version is taken).
CONCURRENT_UPDATE = "{}: another update of the record committed first; read the record again and retry"
#: The history link parameter naming where a page starts: versions at most this one (newest first).
PAGE_PARAMETER = "_page_version"


def etag(version: int) -> str:
    """The weak entity tag of a record version: ``W/"<n>"`` (FHIR's ETag is the version id)."""
    return f'W/"{version}"'


def if_match_version(header: str | None) -> int:
    """The version an ``If-Match`` header names (records' ``if_version``); 0 without one, or for ``*``.

    400 naming the header when it is not one entity tag of a version (``W/"<n>"`` or ``"<n>"``): a
    list of tags cannot be checked against one latest version.
    """
    if header is None or not header.strip() or header.strip() == "*":
        return 0
    match = _ETAG.match(header.strip())
    if match is None:
        raise FhirError(400, "value", 'If-Match: must be the ETag of one version, W/"<versionId>"')
    return int(match[1])


def version_id(vid: str) -> int:
    """The version number of a ``_history/{vid}`` path segment; 404 when it cannot be a version."""
    if not (vid.isascii() and vid.isdigit()) or not 0 < int(vid) < 10**9:
        raise FhirError(404, "not-found", "no such version of that resource")
    return int(vid)


def http_date(time_ms: int) -> str:
    """An HTTP date (RFC 9110 ``Last-Modified``) for Unix milliseconds."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC),
                                       usegmt=True)


def history_count(value: str | None) -> int:
    """The page size of a history request's ``_count`` (400 naming it unless 1..100)."""
    if value is None:
        return DEFAULT_HISTORY_COUNT
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_HISTORY_COUNT:
        raise FhirError(400, "value", f"_count: a number of entries from 1 to {MAX_HISTORY_COUNT}", "_count")
    return int(value)


def read_headers(record: records_pb2.GetRecordResponse) -> dict[str, str]:
    """ETag and Last-Modified of a read, and a Part 2 record's re-disclosure notice."""
    headers = {"ETag": etag(record_version_number(record))}
    if record.record_version.last_updated_ms:
        headers["Last-Modified"] = http_date(record.record_version.last_updated_ms)
    if record.redisclosure_notice:
        headers["X-Redisclosure-Notice"] = " ".join(record.redisclosure_notice.split())
    return headers


def history_entry(base_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    """One entry of a history Bundle: a served version (:func:`served_version`) and the interaction that
    wrote it (version 1 a create, later ones updates), its lastModified the ledger's (meta.lastUpdated)."""
    resource_type, record_id, version = resource["resourceType"], resource["id"], int(resource["meta"]["versionId"])
    created = version == 1
    response = {"status": "201 Created" if created else "200 OK", "etag": etag(version)}
    if "lastUpdated" in resource["meta"]:
        response["lastModified"] = resource["meta"]["lastUpdated"]
    return {"fullUrl": f"{base_url}/{resource_type}/{record_id}", "resource": resource,
            "request": {"method": "POST" if created else "PUT",
                        "url": resource_type if created else f"{resource_type}/{record_id}"},
            "response": response}


async def all_versions(records: Records, record_id: str, credentials: RequestCredentials,
                       resource_type: str) -> list[records_pb2.RecordVersion]:
    """Every version's metadata of a record (records ListRecordVersions, decided as a read), oldest first."""
    written: list[records_pb2.RecordVersion] = []
    token = ""
    while True:  # a page of records' listing holds up to 100
        page = await records.call("ListRecordVersions", records_pb2.ListRecordVersionsRequest(
            record_id=record_id, purpose=credentials.purpose, page_size=MAX_HISTORY_COUNT, page_token=token),
            credentials, resource_type)
        written += page.versions
        token = page.next_page_token
        if not token:
            return written


def newest_page(written: list[records_pb2.RecordVersion], count: int, start: str | None
                ) -> tuple[list[records_pb2.RecordVersion], list[records_pb2.RecordVersion]]:
    """One page of versions newest first (at most count, from version ``start`` down, the value of a next
    link's :data:`PAGE_PARAMETER`) and the versions after it (400 for a start this server never links)."""
    newest_first = sorted(written, key=lambda v: v.version, reverse=True)
    if start is not None:
        if not (start.isascii() and start.isdigit()):
            raise FhirError(400, "value", f"{PAGE_PARAMETER}: use the next link this server returned",
                            PAGE_PARAMETER)
        newest_first = [v for v in newest_first if v.version <= int(start)]
    return newest_first[:count], newest_first[count:]


def version_routes(records: Records, config: GatewayConfig) -> list[Route]:
    """The version-aware instance routes over records (read, vread, update, history)."""

    def reader(request: Request) -> tuple[str, str, RequestCredentials]:
        """The type, id and credentials of a read; 404 for an id this server never assigns, 400 without
        a purpose of use."""
        resource_type = _checked_type(request.path_params["type"])
        record_id = request.path_params["id"]
        credentials = reader_credentials(request, config)
        if not _ID.match(record_id):
            raise FhirError(404, "not-found", f"no {resource_type} with that id")
        return resource_type, record_id, credentials

    async def get_version(resource_type: str, record_id: str, credentials: RequestCredentials,
                          version: int = 0) -> records_pb2.GetRecordResponse:
        record = await records.call("GetRecord", records_pb2.GetRecordRequest(
            record_id=record_id, purpose=credentials.purpose, version=version), credentials, resource_type)
        if record.resource_type != resource_type:
            raise FhirError(404, "not-found", f"no {resource_type} with that id")
        return record

    async def read(request: Request) -> Response:
        resource_type, record_id, credentials = reader(request)
        record = await get_version(resource_type, record_id, credentials)
        return fhir_response(served_version(record), headers=read_headers(record))

    async def vread(request: Request) -> Response:
        resource_type, record_id, credentials = reader(request)
        version = version_id(request.path_params["vid"])
        record = await get_version(resource_type, record_id, credentials, version)
        return fhir_response(served_version(record), headers=read_headers(record))

    async def update(request: Request) -> Response:
        negotiate(request)
        resource_type = _checked_type(request.path_params["type"])
        record_id = request.path_params["id"]
        credentials = request_credentials(request.headers, config.verifier)
        if_version = if_match_version(request.headers.get("if-match"))
        raw, resource = await typed_resource(request, config, resource_type)
        if resource.get("id") != record_id:
            raise FhirError(400, "invalid", f"{resource_type}.id: must be the id in the URL (the record id)",
                            f"{resource_type}.id")
        # A Patient's id here is the record id (records accepts it for a version of that record), not its patient.
        patient_id = "" if resource_type == "Patient" else patient_of(resource)
        try:
            stored = await records.call("UpdateRecord", records_pb2.UpdateRecordRequest(
                record_id=record_id, resource_json=raw, if_version=if_version), credentials, resource_type)
        except FhirError as exc:
            if exc.status != 409:
                raise
            # Records' ALREADY_EXISTS: a concurrent update took the next version first (its data key exists).
            raise (FhirError(412, "conflict", CONCURRENT_UPDATE.format(f'If-Match: W/"{if_version}"'))
                   if if_version else FhirError(409, "conflict", CONCURRENT_UPDATE.format("the update"))) from None
        location = f"{_base_url(request, config)}/{resource_type}/{stored.record_id}/_history/{stored.version}"
        headers = {"Location": location, "ETag": etag(stored.version)}
        served = as_served(resource, stored.record_id, stored.patient_id or patient_id, stored.version)
        return _created(request, served, headers, status=200)

    async def history(request: Request) -> Response:
        resource_type, record_id, credentials = reader(request)
        count = history_count(request.query_params.get("_count"))
        written = await all_versions(records, record_id, credentials, resource_type)
        shown, rest = newest_page(written, count, request.query_params.get(PAGE_PARAMETER))
        reads = await asyncio.gather(*(get_version(resource_type, record_id, credentials, v.version)
                                       for v in shown))
        base_url = _base_url(request, config)
        here = f"{base_url}/{resource_type}/{record_id}/_history"
        links = [{"relation": "self", "url": str(request.url) if not config.public_base_url else
                  here + (f"?{request.url.query}" if request.url.query else "")}]
        if rest:
            links.append({"relation": "next",
                          "url": f"{here}?{urlencode({'_count': count, PAGE_PARAMETER: rest[0].version})}"})
        bundle = {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(written),
            "link": links,
            "entry": [history_entry(base_url, served_version(record)) for record in reads],
        }
        return fhir_response(bundle)

    return [
        Route("/{type}/{id}/_history", history, methods=["GET"]),
        Route("/{type}/{id}/_history/{vid}", vread, methods=["GET"]),
        Route("/{type}/{id}", read, methods=["GET"]),
        Route("/{type}/{id}", update, methods=["PUT"]),
    ]
