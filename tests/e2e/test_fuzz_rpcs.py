"""Issue 12: no input makes any RPC of any service answer UNKNOWN or INTERNAL, and nothing stalls a service.

Property-based (hypothesis, bounded and derandomized): against the six real service processes, every
method of every service descriptor (a new RPC is covered without touching this file) is called with
requests generated from its descriptor: random and extreme ints, unknown enum values, empty, huge and
deeply bracketed strings, random bytes and broken or deep JSON/FHIR in bytes fields, sub-messages,
repeated and map fields. Each request is sent without a token, with a garbage token, and as a patient,
a practitioner, an organisation and the operator. Every status must be a deliberate one, and every service must still
answer health afterwards. Then the stall of the issue: more audit tails than the caps, while writes go on.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import Actor, new_hospital, new_patient, new_practitioner, operator_client, start_network
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.audit.v1 import audit_pb2
from carechain.client.auth import TokenSource
from carechain.consent.v1 import consent_pb2
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records.v1 import records_pb2
from carechain.runtime.config import ServiceSettings
from carechain.storage.v1 import storage_pb2

SERVICES = {
    "identity": identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    "storage": storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
    "ledger": ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
    "consent": consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
    "audit": audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    "records": records_pb2.DESCRIPTOR.services_by_name["RecordsService"],
}
METHODS = [(name, method) for name, service in SERVICES.items() for method in service.methods]
# Statuses that mean "the server did not decide": an escaped exception or a bug.
UNDECIDED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CALLERS = ("anonymous", "garbage", "patient", "practitioner", "organization", "operator")
EXAMPLES = 10  # per RPC, each sent as every caller: about 44 x 10 x 6 calls, about a minute


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    local = start_network(tmp_path_factory.mktemp("fuzz"), "embedded")
    try:
        yield local
    finally:
        local.stop()


class World:
    """Principals of the network and what the generator may aim at (real ids reach past the lookups)."""

    def __init__(self, network: LocalNetwork) -> None:
        self.network = network
        self.hospital = new_hospital(network)
        self.practitioner = new_practitioner(network, self.hospital, "psychiatry")
        self.patient, self.fhir_id = new_patient(network, self.hospital)
        self.operator = Actor("operator", network.layout.operator_signer(), operator_client(network))
        # What the generator aims at: principals of their own, since generated calls may deactivate or
        # re-key them (the callers above must keep working, and so must the services).
        self.target, self.target_fhir_id = new_patient(network, self.hospital)
        target_practitioner = new_practitioner(network, self.hospital, "oncology")
        stored = self.hospital.client.put_record(self.target.principal_id, self.observation(self.target_fhir_id))
        self.ids = [self.target.principal_id, target_practitioner.principal_id, self.target_fhir_id,
                    stored.record_id, stored.content_sha256]
        for actor in (self.target, target_practitioner):
            actor.client.close()
        self._channels: dict[str, grpc.Channel] = {}
        self._tokens = {kind: TokenSource.for_signer(self.channel("identity"), actor.signer) for kind, actor in
                        (("patient", self.patient), ("practitioner", self.practitioner),
                         ("organization", self.hospital), ("operator", self.operator))}

    def observation(self, fhir_id: str = "", **fields: Any) -> dict[str, Any]:
        """A valid Observation about the calling patient (or the patient with fhir_id)."""
        return {"resourceType": "Observation", "status": "final",
                "subject": {"reference": f"Patient/{fhir_id or self.fhir_id}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, **fields}

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = grpc.insecure_channel(self.network.endpoints.address(service))
        return self._channels[service]

    def metadata(self, caller: str, service: str, garbage: str) -> list[tuple[str, str]]:
        if caller == "anonymous":
            return []
        if caller == "garbage":
            return [("authorization", garbage)]
        return [("authorization", f"Bearer {self._tokens[caller].token(audience(service))}")]

    def close(self) -> None:
        for actor in (self.hospital, self.practitioner, self.patient, self.operator):
            actor.client.close()
        for channel in self._channels.values():
            channel.close()


@pytest.fixture(scope="module")
def world(net: LocalNetwork) -> Iterator[World]:
    w = World(net)
    try:
        yield w
    finally:
        w.close()


# --- request generation from descriptors -------------------------------------------------------------

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
HUGE_TEXTS = ["x" * 1_000_000, "[" * 200_000, "{" * 100_000, "é" * 100_000, "\u202e" + "a" * 1000, "\x00" * 64,
              "../" * 200 + "etc/passwd", "%s%n" * 100, "Patient/" + "9" * 500]


def _deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _int_strategy(low: int, high: int) -> st.SearchStrategy[int]:
    """Any int of the range, with the edges (and the int32/int53/int64 boundaries) drawn often."""
    edges = {low, low + 1, high - 1, high, -1, 0, 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63}
    return st.one_of(st.sampled_from(sorted(v for v in edges if low <= v <= high)),
                     st.integers(min_value=low, max_value=high))


class Generator:
    """Hypothesis strategies for any protobuf message type, aimed at the world's real ids now and then."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.strings = st.one_of(st.sampled_from(world.ids), st.text(max_size=40), st.sampled_from(HUGE_TEXTS),
                                 st.just(""))
        valid = json.dumps(world.observation(world.target_fhir_id)).encode()
        deep_valid = world.observation(world.target_fhir_id, extension=[functools.reduce(
            lambda inner, _: {"url": "http://example.org/x", "extension": [inner]}, range(200),
            {"url": "http://example.org/x", "valueString": "leaf"})])
        self.blobs = st.one_of(
            st.binary(max_size=200), st.sampled_from([
                valid, json.dumps(deep_valid).encode(), _deep_json(100_000), b"[" * 500_000,
                b'{"resourceType":"Observation","status":"final","status":"final"}', b"\xff\xfe" + valid,
                valid.replace(b"final", b"NaN"), b"\xed\xa0\x80", b"{}", b"null", b"1e999999",
                json.dumps(world.observation(world.target_fhir_id, valueQuantity={"value": 10**400})).encode(),
                json.dumps({"resourceType": "Consent", "status": "active"}).encode(),
            ]),
            st.builds(lambda v: v.encode(), st.text(max_size=80)),
        )

    @functools.cache  # noqa: B019 - one generator per module
    def message(self, descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
        cls = GetMessageClass(descriptor)
        if depth > 3:
            return st.builds(cls)
        fields = list(descriptor.fields)

        @st.composite
        def build(draw: st.DrawFn) -> Any:
            message = cls()
            chosen = draw(st.lists(st.sampled_from(fields), unique_by=lambda f: f.number, max_size=len(fields))) \
                if fields else []
            for field in chosen:
                self._set(draw, message, field, depth)
            return message

        return build()

    def _scalar(self, field: Any, depth: int) -> st.SearchStrategy[Any]:
        if field.type in INT_RANGES:
            return _int_strategy(*INT_RANGES[field.type])
        if field.type == FieldDescriptor.TYPE_ENUM:
            return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                             _int_strategy(-(2**31), 2**31 - 1))
        if field.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
        if field.type == FieldDescriptor.TYPE_STRING:
            return self.strings
        if field.type == FieldDescriptor.TYPE_BYTES:
            return self.blobs
        return self.message(field.message_type, depth + 1)

    def _set(self, draw: st.DrawFn, message: Any, field: Any, depth: int) -> None:
        target = getattr(message, field.name) if field.is_repeated else None
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            for key, value in draw(st.dictionaries(self._scalar(key_field, depth), self._scalar(value_field, depth),
                                                   max_size=3)).items():
                if value_field.message_type is not None:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif field.is_repeated:
            for value in draw(st.lists(self._scalar(field, depth), max_size=3)):
                if field.message_type is not None:
                    target.add().CopyFrom(value)
                else:
                    target.append(value)
        elif field.message_type is not None:
            getattr(message, field.name).CopyFrom(draw(self._scalar(field, depth)))
        else:
            setattr(message, field.name, draw(self._scalar(field, depth)))


