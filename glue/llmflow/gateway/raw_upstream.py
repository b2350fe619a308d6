"""The scripted upstream's chat and completion answers on a bare asyncio protocol, for
``llmflow bench gateway``.

On a small machine the benchmark's upstream shares CPUs with the load generator; served by
Starlette and uvicorn it cost about as much CPU per request as the gateway under test, so
the baseline ("direct") path was as noisy as the path being measured. Here a request costs
an HTTP head parse and one write: keep-alive HTTP/1.1 with ``Content-Length`` request
bodies (what ``aiohttp`` and the gateway send), ``GET /health``, and ``POST`` to
``/v1/chat/completions`` or ``/v1/completions`` answered after ``delay_s``, streamed
(chunked server-sent events, ``chunk_delay_s`` apart) or not. The answers are
:class:`~llmflow.gateway.scripted.ScriptedUpstream`'s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llmflow.gateway.scripted import ScriptedUpstream

_PATHS = {b"/v1/chat/completions": True, b"/v1/completions": False}


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.transport: Any = None  # asyncio's or uvloop's TCP transport
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end_of_head := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end_of_head].split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            start = end_of_head + 4
            if len(self.buffer) < start + length:
                return  # the body is still on its way
            body, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
            task = asyncio.get_running_loop().create_task(self._answer(method, path, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _answer(self, method: bytes, path: bytes, raw: bytes) -> None:
        chat = _PATHS.get(path.split(b"?", 1)[0])
        if method == b"GET" and path == b"/health":
            self._write(_response(b"200 OK", b"text/plain", b""))
            return
        if method != b"POST" or chat is None:
            self._write(_response(b"404 Not Found", b"text/plain", b"not found"))
            return
        body: dict[str, Any] = json.loads(raw)
        if self.upstream.delay_s:
            await asyncio.sleep(self.upstream.delay_s)
        answer = self.upstream.answer_document(body, chat)
        if not body.get("stream"):
            self._write(_response(b"200 OK", b"application/json", json.dumps(answer).encode()))
            return
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        include = (body.get("stream_options") or {}).get("include_usage")
        words = ScriptedUpstream._answer(body).split(" ")
        usage = answer.get("usage") if include else None
        async for event in self.upstream._stream(body.get("model", ""), words, chat, usage):
            if self.transport is None or self.transport.is_closing():
                return  # the client went away: stop generating
            self._write(b"%x\r\n%s\r\n" % (len(event), event))
        self._write(b"0\r\n\r\n")


async def serve_forever(upstream: ScriptedUpstream, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(upstream), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()
