"""Streams from upstreams that misbehave at the byte level: an event longer than any line
buffer, CRLF line ends, and a connection that breaks off mid-answer. A raw asyncio server
plays the upstream, so every byte on the wire is the test's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from llmflow.gateway.config import GatewaySettings

pytestmark = pytest.mark.integration

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(content: str, end: bytes = b"\n") -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + json.dumps(delta).encode() + end + end


async def _raw_upstream(body: Callable[[], list[bytes]], close_early: bool) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")  # the body is not needed
        if not head.startswith(b"POST "):  # the gateway's health check
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(HEAD)
        for piece in body():
            writer.write(_chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.01)  # separate TCP segments: lines split across reads
        if not close_early:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def gateway_for(runtime: Any) -> AsyncIterator[Any]:
    from llmflow.api.app import create_app

    opened: list[Any] = []

    async def make(server: Any) -> tuple[httpx.AsyncClient, dict[str, str]]:
        port = server.sockets[0].getsockname()[1]
        runtime.settings.gateway = GatewaySettings.model_validate(
            {"models": [{"name": "raw-chat", "backends": [{"url": f"http://127.0.0.1:{port}"}]}]}
        )
        runtime._cache.pop("gateway", None)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime.settings, runtime=runtime)),
            base_url="http://llmflow.test",
        )
        opened.append((client, server))
        issued = await runtime.api_keys.create("gw-raw", roles=["model"], name="raw")
        return client, {"Authorization": f"Bearer {issued.key}"}

    yield make
    for client, server in opened:
        await client.aclose()
        server.close()
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()


async def _events(client: httpx.AsyncClient, headers: dict[str, str]) -> list[Any]:
    body = {"model": "raw-chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    out: list[Any] = []
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                out.append(None if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


async def test_long_events_and_crlf_lines_pass_whole(gateway_for: Any) -> None:
    long_text = "가" * 100_000  # 300 KB in one event: above aiohttp's 64 KiB line limit
    event = _event(long_text)

    def body() -> list[bytes]:
        # the long event split mid-line over three writes, then a CRLF-terminated one
        third = len(event) // 3
        return [event[:third], event[third : 2 * third], event[2 * third :],
                _event("끝", b"\r\n"), b"data: [DONE]\n\n"]  # fmt: skip

    server = await _raw_upstream(body, close_early=False)
    client, headers = await gateway_for(server)
    events = await _events(client, headers)
    contents = [e["choices"][0]["delta"]["content"] for e in events if e]
    assert contents == [long_text, "끝"] and events[-1] is None


async def test_a_stream_that_breaks_off_ends_with_an_error_event(
    gateway_for: Any, runtime: Any
) -> None:
    server = await _raw_upstream(lambda: [_event("앞부분")], close_early=True)
    client, headers = await gateway_for(server)
    events = await _events(client, headers)
    assert events[0]["choices"][0]["delta"]["content"] == "앞부분"
    assert events[-2]["error"]["code"] == "upstream_stream_broken" and events[-1] is None
    gateway = await runtime.gateway()
    await gateway.ledger.flush()
    r = await client.get("/v1/usage", headers=headers)
    assert r.json()[0]["errors"] == 1
