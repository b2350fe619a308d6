"""Dify's OpenAI-API-compatible provider against the real gateway app.

Replays the HTTP requests the plugin ``langgenius/openai_api_compatible`` 0.0.63 (with the
dify_plugin SDK 0.9.0 it pins) sends for the models in platform/dify/model-providers.yaml —
URLs derived from ``endpoint_url`` as the plugin does, bodies shaped as it builds them — and
parses the answers the way the plugin does. Upstream: the scripted OpenAI-compatible server.
Sources read: dify-official-plugins@7af22831a58ded846388b8de0c232b2b377a1055
``models/openai_api_compatible/models/{llm/llm.py,text_embedding/text_embedding.py,
rerank/rerank.py}`` and dify-plugin-sdks@v0.9.0
``src/dify_plugin/interfaces/model/openai_compatible/llm.py``.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import yaml

from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, serve

pytestmark = pytest.mark.integration

SETTINGS = Path(__file__).resolve().parents[2] / "platform" / "dify" / "model-providers.yaml"
GATEWAY = "http://llmflow.test/v1"  # the app under test, as the plugin's endpoint_url
QUOTA_TENANT = "dify-quota"


def _settings() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SETTINGS.read_text())
    return data


def credentials(model_type: str, key: str) -> tuple[str, dict[str, Any]]:
    """Dify's model name and the credentials it hands the plugin, pointed at the test app."""
    model = next(m for m in _settings()["models"] if m["model_type"] == model_type)
    creds = {**model["credentials"], "endpoint_url": GATEWAY, "api_key": key}
    return model["model"], creds


def llm_url(creds: dict[str, Any]) -> str:
    base = creds["endpoint_url"]
    base = base if base.endswith("/") else base + "/"
    return urljoin(base, "chat/completions" if creds["mode"] == "chat" else "completions")


def headers(creds: dict[str, Any]) -> dict[str, str]:
    # the SDK's LLM adds Accept-Charset; no X-Data-Classification: the form has no such field
    return {"Content-Type": "application/json", "Accept-Charset": "utf-8",
            "Authorization": f"Bearer {creds['api_key']}"}  # fmt: skip


