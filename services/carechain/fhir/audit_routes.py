"""``AuditEvent`` search on the FHIR gateway: a patient's own accounting of disclosures (docs/fhir.md).

``GET /AuditEvent?patient=Patient/<pseudonym>`` (the patient may leave ``patient`` out; an active guardian
names it) with ``date`` (``ge``/``gt``/``le``/``lt``/``eq`` on the event time), ``_count`` and the ``next``
link's ``_page_token``: a searchset Bundle of FHIR AuditEvent resources, newest first, from the audit trail
(records ExportAccessHistory, which holds the caller to their own patient: anyone else is 403 and learns
nothing about the patient).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carechain.fhir.auth import request_credentials
from carechain.fhir.search import bundle_of, link, match_entry
from carechain.fhir.searchset import check_parameters, count_parameter, date_parameters, patient_parameter
from carechain.records.v1 import records_pb2

_AUDIT_EVENT = "AuditEvent"
_PAGE_TOKEN = "_page_token"  # noqa: S105 - a search parameter name, not a secret
_SUPPORTED = ("patient", "date", "_count", _PAGE_TOKEN)


def audit_routes(records: Any, config: Any) -> list[Route]:
    """The AuditEvent route over records (app.Records) with the app's GatewayConfig."""
    from carechain.fhir import app  # the app's helpers (this module is imported by build_app, not at import)

    async def search(request: Request) -> Response:
        app.negotiate(request)
        credentials = request_credentials(request.headers, config.verifier)
        check_parameters(request, _SUPPORTED, _AUDIT_EVENT)
        patient = patient_parameter(request)
        since_ms, until_ms = date_parameters(request)
        count = count_parameter(request)
        page_token = request.query_params.get(_PAGE_TOKEN, "")
        page = await records.call("ExportAccessHistory", records_pb2.ExportAccessHistoryRequest(
            patient_id=patient, since_ms=since_ms, until_ms=until_ms, page_size=count, page_token=page_token),
            credentials, _AUDIT_EVENT)
        exported = json.loads(page.bundle_json)
        base = app._base_url(request, config)
        # The query as given (the page token aside), so the next link repeats it exactly.
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in (_PAGE_TOKEN, "_format")]
        url = f"{base}/{_AUDIT_EVENT}"
        links = [{"relation": "self", "url": link(url, params + ([(_PAGE_TOKEN, page_token)] if page_token else []))}]
        if page.next_page_token:
            links.append({"relation": "next", "url": link(url, [*params, (_PAGE_TOKEN, page.next_page_token)])})
        entries = [match_entry(base, entry["resource"]) for entry in exported.get("entry", [])]
        return app.fhir_response(bundle_of(entries, [], links))

    return [Route("/AuditEvent", search, methods=["GET"])]

