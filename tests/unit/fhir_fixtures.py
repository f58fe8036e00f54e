"""A records service on a real in-process gRPC server for the FHIR gateway's route tests: it answers from a
script (response or status per method) and keeps every request and its metadata."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.testclient import TestClient

from carechain.client.channels import intercept, plain_channel
from carechain.fhir.app import GatewayConfig, Records, build_app, observed
from carechain.records.v1 import records_pb2_grpc


@dataclass
class Scripted(records_pb2_grpc.RecordsServiceServicer):
    """Answers each method with the scripted response, or aborts with a scripted (code, message); a callable
    answer is called with the request (e.g. a GetRecord answering each version)."""

    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)

    def _answer(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append((method, request, dict(context.invocation_metadata())))
        answer = self.answers[method]
        if callable(answer):  # an answer per request (e.g. GetRecord of each record a search found)
            answer = answer(request)
        if isinstance(answer, tuple):
            context.abort(*answer)
        return answer

    def PutRecord(self, request, context):
        return self._answer("PutRecord", request, context)

    def GetRecord(self, request, context):
        return self._answer("GetRecord", request, context)

    def ImportBundle(self, request, context):
        return self._answer("ImportBundle", request, context)

    def ImportRecords(self, requests, context):
        # The whole stream is one call: its requests as a list, answered with the list of results.
        yield from self._answer("ImportRecords", list(requests), context)

    def SearchRecords(self, request, context):
        return self._answer("SearchRecords", request, context)

    def ExchangeClientAssertion(self, request, context):
        return self._answer("ExchangeClientAssertion", request, context)
    def UpdateRecord(self, request, context):
        return self._answer("UpdateRecord", request, context)

    def ListRecordVersions(self, request, context):
        return self._answer("ListRecordVersions", request, context)

    def SubmitConsent(self, request, context):
        return self._answer("SubmitConsent", request, context)

    def ListPatientConsents(self, request, context):
        return self._answer("ListPatientConsents", request, context)

    def ExportAccessHistory(self, request, context):
        return self._answer("ExportAccessHistory", request, context)


@contextmanager
def gateway(config: GatewayConfig | None = None) -> Iterator[tuple[TestClient, Scripted]]:
    """A test client of the gateway app over a scripted records server."""
    records = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    records_pb2_grpc.add_RecordsServiceServicer_to_server(records, server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = intercept(plain_channel(f"127.0.0.1:{port}"), "records")
    config = config or GatewayConfig(public_base_url="https://fhir.example.org/r4")
    try:
        with TestClient(observed(build_app(Records(channel, config), config))) as client:
            yield client, records
    finally:
        channel.close()
        server.stop(0)
