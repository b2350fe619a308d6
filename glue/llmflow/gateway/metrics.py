"""Prometheus metrics of the gateway (names used by platform/monitoring alert rules)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "llmflow_gateway_requests_total",
    "Gateway requests by model, tenant and outcome",
    ["model", "tenant", "status"],
)
ERRORS = Counter(
    "llmflow_gateway_upstream_errors_total",
    "Failed upstream attempts by model and backend",
    ["model", "backend", "kind"],
)
LATENCY = Histogram(
    "llmflow_gateway_request_duration_seconds",
    "Whole request time at the gateway",
    ["model", "stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TTFT = Histogram(
    "llmflow_gateway_time_to_first_token_seconds",
    "Time to the first streamed content chunk",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TOKENS = Counter(
    "llmflow_gateway_tokens_total",
    "Tokens by tenant, model and kind (prompt, completion)",
    ["tenant", "model", "kind"],
)
PII_ACTIONS = Counter(
    "llmflow_gateway_pii_actions_total",
    "PII policy actions applied by the gateway",
    ["tenant", "surface", "action"],
)
BACKEND_UP = Gauge(
    "llmflow_gateway_backend_up",
    "1 when the backend's last active health check passed, 0 when it failed",
    ["backend"],
)
OBSERVER_DROPPED = Counter(
    "llmflow_gateway_observer_dropped_total",
    "Records a background writer (audit, usage) or the Langfuse tracer dropped because its "
    "queue was full",
    ["observer"],
)
