"""``Consent`` on the FHIR gateway: a patient (or delegate) grants a FHIR Consent it signed (docs/fhir.md).

``POST /Consent`` takes the Consent JSON as the body and ``X-Consent-Signature``: a compact JWS by the
patient's (or an active delegate's) own Ed25519 key over the exact body bytes
(:mod:`carechain.core.consent_jws`; ``carechain consent sign-fhir`` makes one). records relays it to consent,
which verifies it and commits a grant the validators accept only with that signature: neither this gateway
nor svc-consent can grant for a patient alone. Answers: 201 with ``Location: Consent/<id>`` and the Consent as
stored; 400 naming the element (``Consent.*``); 401 without a valid signature; 403 when the signer may not act
for the patient; 409 for a consent id already granted; 422 for a business rule (e.g. a replayed signature).

``PUT /Consent/{id}`` with ``{"resourceType": "Consent", "id": "<id>", "status": "inactive"}`` (and nothing
else: it goes on the ledger with the signature), signed the same way, revokes that consent: 200 with the
Consent as now stored (``inactive``); 404 for a consent that is not the patient's.

``GET /Consent?patient=Patient/<pseudonym>`` is the patient's consents as a searchset Bundle,
``GET /Consent/{id}`` one of them (the patient, or an active delegate naming ``patient``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carechain.fhir.auth import request_credentials, unauthenticated
from carechain.fhir.outcomes import FhirError
from carechain.fhir.search import bundle_of, link, match_entry
from carechain.fhir.searchset import check_parameters, patient_parameter
from carechain.records.v1 import records_pb2

#: The request header carrying the patient's compact JWS over the body.
CONSENT_SIGNATURE_HEADER = "x-consent-signature"
_CONSENT = "Consent"


def consent_routes(records: Any, config: Any) -> list[Route]:
    """The Consent routes over records (app.Records) with the app's GatewayConfig."""
    from carechain.fhir import app  # the app's helpers (this module is imported by build_app, not at import)

    async def signed_consent(request: Request) -> tuple[Any, dict[str, Any]]:
        """(records' answer, the Consent sent) for a request carrying a signed Consent."""
        app.negotiate(request)
        credentials = request_credentials(request.headers, config.verifier)
        signature = request.headers.get(CONSENT_SIGNATURE_HEADER, "").strip()
        if not signature:
            raise unauthenticated("X-Consent-Signature: a compact JWS by the patient (or delegate) over the exact "
                                  "Consent body is required (docs/fhir.md, \"Consent\")")
        raw = await app.read_body(request, config.max_resource_bytes, _CONSENT)
        resource = app.parse_resource(raw, _CONSENT)
        if resource.get("resourceType") != _CONSENT:
            raise FhirError(400, "invalid", "Consent.resourceType: must be Consent, as in the URL",
                            "Consent.resourceType")
        revoking = request.method == "PUT"
        if revoking and resource.get("id") != request.path_params["id"]:
            raise FhirError(400, "invalid", "Consent.id: must be the id in the URL", "Consent.id")
        if revoking and resource.get("status") != "inactive":
            raise FhirError(400, "invalid", 'Consent.status: PUT revokes: {"resourceType": "Consent", "id": <the id '
                            'in the URL>, "status": "inactive"}', "Consent.status")
        if not revoking and resource.get("status") == "inactive":
            raise FhirError(400, "invalid", "Consent.status: POST grants an active Consent; revoke with PUT "
                            "/Consent/{id}", "Consent.status")
        stored = await records.call("SubmitConsent", records_pb2.SubmitConsentRequest(
            consent_json=raw, consent_jws=signature), credentials, _CONSENT)
        return stored, json.loads(stored.consent_json)

    async def create(request: Request) -> Response:
        granted, served = await signed_consent(request)
        base = app._base_url(request, config)
        return app._created(request, served, {"Location": f"{base}/Consent/{granted.consent_id}"})

    async def revoke(request: Request) -> Response:
        _, served = await signed_consent(request)
        return app.fhir_response(served)

    async def search(request: Request) -> Response:
        app.negotiate(request)
        credentials = request_credentials(request.headers, config.verifier)
        check_parameters(request, ("patient",), _CONSENT)
        patient = patient_parameter(request)
        listed = await records.call("ListPatientConsents", records_pb2.ListPatientConsentsRequest(
            patient_id=patient), credentials, _CONSENT)
        base = app._base_url(request, config)
        entries = [match_entry(base, json.loads(c.consent_json)) for c in listed.consents]
        params = [("patient", f"Patient/{patient}")] if patient else []
        links = [{"relation": "self", "url": link(f"{base}/{_CONSENT}", params)}]
        return app.fhir_response(bundle_of(entries, [], links, total=len(entries)))

    async def read(request: Request) -> Response:
        app.negotiate(request)
        credentials = request_credentials(request.headers, config.verifier)
        check_parameters(request, ("patient",), _CONSENT)
        listed = await records.call("ListPatientConsents", records_pb2.ListPatientConsentsRequest(
            patient_id=patient_parameter(request)), credentials, _CONSENT)
        for consent in listed.consents:
            if consent.consent_id == request.path_params["id"]:
                return app.fhir_response(json.loads(consent.consent_json))
        raise FhirError(404, "not-found", "no Consent with that id among the patient's consents")

    return [
        Route("/Consent", create, methods=["POST"]),
        Route("/Consent", search, methods=["GET"]),
        Route("/Consent/{id}", read, methods=["GET"]),
        Route("/Consent/{id}", revoke, methods=["PUT"]),
    ]
