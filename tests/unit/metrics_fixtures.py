"""The process's metrics, read in memory: unit tests see exactly what a Prometheus scrape would.

configure_metrics installs one meter provider per process (the OpenTelemetry API allows one), so every
unit test that reads metrics goes through :func:`read_metrics` and compares before/after values.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from carechain.runtime import metrics

_reader: InMemoryMetricReader | None = None


def read_metrics() -> dict[str, list[tuple[dict, object]]]:
    """Every instrument's points now: {name: [(labels, point), ...]} (installs the in-memory reader once)."""
    global _reader
    if _reader is None:
        _reader = InMemoryMetricReader()
        metrics.configure_metrics("unit-test", "", readers=[_reader])
    data = _reader.get_metrics_data()
    found: dict[str, list[tuple[dict, object]]] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(
                    (dict(point.attributes or {}), point) for point in metric.data.data_points)
    return found


def value(name: str, **labels: str) -> float:
    """Sum of a counter / gauge (or a histogram's count) over the points whose labels include labels."""
    total = 0.0
    for attributes, point in read_metrics().get(name, []):
        if all(attributes.get(k) == v for k, v in labels.items()):
            total += point.count if hasattr(point, "count") else point.value  # type: ignore[attr-defined]
    return total
