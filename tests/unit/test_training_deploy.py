"""The gateway's routing table with deployed adapters merged in."""

from __future__ import annotations

import logging

import pytest

from llmflow.gateway.config import GatewaySettings
from llmflow.training.deploy import adapter_model_name, merged_gateway_settings
from llmflow.training.store import AdapterRoute

STATIC = GatewaySettings.model_validate(
    {
        "models": [
            {"name": "qwen", "backends": [{"url": "http://vllm-0:8000"},
                                          {"url": "http://vllm-1:8000", "api_key": "k"}]},
            {"name": "embed", "kind": "embedding", "backends": [{"url": "http://tei:80"}]},
        ],
        "quotas": {"dept-hr": {"requests_per_minute": 5}},
    }
)  # fmt: skip


def route(
    name: str, base: str = "qwen", path: str = "/adapters/a", version: str = "1"
) -> AdapterRoute:
    return AdapterRoute(name, "dept-hr", base, path, "dept-hr.faq", version, "champion")


def test_adapters_are_served_by_every_replica_of_their_base() -> None:
    merged = merged_gateway_settings(STATIC, [route(adapter_model_name("dept-hr", "faq"))])
    adapter = merged.route("dept-hr/faq")
    assert adapter is not None and adapter.lora_base == "qwen"
    assert adapter.lora_path == "/adapters/a" and adapter.kind == "chat"
    assert [b.url for b in adapter.backends] == ["http://vllm-0:8000", "http://vllm-1:8000"]
    assert adapter.backends[1].api_key is not None
    assert merged.quotas == STATIC.quotas and merged.route("embed") is not None
    assert STATIC.route("dept-hr/faq") is None  # the static table is not modified


def test_a_redeploy_replaces_the_route_and_a_missing_base_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = merged_gateway_settings(STATIC, [route("dept-hr/faq")])
    again = merged_gateway_settings(first, [route("dept-hr/faq", path="/adapters/b", version="2")])
    assert [m.name for m in again.models].count("dept-hr/faq") == 1
    assert again.route("dept-hr/faq").lora_path == "/adapters/b"  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING):
        merged = merged_gateway_settings(STATIC, [route("dept-hr/x", base="gone")])
    assert merged.route("dept-hr/x") is None and "not routed" in caplog.text
