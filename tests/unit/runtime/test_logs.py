"""Issue 13: one cheap JSON ``rpc`` line per served call, carrying the trace and span ids of its server span."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from runtime_fixtures import RECORDS, SHA, bearer, storage_server

from carechain.core.telemetry import configure_tracing
from carechain.runtime.logs import JsonFormatter
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc


@pytest.fixture()
def lines() -> Iterator[io.StringIO]:
    """What the server's logger writes, formatted as a service formats it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("storage"))
    logger = logging.getLogger("carechain.runtime.server")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_every_call_logs_one_line_with_its_server_span_s_ids(tmp_path: pathlib.Path, lines: io.StringIO) -> None:
    spans = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(spans))
    with storage_server(tmp_path) as (_, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        metadata = bearer(RECORDS, "storage")
        with pytest.raises(grpc.RpcError):
            stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), metadata=metadata, timeout=10)
        upload = iter([storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata()),
                       storage_pb2.PutBlobRequest(chunk=b"blob")])
        stub.PutBlob(upload, metadata=metadata, timeout=10)  # a request stream: logged the same way
    calls = [json.loads(line) for line in lines.getvalue().splitlines() if '"msg": "rpc"' in line]
    assert [(c["rpc_method"].rsplit("/", 1)[-1], c["grpc_code"]) for c in calls] == [
        ("StatBlob", "NOT_FOUND"), ("PutBlob", "OK")]
    servers = {s.context.span_id: s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER}
    for call in calls:
        span = servers[int(call["span_id"], 16)]
        assert call["trace_id"] == f"{span.context.trace_id:032x}", "the rpc line is not joined to its trace"
        assert span.name == call["rpc_method"].lstrip("/")
        assert call["duration_ms"] >= 0 and call["service"] == "storage"


def test_the_timestamp_is_utc_with_milliseconds_across_second_boundaries() -> None:
    formatter = JsonFormatter("storage")
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_061.5):
        record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        stamp = json.loads(formatter.format(record))["ts"]
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created))) + f".{int(record.msecs):03d}Z"
        assert stamp == expected