def parse_stream(raw: str, creds: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The SDK's ``_handle_generate_stream_response``: split on the credential's delimiter,
    skip comments and [DONE], take ``usage`` from any chunk, content from choices[0]."""
    delimiter = codecs.decode(creds.get("stream_mode_delimiter", "\n\n"), "unicode_escape")
    text, usage = "", None
    for raw_chunk in raw.split(delimiter):
        chunk = raw_chunk.strip()
        if not chunk or chunk.startswith(":"):
            continue
        decoded = chunk.removeprefix("data:").lstrip()
        if decoded == "[DONE]":
            continue
        event = json.loads(decoded)  # the SDK ends the stream on non-JSON
        assert not (event.get("error") and event.get("choices") is None), event
        if event.get("usage"):
            usage = event["usage"]
        if not event.get("choices"):
            continue
        choice = event["choices"][0]
        text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return text, usage


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with serve(ScriptedUpstream("dify")) as up:
        yield up


@pytest.fixture(scope="module")
async def api(runtime: Any, upstream: ScriptedUpstream) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    table = [
        {**route, "backends": [{"url": upstream.url}]}
        for route in _settings()["sample_routing_table"]
    ]
    runtime.settings.gateway = GatewaySettings.model_validate(
        {"models": table, "quotas": {QUOTA_TENANT: {"requests_per_minute": 1}}}
    )
    runtime._cache.pop("gateway", None)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
        yield client
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()


async def _key(runtime: Any, tenant: str) -> str:
    issued = await runtime.api_keys.create(tenant, roles=["model"], name="dify")
    return str(issued.key)


async def test_llm_credential_validation(api: httpx.AsyncClient, runtime: Any) -> None:
    model, creds = credentials("llm", await _key(runtime, "dify-llm"))
    assert llm_url(creds) == "http://llmflow.test/v1/chat/completions"
    body = {"model": creds.get("endpoint_model_name", model), "max_tokens": 5,
            "messages": [{"role": "user", "content": "ping"}]}  # fmt: skip
    r = await api.post(llm_url(creds), json=body, headers=headers(creds))
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"  # the SDK insists on it


async def test_llm_streaming_chat_with_usage(
    api: httpx.AsyncClient, runtime: Any, upstream: ScriptedUpstream
) -> None:
    model, creds = credentials("llm", await _key(runtime, "dify-llm"))
    body = {
        "model": creds.get("endpoint_model_name", model),
        "stream": True,
        "temperature": 0.7,
        "max_tokens": 512,
        "stream_options": {"include_usage": True},  # stream_include_usage: enabled
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "연차 휴가는 며칠인가요"},
        ],
        "user": "3f1c2d9e-dify-end-user",
    }
    async with api.stream("POST", llm_url(creds), json=body, headers=headers(creds)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.aread()).decode()
    text, usage = parse_stream(raw, creds)
    assert text == "echo: 연차 휴가는 며칠인가요"
    assert usage is not None and usage["completion_tokens"] == 4 and usage["prompt_tokens"] > 0
    _, sent = upstream.requests[-1]
    assert sent["model"] == "qwen2.5-7b-instruct" and sent["user"] == body["user"]


async def test_llm_blocking_chat(api: httpx.AsyncClient, runtime: Any) -> None:
    model, creds = credentials("llm", await _key(runtime, "dify-llm"))
    body = {"model": creds.get("endpoint_model_name", model), "stream": False, "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
    r = await api.post(llm_url(creds), json=body, headers=headers(creds))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    assert {"prompt_tokens", "completion_tokens"} <= set(answer["usage"])


async def test_text_embedding(api: httpx.AsyncClient, runtime: Any) -> None:
    model, creds = credentials("text-embedding", await _key(runtime, "dify-embed"))
    url = creds["endpoint_url"].rstrip("/") + "/embeddings"
    assert url == "http://llmflow.test/v1/embeddings"
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {creds['api_key']}"}
    name = creds.get("endpoint_model_name", "") or model
    texts = ["ping", "휴가 규정 문서", "출장비 정산"]
    max_chunks = int(creds["max_chunks"])
    vectors: list[list[float]] = []
    for i in range(0, len(texts), max_chunks):
        payload: dict[str, Any] = {"model": name, "input": texts[i : i + max_chunks]}
        if creds.get("encoding_format") == "float":
            payload["encoding_format"] = "float"
        r = await api.post(url, json=payload, headers=h)
        assert r.status_code == 200, r.text
        result = r.json()
        # the plugin takes data[] in order (not by index) and prompt_tokens or total_tokens
        assert [d["index"] for d in result["data"]] == list(range(len(payload["input"])))
        vectors += [d["embedding"] for d in result["data"]]
        usage = result.get("usage") or {}
        assert usage.get("prompt_tokens") or usage.get("total_tokens")
    assert len(vectors) == len(texts) and all(vectors)


async def test_rerank(api: httpx.AsyncClient, runtime: Any) -> None:
    model, creds = credentials("rerank", await _key(runtime, "dify-rerank"))
    url = creds["endpoint_url"].rstrip("/") + "/rerank"
    assert url == "http://llmflow.test/v1/rerank"
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {creds['api_key']}"}
    docs = ["연차 휴가 규정 요약", "출장비 정산 절차", "연차 휴가 신청 방법"]
    payload = {"model": creds.get("endpoint_model_name", "") or model,
               "query": "연차 휴가", "documents": docs, "top_n": len(docs)}  # fmt: skip
    r = await api.post(url, json=payload, headers=h)
    assert r.status_code == 200, r.text
    results = r.json()["results"]  # the plugin reads results[].index / .relevance_score
    assert results and all(0 <= x["index"] < len(docs) for x in results)
    assert all(isinstance(x["relevance_score"], int | float) for x in results)
    best = max(results, key=lambda x: x["relevance_score"])
    assert docs[best["index"]].startswith("연차 휴가")


async def test_what_dify_sees_on_quota_and_pii_refusals(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    _, creds = credentials("llm", await _key(runtime, QUOTA_TENANT))
    body = {"model": creds["endpoint_model_name"], "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "x"}]}  # fmt: skip
    statuses = []
    for _ in range(2):
        r = await api.post(llm_url(creds), json=body, headers=headers(creds))
        statuses.append(r.status_code)
    assert statuses == [200, 429]  # refused before streaming: a JSON error, not SSE
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["type"] == "rate_limit_error" and r.headers["Retry-After"]

    _, creds = credentials("llm", await _key(runtime, "project-ai"))  # blocks RRNs
    body["messages"] = [{"role": "user", "content": "주민번호 880101-1234568 확인"}]
    r = await api.post(llm_url(creds), json=body, headers=headers(creds))
    assert r.status_code == 422 and r.json()["error"]["code"] == "pii_blocked"
    assert "880101" not in r.text


async def test_a_key_without_the_model_role_is_refused(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    issued = await runtime.api_keys.create("dify-reader", roles=["reader"], name="dify")
    _, creds = credentials("llm", str(issued.key))
    body = {"model": creds["endpoint_model_name"], "max_tokens": 5,
            "messages": [{"role": "user", "content": "ping"}]}  # fmt: skip
    r = await api.post(llm_url(creds), json=body, headers=headers(creds))
    assert r.status_code == 403, (
        r.text
    )  # Dify: "Credentials validation failed with status code 403"
    assert r.json()["error"]["type"] == "permission_error"
