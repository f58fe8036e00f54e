"""The FHIR R4 REST gateway's HTTP application (Starlette; docs/fhir.md).

Routes: ``GET /healthz`` (alive), ``GET /readyz`` (records answers its health check), ``GET /metadata`` (the
CapabilityStatement), ``POST /{type}`` (create: records PutRecord), ``POST /`` (a batch or transaction Bundle:
records ImportBundle; or NDJSON, a resource a line, as a batch: :mod:`carechain.fhir.ndjson`), read, vread, update
and history (:mod:`carechain.fhir.versions`), the SMART Backend Services endpoints ``POST /token`` (relayed through
records' ExchangeClientAssertion: the gateway calls records only) and ``GET /.well-known/smart-configuration``
(:mod:`carechain.fhir.smart`), search (``GET /{type}``, ``GET /`` with ``_type``) and
``GET /Patient/{id}/$everything`` (:mod:`carechain.fhir.search`), the ledger's Provenance (``GET /Provenance?target=``,
:mod:`carechain.fhir.provenance_routes`). Every error is an OperationOutcome (:mod:`carechain.fhir.outcomes`); every
request is one SERVER span whose context continues into the gRPC calls, and one JSON log line without ids or values.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carechain.core.errors import InvalidArgument
from carechain.core.fhir import parse_json
from carechain.core.telemetry import current_trace_id, http_server_span
from carechain.core.tokens import TokenVerifier
from carechain.fhir import ndjson, search
from carechain.fhir.auth import RequestCredentials, request_credentials
from carechain.fhir.capability import capability_statement, resource_types
from carechain.fhir.outcomes import FHIR_JSON, FhirError, http_error, operation_outcome, rpc_error
from carechain.fhir.patients import as_served, bundle_patients, name_patient_element, patient_of
from carechain.fhir.smart import TOKEN_PATH, smart_routes
from carechain.records.v1 import records_pb2, records_pb2_grpc
from carechain.runtime.auth import Caller

log = logging.getLogger("carechain.fhir")

#: The version of a record ImportBundle commits: it only creates (updates are PUT /{type}/{id}, fhir.versions).
CREATED_VERSION = 1
#: GetRecord calls of one search page in flight at once.
READS_IN_FLIGHT = 8
_JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
_FORMATS = {"json": FHIR_JSON, **{t: t for t in _JSON_TYPES}}
_ANY = frozenset({"*/*", "application/*"})
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR R4 id
_PURPOSE_REQUIRED = "X-Purpose-Of-Use: a read needs a purpose of use (e.g. TREAT)"


@dataclass(frozen=True)
class GatewayConfig:
    """What the app needs besides the records channel (from FhirSettings)."""

    public_base_url: str = ""
    max_resource_bytes: int = 4 * 1024 * 1024
    max_bundle_bytes: int = 32 * 1024 * 1024
    rpc_timeout_seconds: float = 10.0
    bundle_timeout_seconds: float = 300.0
    #: The SMART token endpoint's public URL (what client assertions name as aud; identity's
    #: CARECHAIN_SMART_TOKEN_URL); empty: <public_base_url>/token, and no token endpoint without a base URL.
    smart_token_url: str = ""
    #: Verifies bearer tokens before any records call (None: records alone checks them).
    verifier: TokenVerifier[Caller] | None = None

    @property
    def token_url(self) -> str:
        """The SMART token endpoint's URL, or empty when none is configured."""
        if self.smart_token_url:
            return self.smart_token_url
        return f"{self.public_base_url.rstrip('/')}{TOKEN_PATH}" if self.public_base_url else ""