# Header-legal values only (printable ASCII): anything else never leaves the client.
_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
# A 3,000-deep JSON array as the JOSE header and as the payload: the parser must refuse it as UNAUTHENTICATED.
_DEEP = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
DEEP_JSON_TOKEN = f"Bearer {_DEEP}.{_DEEP}.AAAA"
GARBAGE_TOKENS = st.one_of(
    _HEADER_TEXT,
    st.builds(lambda t: f"Bearer {t}", _HEADER_TEXT),
    st.sampled_from(["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer ..", "Bearer " + "A" * 8000,
                     "bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJvcGVyYXRvciJ9.", "Bearer e30.e30.AAAA", DEEP_JSON_TOKEN]),
)


@functools.cache
def _generator(world: World) -> Generator:
    return Generator(world)


def _call(world: World, service: str, method: Any, request: Any, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """Send request to the method on the real service; the status it ended with."""
    channel = world.channel(service)
    path = f"/{SERVICES[service].full_name}/{method.name}"
    response_class = GetMessageClass(method.output_type)
    serialize, deserialize = (lambda m: m.SerializeToString()), response_class.FromString
    try:
        if method.client_streaming:
            requests = [request, GetMessageClass(method.input_type)()]
            if method.server_streaming:
                call = channel.stream_stream(path, serialize, deserialize)
                list(call(iter(requests), metadata=metadata, timeout=5))
            else:
                channel.stream_unary(path, serialize, deserialize)(iter(requests), metadata=metadata, timeout=10)
        elif method.server_streaming:
            # Tails follow forever: read a little, then stop.
            responses = channel.unary_stream(path, serialize, deserialize)(request, metadata=metadata, timeout=1)
            for count, _ in enumerate(responses):
                if count == 3:
                    responses.cancel()
                    break
        else:
            channel.unary_unary(path, serialize, deserialize)(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _assert_healthy(world: World) -> None:
    for service in SERVICES:
        health = health_pb2_grpc.HealthStub(world.channel(service)).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, f"{service} no longer SERVING"


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
def test_no_generated_request_gets_an_undecided_status(world: World, service: str, method: Any) -> None:
    generator = _generator(world)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=generator.message(method.input_type), garbage=GARBAGE_TOKENS)
    def property_holds(request: Any, garbage: str) -> None:
        for caller in CALLERS:
            code = _call(world, service, method, request, world.metadata(caller, service, garbage))
            assert code not in UNDECIDED, (
                f"{service}.{method.name} as {caller} answered {code.name} to {str(request)[:300]!r}")

    property_holds()
    _assert_healthy(world)


def test_the_issue_inputs_are_invalid_argument_naming_the_field(world: World) -> None:
    cases = [
        ("ledger", "GetEvidence", ledger_pb2.GetEvidenceRequest(from_height=2**64 - 1), "from_height"),
        ("audit", "GetEventProof", audit_pb2.GetEventProofRequest(sequence=2**64 - 1), "sequence"),
        ("audit", "StreamEvents", audit_pb2.StreamEventsRequest(after_sequence=2**63, replay_only=True),
         "after_sequence"),
    ]
    for service, name, request, field in cases:
        method = SERVICES[service].methods_by_name[name]
        for caller in ("operator", "patient"):
            metadata = world.metadata(caller, service, "")
            path = f"/{SERVICES[service].full_name}/{name}"
            call = (world.channel(service).unary_stream if method.server_streaming
                    else world.channel(service).unary_unary)(path, lambda m: m.SerializeToString(),
                                                              GetMessageClass(method.output_type).FromString)
            with pytest.raises(grpc.RpcError) as caught:
                result = call(request, metadata=metadata, timeout=10)
                list(result) if method.server_streaming else None
            if caught.value.code() == grpc.StatusCode.PERMISSION_DENIED:
                continue  # a patient may not call it at all: refused before the request is looked at
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, caller, caught.value.details())
            assert caught.value.details().startswith(f"{field}:"), caught.value.details()
    deep = world.observation(extension=[functools.reduce(
        lambda inner, _: {"url": "http://example.org/x", "extension": [inner]}, range(200),
        {"url": "http://example.org/x", "valueString": "leaf"})])
    with pytest.raises(grpc.RpcError) as caught:
        world.hospital.client.put_record(world.patient.principal_id, deep)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("resource_json.extension[0].extension[0]")


