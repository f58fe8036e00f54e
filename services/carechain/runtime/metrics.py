"""Prometheus metrics of a CareChain service (OpenTelemetry metrics SDK, Prometheus exporter).

Every instrument of the network is declared here, once, on the global OpenTelemetry meter; services
record with one line (``metrics.CONSENT_DECISIONS.add(1, {"effect": "permit"})``). Until
:func:`configure_metrics` installs a meter provider (``CARECHAIN_METRICS_LISTEN_ADDRESS`` set), the
instruments are no-ops, so unit tests and tools pay nothing.

Labels are low-cardinality and carry no identifiers: a method name, a status code, a decision
effect, a backend, a validator id; never a patient, record, actor or key (privacy and cardinality).
The Prometheus names (``carechain_rpc_server_calls_total``, ...) and what they mean are listed in
docs/observability.md; the chart's alerts and dashboard use only those names (a test checks that).

:func:`backend_call` is the client span around one call to Vault, S3, etcd or SQLite;
:func:`count_backend_error` counts the calls that failed because the backend did.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

import carechain

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

log = logging.getLogger("carechain.runtime.metrics")

_meter = metrics.get_meter("carechain", carechain.__version__)
_tracer = trace.get_tracer("carechain.backends", carechain.__version__)

# Seconds: from a 1 ms cache hit to a 10 s deadline (the SDK's default buckets are for milliseconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- every service: RPCs and backends ------------------------------------------------------------
_rpc_calls: dict[tuple[str, str], int] = {}  # (rpc_method, grpc_code) -> calls served
_rpc_labels: dict[tuple[str, str], dict[str, str]] = {}
_rpc_lock = threading.Lock()


def _observe_rpc_calls(_options: CallbackOptions) -> Iterable[Observation]:
    with _rpc_lock:
        counted = list(_rpc_calls.items())
    return [Observation(calls, _rpc_labels[key]) for key, calls in counted]


# Counted in a dict and read at each scrape: the SDK's per-measurement path cost more than the call's
# own access check (attribute hashing, view matching, a lock per instrument).
RPC_CALLS = _meter.create_observable_counter(
    "carechain_rpc_server_calls", [_observe_rpc_calls], unit="",
    description="gRPC calls served, by full method name and status code")
RPC_DURATION = _meter.create_histogram(
    "carechain_rpc_server_duration", unit="s", description="time to answer a gRPC call, by method and status code",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
BACKEND_ERRORS = _meter.create_counter(
    "carechain_backend_errors", unit="",
    description="calls to a backend (vault, s3, etcd, sqlite) that failed because the backend did")

def record_rpc(rpc_method: str, grpc_code: str, seconds: float) -> None:
    """Count one served call and its duration (the label dict of each method and code is built once)."""
    key = (rpc_method, grpc_code)
    with _rpc_lock:
        labels = _rpc_labels.get(key)
        if labels is None:
            labels = _rpc_labels[key] = {"rpc_method": rpc_method, "grpc_code": grpc_code}
        _rpc_calls[key] = _rpc_calls.get(key, 0) + 1
    RPC_DURATION.record(seconds, labels)


#: The backends whose failures carechain_backend_errors_total counts.
BACKENDS = ("vault", "s3", "etcd", "sqlite")

# --- ledger ---------------------------------------------------------------------------------------
LEDGER_TIME_TO_FINAL = _meter.create_histogram(
    "carechain_ledger_time_to_final", unit="s",
    description="from a transaction's submission to this validator until its block is final",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)

# --- audit ----------------------------------------------------------------------------------------
AUDIT_EVENTS_APPENDED = _meter.create_counter(
    "carechain_audit_events_appended", unit="", description="audit events durably appended to the trail")
AUDIT_BATCHES_ANCHORED = _meter.create_counter(
    "carechain_audit_batches_anchored", unit="",
    description="sealed audit batches whose root was anchored on the ledger")
AUDIT_ANCHORING_LAG = _meter.create_gauge(
    "carechain_audit_anchoring_lag", unit="s",
    description="how long the oldest sealed audit batch has waited for its ledger anchor (0: none waiting)")
AUDIT_FAIL_CLOSED = _meter.create_counter(
    "carechain_audit_fail_closed", unit="",
    description="audit events a service could not write: the call they belonged to failed closed (UNAVAILABLE)")

# --- consent --------------------------------------------------------------------------------------
CONSENT_DECISIONS = _meter.create_counter(
    "carechain_consent_decisions", unit="", description="consent decisions, by effect (permit, deny)")
BREAK_GLASS_USES = _meter.create_counter(
    "carechain_break_glass_uses", unit="", description="emergency (break-glass) accesses permitted")


@dataclass(frozen=True)
class _ObservedLedger:
    validator_id: str
    height: Callable[[], int]
    final_height: Callable[[], int]
    evidence_count: Callable[[], int]


_ledgers: list[_ObservedLedger] = []
_ledgers_lock = threading.Lock()
_ledger_gauges: list[object] = []


def _ledger_gauge(read: Callable[[_ObservedLedger], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        with _ledgers_lock:
            observed = list(_ledgers)
        return [Observation(read(ledger), {"validator": ledger.validator_id}) for ledger in observed]
    return observe


def observe_ledger(validator_id: str, height: Callable[[], int], final_height: Callable[[], int],
                   evidence_count: Callable[[], int]) -> Callable[[], None]:
    """Export a validator's chain height, final height, finality lag and evidence count, read at each scrape.

    Returns the function that stops observing it (when the ledger closes).
    """
    observed = _ObservedLedger(validator_id, height, final_height, evidence_count)
    with _ledgers_lock:
        if not _ledger_gauges:  # the gauges once per process; each reports every observed ledger
            _ledger_gauges.extend([
                _meter.create_observable_gauge(
                    "carechain_ledger_height", [_ledger_gauge(lambda ledger: ledger.height())], unit="",
                    description="height of this validator's latest committed block"),
                _meter.create_observable_gauge(
                    "carechain_ledger_final_height", [_ledger_gauge(lambda ledger: ledger.final_height())], unit="",
                    description="height of this validator's latest final (quorum-certified) block"),
                _meter.create_observable_gauge(
                    "carechain_ledger_finality_lag",
                    [_ledger_gauge(lambda ledger: ledger.height() - ledger.final_height())], unit="",
                    description="committed blocks not yet final on this validator"),
                _meter.create_observable_gauge(
                    "carechain_ledger_evidence", [_ledger_gauge(lambda ledger: ledger.evidence_count())], unit="",
                    description="misbehaviour evidence this validator holds (validators that signed conflicting "
                                "headers)"),
            ])
        _ledgers.append(observed)

    def stop() -> None:
        with _ledgers_lock:
            if observed in _ledgers:
                _ledgers.remove(observed)
    return stop


def _series_at_start(service: str) -> list[tuple[Any, dict[str, str]]]:
    """Counters and gauges a service exports from its start, at 0: a rate or an alert needs the series to
    exist before the first event (Prometheus cannot tell "none yet" from "not exported")."""
    series: list[tuple[Any, dict[str, str]]] = [
        (BACKEND_ERRORS, {"backend": backend}) for backend in BACKENDS]
    if service in ("records", "consent"):  # the services that report audit events (and fail closed without them)
        series.append((AUDIT_FAIL_CLOSED, {"service": service}))
    if service == "consent":
        series += [(CONSENT_DECISIONS, {"effect": "permit"}), (CONSENT_DECISIONS, {"effect": "deny"}),
                   (BREAK_GLASS_USES, {})]
    if service == "audit":
        series += [(AUDIT_EVENTS_APPENDED, {}), (AUDIT_BATCHES_ANCHORED, {})]
    return series


def count_backend_error(backend: str) -> None:
    """Count one failed call to backend ("vault", "s3", "etcd" or "sqlite")."""
    BACKEND_ERRORS.add(1, {"backend": backend})


@contextlib.contextmanager
def backend_call(backend: str, operation: str) -> Iterator[trace.Span]:
    """A client span "<backend> <operation>" around one backend call; operation names no patient, record or key."""
    with _tracer.start_as_current_span(f"{backend} {operation}", kind=trace.SpanKind.CLIENT,
                                       attributes={"carechain.backend": backend}) as span:
        yield span


# --- the exporter ---------------------------------------------------------------------------------
_provider: MeterProvider | None = None
_port = 0
_lock = threading.Lock()


def configure_metrics(service: str, listen_address: str, readers: Iterable[MetricReader] = ()) -> int:
    """Install the meter provider and serve Prometheus text on http://listen_address/metrics (once per process).

    Returns the port (useful with port 0). readers adds further readers (tests: an in-memory one).
    An empty listen_address with no readers leaves metrics off.
    """
    global _provider, _port
    with _lock:
        if _provider is not None:
            return _port
        if not listen_address and not readers:
            return 0
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        from carechain.core.telemetry import resource_attributes

        all_readers = list(readers)
        port = 0
        if listen_address:
            all_readers.append(PrometheusMetricReader())
            port = _serve(listen_address)
        _provider = MeterProvider(metric_readers=all_readers, resource=Resource.create(resource_attributes(service)))
        metrics.set_meter_provider(_provider)
        _port = port
        for instrument, labels in _series_at_start(service):
            instrument.add(0, labels)
        if service == "audit":
            AUDIT_ANCHORING_LAG.set(0.0)
        if port:
            log.info("serving metrics", extra={"metrics_listen_address": listen_address, "metrics_port": port})
        return port


def _serve(listen_address: str) -> int:
    """Start prometheus_client's HTTP server (daemon thread) on host:port; the port it got."""
    from prometheus_client import start_http_server

    host, _, port_text = listen_address.rpartition(":")
    try:
        server, _thread = start_http_server(int(port_text), addr=host.strip("[]") or "0.0.0.0")  # noqa: S104
    except (ValueError, OSError) as exc:
        raise OSError(f"CARECHAIN_METRICS_LISTEN_ADDRESS: cannot listen on {listen_address!r}: {exc}") from exc
    return int(server.server_port)


def shutdown_metrics() -> None:
    """Stop the meter provider (end of the process)."""
    if _provider is not None:
        _provider.shutdown(timeout_millis=2000)