class Records:
    """The records service, called with the REST caller's credentials, off the event loop."""

    def __init__(self, channel: grpc.Channel, config: GatewayConfig) -> None:
        self._stub = records_pb2_grpc.RecordsServiceStub(channel)
        #: For the token endpoint: records' unauthenticated ExchangeClientAssertion relay.
        self.token_exchange = self._stub
        self._health = health_pb2_grpc.HealthStub(channel)
        self._config = config

    async def call(self, method: str, request: Any, credentials: RequestCredentials, resource_type: str = "",
                   timeout: float | None = None) -> Any:
        """records.<method>(request) as the caller; a refusal is the FhirError it stands for."""
        rpc = getattr(self._stub, method)
        metadata = (("authorization", credentials.authorization),)
        # The thread runs in this request's context, so the call's CLIENT span is a child of its SERVER span.
        context = contextvars.copy_context()
        try:
            return await run_in_threadpool(context.run, rpc, request, metadata=metadata,
                                           timeout=timeout or self._config.rpc_timeout_seconds)
        except grpc.RpcError as exc:
            raise rpc_error(exc, resource_type) from None

    async def stream(self, method: str, requests: list[Any], credentials: RequestCredentials,
                     timeout: float | None = None) -> list[Any]:
        """Every reply of the stream-stream records.<method>(requests) as the caller; a refusal of the whole call
        is the FhirError it stands for."""
        rpc = getattr(self._stub, method)
        metadata = (("authorization", credentials.authorization),)
        context = contextvars.copy_context()  # as call(): the CLIENT span is a child of the request's SERVER span

        def replies() -> list[Any]:
            return list(rpc(iter(requests), metadata=metadata, timeout=timeout or self._config.rpc_timeout_seconds))

        try:
            return await run_in_threadpool(context.run, replies)
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None

    async def serving(self) -> bool:
        """Whether records reports SERVING (no credentials: health is public)."""
        try:
            reply = await run_in_threadpool(self._health.Check, health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response."""
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), status,
                    headers=headers, media_type=f"{FHIR_JSON}; charset=utf-8")


def negotiate(request: Request) -> None:
    """406 unless the client accepts FHIR JSON (``_format`` first, then ``Accept``)."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        if wanted.strip().lower() not in _FORMATS:
            raise FhirError(406, "not-supported", "_format: this server speaks FHIR JSON only (_format=json)")
        return
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if not media & (_JSON_TYPES | _ANY):
        raise FhirError(406, "not-supported", "Accept: this server answers application/fhir+json only")


async def read_body(request: Request, limit: int, what: str, media_types: frozenset[str] = _JSON_TYPES,
                    expected: str = FHIR_JSON) -> bytes:
    """The request body, FHIR JSON (or another of media_types, expected the one to name) of at most limit bytes
    (415 for another content type, 413 beyond limit)."""
    content_type = request.headers.get("content-type", "")
    media, _, parameters = content_type.partition(";")
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in parameters.split(";")
                    if p.strip().lower().startswith("charset=")), "utf-8")
    if media.strip().lower() not in media_types or charset != "utf-8":
        raise FhirError(415, "not-supported", f"Content-Type: send {expected} (UTF-8)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-costly", f"{what} is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FhirError(413, "too-costly", f"{what} is over the limit of {limit} bytes")
    return bytes(body)


def parse_resource(raw: bytes, root: str) -> dict[str, Any]:
    """The JSON object of a request body (400 naming the problem, never echoing it)."""
    try:
        content = parse_json(raw)
    except InvalidArgument as exc:
        raise http_error(grpc.StatusCode.INVALID_ARGUMENT, exc.message, root) from None
    if not isinstance(content, dict):
        raise FhirError(400, "structure", f"{root}: the body must be a JSON object", root)
    return content


def reader_credentials(request: Request, config: GatewayConfig) -> RequestCredentials:
    """The credentials of a read or search (FHIR JSON accepted, a bearer token, a purpose of use: 400 without)."""
    negotiate(request)
    credentials = request_credentials(request.headers, config.verifier)
    if not credentials.purpose:
        raise FhirError(400, "required", _PURPOSE_REQUIRED)
    return credentials


async def typed_resource(request: Request, config: GatewayConfig, resource_type: str) -> tuple[bytes, dict[str, Any]]:
    """A create's or update's body: (its exact bytes, its JSON), a resource of the URL's type (400 otherwise)."""
    raw = await read_body(request, config.max_resource_bytes, resource_type)
    resource = parse_resource(raw, resource_type)
    if resource.get("resourceType") != resource_type:
        raise FhirError(400, "invalid", f"{resource_type}.resourceType: must be {resource_type}, as in the URL",
                        f"{resource_type}.resourceType")
    return raw, resource


def _base_url(request: Request, config: GatewayConfig) -> str:
    return (config.public_base_url or str(request.base_url)).rstrip("/")


def _checked_type(resource_type: str) -> str:
    if resource_type not in _TYPES:
        raise FhirError(404, "not-supported", "this server stores no resources of that type")
    return resource_type


_TYPES = frozenset(resource_types())


def build_app(records: Records, config: GatewayConfig) -> Starlette:
    """The gateway's ASGI application over records."""
    published = datetime.datetime.now(datetime.UTC)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await records.serving():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "records service not serving"}, status_code=503)

    async def metadata(request: Request) -> Response:
        negotiate(request)
        return fhir_response(capability_statement(_base_url(request, config), published))

    async def create(request: Request) -> Response:
        negotiate(request)
        resource_type = _checked_type(request.path_params["type"])
        credentials = request_credentials(request.headers, config.verifier)
        raw, resource = await typed_resource(request, config, resource_type)
        patient_id = patient_of(resource)
        try:
            stored = await records.call("PutRecord", records_pb2.PutRecordRequest(
                patient_id=patient_id, resource_json=raw), credentials, resource_type)
        except FhirError as exc:
            raise name_patient_element(exc, resource_type) from None
        location = f"{_base_url(request, config)}/{resource_type}/{stored.record_id}/_history/{stored.version}"
        headers = {"Location": location, "ETag": f'W/"{stored.version}"'}
        served = as_served(resource, stored.record_id, patient_id, stored.version)
        return _created(request, served, headers)

    async def searched(request: Request, query: search.SearchQuery, credentials: RequestCredentials,
                       url: str) -> Response:
        """One page of a search: SearchRecords, then each permitted match read with GetRecord (decided, audited)."""
        found = await records.call("SearchRecords", query.request, credentials)
        page = search.SearchPage([], found.withheld, sum(1 for m in found.records if m.large), found.next_page_token)
        slots = asyncio.Semaphore(READS_IN_FLIGHT)

        async def read_one(match: records_pb2.RecordSummary) -> records_pb2.GetRecordResponse | None:
            async with slots:
                try:
                    return await records.call("GetRecord", records_pb2.GetRecordRequest(
                        record_id=match.record_id, purpose=credentials.purpose,
                        provenance=query.revinclude_provenance), credentials, match.resource_type)
                except FhirError as exc:
                    if exc.status == 403:  # consent (or a scope) refused it since the search: withheld
                        page.withheld += 1
                        return None
                    if exc.status in (404, 410):  # erased since the search: no longer a match
                        return None
                    raise

        reads = await asyncio.gather(*(read_one(m) for m in found.records if not m.large))
        page.records = [r for r in reads if r is not None]
        return fhir_response(search.searchset(_base_url(request, config), url, query, page))

    async def type_search(request: Request) -> Response:
        resource_type = _checked_type(request.path_params["type"])
        credentials = reader_credentials(request, config)
        query = search.parse_search(resource_type, request.query_params.multi_items(), _TYPES, credentials.purpose,
                                    search.lenient(request.headers.get("prefer", "")))
        return await searched(request, query, credentials, f"{_base_url(request, config)}/{resource_type}")

    async def system_search(request: Request) -> Response:
        credentials = reader_credentials(request, config)
        query = search.parse_search(None, request.query_params.multi_items(), _TYPES, credentials.purpose,
                                    search.lenient(request.headers.get("prefer", "")))
        return await searched(request, query, credentials, _base_url(request, config))

    async def everything(request: Request) -> Response:
        credentials = reader_credentials(request, config)
        patient_id = request.path_params["id"]
        query = search.parse_everything(patient_id, request.query_params.multi_items(), _TYPES, credentials.purpose,
                                        search.lenient(request.headers.get("prefer", "")))
        return await searched(request, query, credentials,
                              f"{_base_url(request, config)}/Patient/{query.request.patient_id}/$everything")

    async def bundle(request: Request) -> Response:
        negotiate(request)
        credentials = request_credentials(request.headers, config.verifier)
        if ndjson.is_ndjson(request.headers.get("content-type", "")):
            return await ndjson_batch(request, credentials)
        raw = await read_body(request, config.max_bundle_bytes, "Bundle")
        content = parse_resource(raw, "Bundle")
        if content.get("resourceType") != "Bundle":
            raise FhirError(400, "invalid", "Bundle.resourceType: POST / takes a batch or transaction Bundle",
                            "Bundle.resourceType")
        imported, patient_ids = bundle_patients(content)
        if not patient_ids:
            raise FhirError(400, "required", "Bundle.entry: name the registered patient with a Patient entry "
                            "'PUT Patient/<pseudonym>' or Patient/<pseudonym> references", "Bundle.entry")
        try:
            response = await records.call("ImportBundle", records_pb2.ImportBundleRequest(
                bundle_json=json.dumps(imported, separators=(",", ":"), ensure_ascii=False).encode(),
                patient_ids=patient_ids), credentials, "Bundle", timeout=config.bundle_timeout_seconds)
        except FhirError as exc:
            if exc.expression.startswith("patient_ids["):  # the i-th patient the bundle names (patient_ids)
                number = int(exc.expression.removeprefix("patient_ids[").rstrip("]")) + 1
                exc.expression = "Bundle.entry"
                exc.diagnostics = exc.diagnostics.replace(exc.diagnostics.split(": ", 1)[0],
                                                          f"Bundle.entry: patient {number} the bundle names", 1)
            raise
        return fhir_response(_served_response_bundle(response, imported, _base_url(request, config)))

    async def ndjson_batch(request: Request, credentials: RequestCredentials) -> Response:
        """POST / with NDJSON: each line a create, one ImportRecords stream; a batch-response (fhir.ndjson)."""
        raw = await read_body(request, config.max_bundle_bytes, "NDJSON body", ndjson.NDJSON_TYPES, ndjson.FHIR_NDJSON)
        lines = ndjson.split_lines(raw, _TYPES)
        requests = [line.request for line in lines if line.request is not None]
        results = await records.stream("ImportRecords", requests, credentials,
                                       timeout=config.bundle_timeout_seconds) if requests else []
        return fhir_response(ndjson.batch_response(lines, results, _base_url(request, config), CREATED_VERSION))

    async def smart_not_configured(request: Request) -> Response:
        raise FhirError(404, "not-supported", "SMART Backend Services is not configured on this server "
                        "(CARECHAIN_PUBLIC_BASE_URL or CARECHAIN_SMART_TOKEN_URL)")

    routes: list[Any] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
    ]
    if config.token_url:
        routes += smart_routes(lambda: records.token_exchange, config.token_url)
    else:
        routes += [Route("/.well-known/smart-configuration", smart_not_configured, methods=["GET"]),
                   Route(TOKEN_PATH, smart_not_configured, methods=["POST"])]
    from carechain.fhir.audit_routes import audit_routes  # before /{type}: Consent and AuditEvent are not records
    from carechain.fhir.consent_routes import consent_routes
    routes += consent_routes(records, config) + audit_routes(records, config)
    routes += [
        Route("/", bundle, methods=["POST"]),
        Route("/", system_search, methods=["GET"]),
        Route("/Patient/{id}/$everything", everything, methods=["GET"]),
    ]
    # Before /{type}: GET /Provenance?target= is the ledger's provenance, without target the stored records'.
    from carechain.fhir.provenance_routes import provenance_routes  # builds on this module's helpers
    routes += provenance_routes(records, config, type_search)
    routes += [
        Route("/{type}", create, methods=["POST"]),
        Route("/{type}", type_search, methods=["GET"]),
    ]
    from carechain.fhir.versions import version_routes  # here: versions builds on this module's helpers
    routes += version_routes(records, config)
    app = Starlette(routes=routes, exception_handlers={
        FhirError: _fhir_error, 404: _not_found, 405: _not_allowed, Exception: _internal_error})
    return app


