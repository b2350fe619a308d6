"""Labelled Prometheus children, cached.

``metric.labels(...)`` validates its arguments, converts them and takes the metric's lock on
every call. On the gateway's hot path six such calls per request cost ~60 µs of an idle CPU
(docs/gateway.md, "Measuring"); a child once made is the same object every time, so it is
kept here. The label values are the metric's own series: this holds one entry per series
that prometheus_client holds anyway.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.metrics import MetricWrapperBase

_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, made once per series."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found
