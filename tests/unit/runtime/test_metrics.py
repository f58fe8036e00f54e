"""Issue 16: what the services export as metrics, read the way a scrape would (carechain.runtime.metrics).

RPC metrics come from a real in-process ledger service (its interceptors, its chain); ledger gauges from
real validators with a rogue one; backend errors from real clients pointed at a port nobody listens on.
"""

from __future__ import annotations

import sqlite3

import grpc
import pytest
from ledger_fixtures import CHAIN, Kind, Net, Validators, onboarding, register, wait_until
from metrics_fixtures import read_metrics, value
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carechain.core.errors import Unavailable
from carechain.core.layout import audience, write_public_key
from carechain.core.telemetry import configure_tracing
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.backends.process import free_port
from carechain.ledger import quorum, transactions
from carechain.ledger.server import build
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime import metrics
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import LedgerSettings, ServiceSettings, StorageSettings
from carechain.runtime.etcd import EtcdClient
from carechain.runtime.server import start_service
from carechain.runtime.sqlite import Database
from carechain.runtime.vault import transit_public_key, vault_client
from carechain.storage.s3_blobstore import S3BlobStore

SUBMIT = "carechain.ledger.v1.LedgerService/SubmitTransaction"


@pytest.fixture()
def ledger_service(tmp_path):
    net = Net()
    for principal_id, key in net.trust.keys.items():
        write_public_key(tmp_path / "trust" / f"{principal_id}.pub", key)
    net.ledger.save(tmp_path / "svc-ledger.pem")
    settings = LedgerSettings(
        listen_address="127.0.0.1:0", data_dir=tmp_path / "ledger", signing_key_file=tmp_path / "svc-ledger.pem",
        trust_dir=tmp_path / "trust", chain_id=CHAIN, block_max_wait_ms=1, shutdown_grace_seconds=0,
    )
    read_metrics()  # the meter provider exists before the service registers its gauges
    register_fn, closers = build(settings)
    running = start_service("ledger", settings, register_fn, closers)
    token = issue_token(net.identity, ACCESS_TOKEN_TYPE, caller_claims(
        Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE), audience("ledger")), 60)[0]
    with grpc.insecure_channel(running.address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        yield net, stub, [("authorization", f"Bearer {token}")]
    running.stop()


def test_rpcs_are_counted_and_timed_by_full_method_and_status(ledger_service) -> None:
    net, stub, metadata = ledger_service
    ok, invalid = value("carechain_rpc_server_calls", rpc_method=SUBMIT, grpc_code="OK"), \
        value("carechain_rpc_server_calls", rpc_method=SUBMIT, grpc_code="INVALID_ARGUMENT")
    timed = value("carechain_rpc_server_duration", rpc_method=SUBMIT)
    height = value("carechain_ledger_height", validator="svc-ledger")
    finals = value("carechain_ledger_time_to_final", validator="svc-ledger")
    txs, _ = onboarding(net)
    for t in txs:
        stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(transaction=t), metadata=metadata, timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(
            transaction=ledger_pb2.Transaction(body=b"garbage")), metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert value("carechain_rpc_server_calls", rpc_method=SUBMIT, grpc_code="OK") == ok + len(txs)
    assert value("carechain_rpc_server_calls", rpc_method=SUBMIT, grpc_code="INVALID_ARGUMENT") == invalid + 1
    assert value("carechain_rpc_server_duration", rpc_method=SUBMIT) == timed + len(txs) + 1
    assert value("carechain_ledger_height", validator="svc-ledger") >= height + 1
    assert value("carechain_ledger_time_to_final", validator="svc-ledger") == finals + len(txs)
    # One validator, quorum 1: final at commit, nothing lagging, no evidence.
    assert value("carechain_ledger_finality_lag", validator="svc-ledger") == 0
    assert value("carechain_ledger_evidence", validator="svc-ledger") == 0
    methods = {labels.get("rpc_method") for labels, _ in read_metrics()["carechain_rpc_server_calls"]}
    assert not any(m.startswith(("/", "grpc.health")) for m in methods), methods


def test_a_validator_signing_another_header_shows_as_evidence_and_finality_lag(tmp_path) -> None:
    validators = Validators(3, quorum_size=3)
    honest = validators.open(tmp_path, 0)
    read_metrics()
    stop = metrics.observe_ledger(honest.validator_id, lambda: honest.head()[0].height, honest.final_height,
                                  lambda: len(honest.store.evidence()))
    try:
        honest.submit(register(validators.net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], 20)
        assert value("carechain_ledger_evidence", validator="validator-1") == 0
        next_height = honest.head()[0].height + 1
        fake = transactions.encode(ledger_pb2.BlockHeader(chain_id=CHAIN, height=next_height,
                                                          previous_header_hash=bytes(32)))
        rogue = validators.signers[2]
        validators.order.publish_vote(next_height, rogue.key_id,
                                      quorum.encode_vote(fake, quorum.sign_header(rogue, fake)))
        honest.submit(register(validators.net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], 20)
        wait_until(honest.evidence, "no evidence recorded")
        assert value("carechain_ledger_evidence", validator="validator-1") == 1
        # Quorum 3 with one honest signer: committed blocks stay unfinal, and the lag says how many.
        assert value("carechain_ledger_finality_lag", validator="validator-1") >= 1
        assert value("carechain_ledger_height", validator="validator-1") == next_height
    finally:
        stop()
        honest.close()
    assert value("carechain_ledger_height", validator="validator-1") == 0, "a closed ledger is no longer reported"


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


def test_a_backend_that_is_down_counts_as_a_backend_error(tmp_path) -> None:
    before = {b: value("carechain_backend_errors", backend=b) for b in ("etcd", "vault", "s3")}
    with pytest.raises(Unavailable):
        EtcdClient(f"http://{_dead_address()}", timeout=0.5, deadline=1).get(b"/carechain/x")
    settings = ServiceSettings(vault_address=f"http://{_dead_address()}", vault_token="t")
    with pytest.raises(Unavailable):
        transit_public_key(vault_client(settings), "svc-records")
    store = S3BlobStore.from_settings(StorageSettings(blob_backend="s3", s3_endpoint=_dead_address(),
                                                      s3_access_key="a", s3_secret_key="b"))
    with pytest.raises(Unavailable):
        store.exists("0" * 64)
    for backend in ("etcd", "vault", "s3"):
        assert value("carechain_backend_errors", backend=backend) == before[backend] + 1, backend


def test_a_failing_sqlite_statement_counts_but_a_constraint_does_not(tmp_path) -> None:
    db = Database(tmp_path / "t.db", "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a')")
    before = value("carechain_backend_errors", backend="sqlite")
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('a')")  # a domain answer ("exists already"), not a failure
    assert value("carechain_backend_errors", backend="sqlite") == before
    db.query("PRAGMA query_only=ON")
    with pytest.raises(sqlite3.OperationalError), db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES ('b')")
    assert value("carechain_backend_errors", backend="sqlite") == before + 1
    db.close()


def test_sqlite_statements_inside_a_traced_call_are_spans_naming_the_verb_only(tmp_path) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(exporter))
    db = Database(tmp_path / "t.db", "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
    exporter.clear()
    db.query("SELECT k FROM t WHERE k = ?", ("psn-secret",))
    assert exporter.get_finished_spans() == (), "no span outside a traced call"
    with trace.get_tracer("test").start_as_current_span("call"):
        db.query("SELECT k FROM t WHERE k = ?", ("psn-secret",))
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["sqlite SELECT", "call"]
    [statement] = [s for s in exporter.get_finished_spans() if s.name == "sqlite SELECT"]
    assert statement.kind == trace.SpanKind.CLIENT and statement.attributes["carechain.backend"] == "sqlite"
    assert "psn-secret" not in str(dict(statement.attributes))
    db.close()


def test_metric_labels_never_carry_identifiers(ledger_service) -> None:
    net, stub, metadata = ledger_service
    txs, keys = onboarding(net)
    for t in txs:
        stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(transaction=t), metadata=metadata, timeout=30)
    labels = {str(v) for points in read_metrics().values() for attributes, _ in points for v in attributes.values()}
    assert not labels & set(keys), "principal ids are not metric labels"
    allowed = {"rpc_method", "grpc_code", "validator", "backend", "effect", "service"}
    keys_used = {k for points in read_metrics().values() for attributes, _ in points for k in attributes}
    assert keys_used <= allowed, keys_used


def test_backend_spans_name_the_operation_never_a_key_or_path(tmp_path) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(exporter))
    exporter.clear()
    with trace.get_tracer("test").start_as_current_span("call"):
        with pytest.raises(Unavailable):
            EtcdClient(f"http://{_dead_address()}", timeout=0.5, deadline=1).get(b"/carechain/psn-secret")
        settings = ServiceSettings(vault_address=f"http://{_dead_address()}", vault_token="t")
        with pytest.raises(Unavailable):
            vault_client(settings)
        store = S3BlobStore.from_settings(StorageSettings(blob_backend="s3", s3_endpoint=_dead_address(),
                                                          s3_access_key="a", s3_secret_key="b"))
        with pytest.raises(Unavailable):
            store.exists("0" * 64)
    spans = {span.name: span for span in exporter.get_finished_spans() if span.name != "call"}
    assert {"etcd kv/range", "vault GET auth/token"} <= set(spans), sorted(spans)
    assert any(name.startswith("s3 ") for name in spans), sorted(spans)
    for span in spans.values():
        assert span.kind == trace.SpanKind.CLIENT and not span.status.is_ok, span.name
        assert "psn-secret" not in span.name + str(dict(span.attributes))