def _created(request: Request, served: dict[str, Any], headers: dict[str, str], status: int = 201) -> Response:
    """201 (an update: 200) with what ``Prefer: return=`` asks for (default: the resource as it now reads)."""
    prefer = request.headers.get("prefer", "").replace(" ", "").lower()
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    if "return=operationoutcome" in prefer:
        outcome = operation_outcome("information", "informational", "created" if status == 201 else "updated")
        return fhir_response(outcome, status, headers)
    return fhir_response(served, status, headers)


def _served_response_bundle(response: records_pb2.ImportBundleResponse, imported: dict[str, Any],
                            base_url: str) -> dict[str, Any]:
    """records' batch/transaction-response with each created entry's location on this server."""
    body = json.loads(response.response_bundle_json)
    entries = imported["entry"]
    for result, entry in zip(response.results, body["entry"], strict=True):
        if result.code == 0:
            resource_type = entries[result.index]["resource"]["resourceType"]
            entry["response"]["location"] = f"{base_url}/{resource_type}/{result.record_id}/_history/{CREATED_VERSION}"
            entry["response"]["etag"] = f'W/"{CREATED_VERSION}"'
        else:
            for issue in entry["response"].get("outcome", {}).get("issue", []):
                path, sep, why = issue.get("diagnostics", "").partition(": ")
                if sep and path.startswith("resource"):
                    issue["expression"] = [f"Bundle.entry[{result.index}].{path}"]
    return body


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    if exc.status >= 500:
        log.warning("request failed", extra={"http_status": exc.status, "issue": exc.code})
    return fhir_response(exc.outcome(), exc.status, exc.headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    return fhir_response(operation_outcome("error", "not-supported", "no such endpoint on this FHIR server"), 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return fhir_response(operation_outcome("error", "not-supported", "this interaction is not supported (see "
                                           "/metadata)"), 405)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The exception's message may hold a request value: its type and place only, as the gRPC servers log.
    trace_id = current_trace_id()
    log.error("internal error", extra={"error_type": type(exc).__name__, "trace_id": trace_id})
    return fhir_response(operation_outcome("error", "exception", f"internal error (trace id {trace_id})"), 500)


class Observed:
    """ASGI middleware: one SERVER span and one JSON log line per HTTP request (route template, status, time)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_template(self.app, scope)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers", [])]
        span = http_server_span(scope["method"], route, headers)
        status = 500
        started = time.monotonic()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # noqa: BLE001, S110 - answered (500) and logged by type by _internal_error
            # Re-raised, the ASGI server would log the traceback with the message, which may hold a request value.
            pass
        finally:
            log.info("served", extra={"http_method": scope["method"], "http_route": route, "http_status": status,
                                      "duration_ms": round((time.monotonic() - started) * 1000, 1)})
            span.finish_http(status)


def _route_template(app: Starlette, scope: Scope) -> str:
    """The template of the route a request matches (``/{type}/{id}``), never its path (which holds ids)."""
    for route in app.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", "") or "/"
    return "unmatched"


def observed(app: Starlette) -> ASGIApp:
    """app wrapped in :class:`Observed`."""
    return Observed(app)

