"""The ledger's Provenance over FHIR REST (issue 14 part 6): ``GET /Provenance?target=...`` and
``GET /Provenance/<record id>.<version>`` (:mod:`carechain.fhir.provenance` for the ids).

- ``GET /Provenance?target=<type>/<id>`` is a ``searchset`` Bundle of the Provenance of each version of
  that record, newest first, paged by ``_count`` with ``next`` links as the history is: records
  ListRecordVersions for the versions, then GetRecord with ``version`` and ``provenance`` for each (decided
  and audited as reads, so a client consent refuses the record gets the read's 403). ``target=<type>/<id>/
  _history/<n>`` is that version's alone (none when the record has no such version). ``target`` does not
  combine with ``patient``: without ``target``, ``GET /Provenance`` is the search of stored Provenance
  records as for every type.
- ``GET /Provenance/<record id>.<version>``: that version's Provenance (GetRecord, as a vread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carechain.fhir import search
from carechain.fhir.app import _TYPES, GatewayConfig, Records, _base_url, fhir_response, reader_credentials
from carechain.fhir.auth import RequestCredentials
from carechain.fhir.outcomes import FhirError
from carechain.fhir.provenance import (
    PROVENANCE_ID_PATTERN,
    TARGET,
    parse_provenance_id,
    parse_target,
    provenance_entry,
    served_provenance,
)
from carechain.fhir.versions import PAGE_PARAMETER, all_versions, history_count, newest_page
from carechain.records.v1 import records_pb2

#: Parameters a target search takes besides target (others: 400, or ignored when lenient).
TARGET_PARAMETERS = frozenset({TARGET, "_count", PAGE_PARAMETER})


class _ProvenanceId(Convertor[str]):
    """Matches only ledger Provenance ids, so ``/Provenance/<record id>`` stays the stored record's read."""

    regex = PROVENANCE_ID_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _ProvenanceType(_ProvenanceId):
    """Matches the type segment ``Provenance`` only: the route keeps ``type`` for the stored records' search."""

    regex = "Provenance"


register_url_convertor("ledger_provenance_id", _ProvenanceId())
register_url_convertor("provenance_type", _ProvenanceType())


def provenance_routes(records: Records, config: GatewayConfig,
                      stored_search: Callable[[Request], Awaitable[Response]]) -> list[Route]:
    """The Provenance routes; stored_search answers ``GET /Provenance`` without ``target`` (a record search)."""

    async def provenance_of(record_id: str, version: int, credentials: RequestCredentials,
                            resource_type: str = "Provenance") -> records_pb2.GetRecordResponse:
        return await records.call("GetRecord", records_pb2.GetRecordRequest(
            record_id=record_id, purpose=credentials.purpose, version=version, provenance=True),
            credentials, resource_type)

    async def search_provenance(request: Request) -> Response:
        params = request.query_params.multi_items()
        if TARGET not in request.query_params:
            return await stored_search(request)
        credentials = reader_credentials(request, config)
        grouped: dict[str, list[str]] = {}
        for name, value in params:
            grouped.setdefault(name, []).append(value)
        if any(name in grouped for name in ("patient", "subject")):
            raise FhirError(400, "not-supported", f"{TARGET}: the ledger's Provenance of one record; it does not "
                            "combine with patient (without target, a search of stored Provenance records)", TARGET)
        unknown = sorted(n for n in grouped if n not in TARGET_PARAMETERS | {"_format", "_pretty"})
        if unknown and not search.lenient(request.headers.get("prefer", "")):
            raise FhirError(400, "not-supported", f"{unknown[0]}: not supported with {TARGET} (see /metadata; or "
                            "send Prefer: handling=lenient to have it ignored)", unknown[0])
        if len(grouped[TARGET]) != 1 or "," in grouped[TARGET][0]:
            raise FhirError(400, "not-supported", f"{TARGET}: give one record", TARGET)
        resource_type, record_id, version = parse_target(grouped[TARGET][0], _TYPES)
        count = history_count(request.query_params.get("_count"))
        if version:
            shown, rest, total = [version], [], 0  # total: what is found of that version, below
        else:
            written = await all_versions(records, record_id, credentials, resource_type)
            page, after = newest_page(written, count, request.query_params.get(PAGE_PARAMETER))
            shown, rest, total = [v.version for v in page], [v.version for v in after], len(written)

        async def read(number: int) -> records_pb2.GetRecordResponse | None:
            try:
                return await provenance_of(record_id, number, credentials, resource_type)
            except FhirError as exc:
                if version and exc.status == 404:  # the record has no such version: nothing matches
                    return None
                raise

        reads = [r for r in await asyncio.gather(*(read(n) for n in shown)) if r is not None]
        base_url = _base_url(request, config)
        if any(r.resource_type != resource_type for r in reads):  # the id is another type's record: no match
            reads, rest, total = [], [], 0
        entries = [provenance_entry(base_url, r, "match") for r in reads if r.provenance_json]
        if version:
            total = len(entries)
        url = f"{base_url}/Provenance"
        own = [(n, v) for n, v in params if n in TARGET_PARAMETERS]
        links = [{"relation": "self", "url": search.link(url, own)}]
        if rest:
            links.append({"relation": "next", "url": search.link(url, [
                (TARGET, grouped[TARGET][0]), ("_count", str(count)), (PAGE_PARAMETER, str(rest[0]))])})
        return fhir_response(search.bundle_of(entries, search.outcome_issues(0, 0, unknown), links, total))

    async def read_provenance(request: Request) -> Response:
        credentials = reader_credentials(request, config)
        named = parse_provenance_id(request.path_params["id"])  # the route's convertor matched it: never None
        record = await provenance_of(*named, credentials) if named else None
        if record is None or not record.provenance_json:
            raise FhirError(404, "not-found", "no Provenance with that id")
        return fhir_response(served_provenance(record))

    return [
        Route("/{type:provenance_type}", search_provenance, methods=["GET"]),
        Route("/Provenance/{id:ledger_provenance_id}", read_provenance, methods=["GET"]),
    ]
