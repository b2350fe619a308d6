"""platform/dify/model-providers.yaml against Dify's OpenAI-API-compatible provider form.

The JSON schema below is our own description of the credential form of the plugin
``langgenius/openai_api_compatible`` 0.0.63, read from
``models/openai_api_compatible/provider/openai_api_compatible.yaml`` (``model_credential_schema``)
in github.com/langgenius/dify-official-plugins at commit
7af22831a58ded846388b8de0c232b2b377a1055, and the URL rules from the same commit's
``models/{rerank/rerank.py,text_embedding/text_embedding.py}`` and the dify_plugin SDK 0.9.0
(tag v0.9.0, ``src/dify_plugin/interfaces/model/openai_compatible/llm.py``), which the
plugin's uv.lock pins. Dify version: 1.14.2 (platform/platform.yaml).

What the form says, per model type (``show_on: __model_type``):
* every type: ``display_name``, ``api_key`` (secret-input), ``endpoint_url`` (required),
  ``endpoint_model_name`` — all optional text except endpoint_url;
* llm: ``context_size`` (required), ``mode`` (chat|completion), ``max_tokens_to_sample`` and
  the select options listed in ``LLM_SELECTS``, ``stream_mode_delimiter`` (text);
* text-embedding: ``context_size`` and ``max_chunks`` (required), ``encoding_format``
  (not_set|float), ``vision_support``, ``document_prefix``/``query_prefix`` (text);
* rerank: ``context_size`` (required), ``vision_support``.
On top of the plugin's rules we require ``mode`` and ``endpoint_model_name`` (the SDK reads
``credentials["mode"]`` and sends ``credentials.get("endpoint_model_name", model)`` verbatim)
and a secret reference instead of an API key value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
import yaml

from llmflow.gateway.config import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = REPO / "platform" / "dify" / "model-providers.yaml"
PLATFORM = REPO / "platform" / "platform.yaml"

SUPPORT = ["support", "no_support"]
SUPPORTED = ["supported", "not_supported"]
LLM_SELECTS: dict[str, list[str]] = {
    "mode": ["completion", "chat"],
    "agent_thought_support": ["only_thinking_supported", "not_supported", "supported"],
    "web_search_support": ["not_supported", "tool_standard", "tool_simple", "parameter"],
    "compatibility_mode": ["strict", "extended"],
    "token_param_name": ["auto", "max_tokens", "max_completion_tokens"],
    "user_identity_support": SUPPORT,
    "stream_include_usage": ["enabled", "disabled"],
    "function_calling_type": ["function_call", "tool_call", "no_call"],
    "stream_function_calling": SUPPORTED,
    "vision_support": SUPPORT,
    "video_support": SUPPORT,
    "audio_support": SUPPORT,
    "document_support": SUPPORT,
    "structured_output_support": SUPPORTED,
    "stream_mode_auth": ["use", "not_use"],
}

_TEXT: dict[str, Any] = {"type": "string"}
_INT_TEXT: dict[str, Any] = {"type": "string", "pattern": "^[1-9][0-9]*$"}
_SECRET_REF: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretRef"],
    "properties": {
        "secretRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "key"],
            "properties": {"name": _TEXT, "key": _TEXT},
        }
    },
}
_COMMON: dict[str, Any] = {
    "display_name": _TEXT,
    "api_key": _SECRET_REF,  # secret-input; here only a reference, never the key
    "endpoint_url": {"type": "string", "pattern": "^https?://[^/]+/v1/?$"},
    "endpoint_model_name": {"type": "string", "minLength": 1},
}
_PER_TYPE: dict[str, tuple[dict[str, Any], list[str]]] = {
    "llm": (
        {
            **{name: {"enum": values} for name, values in LLM_SELECTS.items()},
            "context_size": _INT_TEXT,
            "max_tokens_to_sample": _INT_TEXT,
            "stream_mode_delimiter": _TEXT,
        },
        ["context_size", "mode"],
    ),
    "text-embedding": (
        {
            "context_size": _INT_TEXT,
            "max_chunks": _INT_TEXT,
            "encoding_format": {"enum": ["not_set", "float"]},
            "vision_support": {"enum": SUPPORT},
            "document_prefix": _TEXT,
            "query_prefix": _TEXT,
        },
        ["context_size", "max_chunks"],
    ),
    "rerank": (
        {"context_size": _INT_TEXT, "vision_support": {"enum": SUPPORT}},
        ["context_size"],
    ),
}


def _model_schema(model_type: str) -> dict[str, Any]:
    fields, required = _PER_TYPE[model_type]
    return {
        "if": {"properties": {"model_type": {"const": model_type}}},
        "then": {
            "properties": {
                "credentials": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {**_COMMON, **fields},
                    "required": ["endpoint_url", "api_key", "endpoint_model_name", *required],
                }
            }
        },
    }


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["provider", "plugin_version", "dify_version", "gateway", "models"],
    "properties": {
        "provider": {"const": "langgenius/openai_api_compatible"},
        "plugin_version": {"type": "string"},
        "dify_version": {"type": "string"},
        "gateway": {
            "type": "object",
            "required": ["endpoint_url", "api_key_secret"],
            "properties": {"endpoint_url": _COMMON["endpoint_url"]},
        },
        "models": {
            "type": "array",
            "minItems": 3,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "model_type", "gateway_kind", "credentials"],
                "properties": {
                    "model": {"type": "string", "minLength": 1},
                    "model_type": {"enum": list(_PER_TYPE)},
                    "gateway_kind": {"enum": ["chat", "completion", "embedding", "rerank"]},
                    "credentials": {"type": "object"},
                },
                "allOf": [_model_schema(t) for t in _PER_TYPE],
            },
        },
        "sample_routing_table": {"type": "array"},
    },
}


def plugin_urls(credentials: dict[str, str], model_type: str) -> str:
    """The URL the plugin posts to, derived as its code does: the SDK's LLM joins with
    ``urljoin(endpoint_url + "/", "chat/completions" | "completions")``; the plugin's
    embedding and rerank models use ``endpoint_url.rstrip("/") + "/embeddings" | "/rerank"``."""
    endpoint_url = credentials["endpoint_url"]
    if model_type == "llm":
        base = endpoint_url if endpoint_url.endswith("/") else endpoint_url + "/"
        path = "chat/completions" if credentials["mode"] == "chat" else "completions"
        return urljoin(base, path)
    suffix = {"text-embedding": "/embeddings", "rerank": "/rerank"}[model_type]
    return endpoint_url.rstrip("/") + suffix


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SETTINGS.read_text())
    return data


def test_settings_match_the_plugin_credential_form(settings: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(settings, SCHEMA)
    assert {m["model_type"] for m in settings["models"]} == {"llm", "text-embedding", "rerank"}


def test_schema_rejects_what_the_plugin_form_would_not_take(settings: dict[str, Any]) -> None:
    llm = next(m for m in settings["models"] if m["model_type"] == "llm")
    bad_values = [
        ("mode", "chat-completions"),
        ("function_calling_type", "tools"),
        ("stream_mode_auth", "yes"),
        ("context_size", 32768),  # a form value is a string
        ("api_key", "sk-plaintext"),  # never a key value in this file
        ("endpoint_url", "http://llmflow-glue-gateway.llmflow-system.svc:8080"),  # no /v1
        ("max_chunks", "32"),  # an embedding field on an LLM
    ]
    for field, value in bad_values:
        broken = {**settings, "models": [{**llm, "credentials": {**llm["credentials"],
                                                                   field: value}}] * 3}  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_versions_match_the_pinned_dify(settings: dict[str, Any]) -> None:
    platform = yaml.safe_load(PLATFORM.read_text())
    dify = next(c for c in platform["components"] if c["name"] == "dify")
    assert settings["dify_version"] == dify["appVersion"]


def test_every_model_routes_to_a_gateway_route_of_the_right_kind(settings: dict[str, Any]) -> None:
    table = GatewaySettings.model_validate({"models": settings["sample_routing_table"]})
    endpoint = settings["gateway"]["endpoint_url"]
    for m in settings["models"]:
        creds = m["credentials"]
        route = table.route(creds["endpoint_model_name"])
        assert route is not None, m["model"]
        assert route.kind == m["gateway_kind"]
        assert creds["endpoint_url"] == endpoint
        assert creds["api_key"]["secretRef"] == settings["gateway"]["api_key_secret"]
        if m["model_type"] == "llm":  # the gateway refuses a chat model on /v1/completions
            assert creds["mode"] == {"chat": "chat", "completion": "completion"}[route.kind]


@pytest.mark.parametrize(
    ("model_type", "mode", "path"),
    [
        ("llm", "chat", "/v1/chat/completions"),
        ("llm", "completion", "/v1/completions"),
        ("text-embedding", None, "/v1/embeddings"),
        ("rerank", None, "/v1/rerank"),
    ],
)
def test_plugin_urls_hit_the_gateway_routes(
    settings: dict[str, Any], model_type: str, mode: str | None, path: str
) -> None:
    from llmflow.api.routes_gateway import router

    routes = {r.path for r in router.routes}  # type: ignore[attr-defined]
    for endpoint in (
        settings["gateway"]["endpoint_url"],
        settings["gateway"]["endpoint_url"] + "/",
    ):
        url = plugin_urls({"endpoint_url": endpoint, "mode": mode or "chat"}, model_type)
        assert urlsplit(url).path == path
        assert path in routes
    # without /v1 the plugin would call /chat/completions, /embeddings, /rerank: all 404
    bare = settings["gateway"]["endpoint_url"].removesuffix("/v1")
    url = plugin_urls({"endpoint_url": bare, "mode": mode or "chat"}, model_type)
    assert urlsplit(url).path == path.removeprefix("/v1")