def test_more_tails_than_the_cap_leave_writes_prompt(world: World) -> None:
    defaults = ServiceSettings()
    stream = audit_pb2.StreamEventsRequest()
    audit = world.channel("audit").unary_stream(
        f"/{SERVICES['audit'].full_name}/StreamEvents", audit_pb2.StreamEventsRequest.SerializeToString,
        audit_pb2.StoredAuditEvent.FromString)
    operator = world.metadata("operator", "audit", "")
    tails = [audit(stream, metadata=operator, timeout=60) for _ in range(defaults.max_streams_per_caller)]
    try:
        for tail in tails:
            next(tail)  # admitted: replaying the trail
        with pytest.raises(grpc.RpcError) as caught:
            next(audit(stream, metadata=operator, timeout=10))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many open streams" in caught.value.details()
        started = time.monotonic()
        for _ in range(3):  # every write records an audit event: the audit service must have workers
            world.practitioner.client.put_record(world.patient.principal_id, world.observation(id=str(uuid.uuid4())))
        assert time.monotonic() - started < 20
        _assert_healthy(world)
    finally:
        for tail in tails:
            tail.cancel()


def test_every_service_still_serves(world: World) -> None:
    _assert_healthy(world)
    assert world.hospital.client.put_record(world.patient.principal_id, world.observation()).record_id

