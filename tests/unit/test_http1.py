"""The gateway's HTTP/1.1 client (llmflow.gateway.http1) against a raw asyncio server that
writes every byte of its answers itself: framing, keep-alive and its expiry, answers that
break off, timeouts, cancellation, gzip, the connection limit, TLS."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tls_material import tls_material

from llmflow.gateway.http1 import (
    HIGH_WATER,
    Http1Pool,
    UpstreamTimeout,
    UpstreamUnreachable,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """Counts connections, keeps each request head, and notes connections the client closed."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.client_closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
            return False
        self.heads.append(head)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        self.bodies.append(await reader.readexactly(length))
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.client_closed.set()
        finally:
            writer.close()

    async def wait_client_close(self, reader: asyncio.StreamReader) -> None:
        """Until the client closes its side."""
        while await reader.read(65536):
            pass
        self.client_closed.set()


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def _chunked(*pieces: bytes, extra: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    out += extra + b"\r\n"
    for piece in pieces:
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, str]]]]:
    started: list[Server] = []

    async def start(
        handler: Handler, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Server, str]:
        server = Server(handler)
        server.server = await asyncio.start_server(server._handle, "127.0.0.1", 0, ssl=ssl_context)
        started.append(server)
        port = server.server.sockets[0].getsockname()[1]
        return server, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for server in started:
        assert server.server is not None
        server.server.close()


def _pool(url: str, **kw: Any) -> Http1Pool:
    kw.setdefault("connect_timeout_s", 2.0)
    kw.setdefault("keepalive_s", 5.0)
    return Http1Pool(url, **kw)


async def test_length_and_chunked_answers_on_one_kept_alive_connection(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(b'{"a": 1}'))
        await server.read_request(reader)
        writer.write(_chunked(b'{"b":', b" 2}"))
        await writer.drain()
        await server.wait_client_close(reader)

    server, url = await serve(handler)
    pool = _pool(url + "/openai/")
    assert await pool.post(
        "/v1/chat/completions", b'{"x": 1}', {"Authorization": "Bearer k"}, 5
    ) == (200, b'{"a": 1}')
    assert await pool.post("/v1/completions", b"{}", {}, 5) == (200, b'{"b": 2}')
    assert server.connections == 1
    first = server.heads[0].decode()
    assert first.startswith("POST /openai/v1/chat/completions HTTP/1.1\r\n")
    port = url.rsplit(":", 1)[1]
    for line in (
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Content-Length: 8",
        "Authorization: Bearer k",
    ):
        assert line + "\r\n" in first
    assert server.bodies == [b'{"x": 1}', b"{}"]
    await pool.close()


async def test_idle_connections_past_keepalive_and_close_answers_are_not_reused(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        while await server.read_request(reader):
            close = len(server.heads) == 3
            writer.write(_answer(b"{}", b"connection: close\r\n" if close else b""))
            await writer.drain()
            if close:
                return

    server, url = await serve(handler)
    pool = _pool(url, keepalive_s=0.2)
    await pool.post("/a", b"{}", {}, 5)
    await pool.post("/a", b"{}", {}, 5)
    assert server.connections == 1  # reused within keepalive_s
    await asyncio.sleep(0.3)
    await pool.post("/a", b"{}", {}, 5)  # the idle one expired; this answer says close
    assert server.connections == 2
    await pool.post("/a", b"{}", {}, 5)
    assert server.connections == 3
    await pool.close()


async def test_a_body_ended_by_closing_the_connection_is_whole(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + b'{"end": "eof"}'
        )
        await writer.drain()

    _, url = await serve(handler)
    assert await _pool(url).post("/a", b"{}", {}, 5) == (200, b'{"end": "eof"}')


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10,
        b"HTTP/1.1 200 OK\r\ncontent-le",
    ],
    ids=["nothing", "short body", "half a head"],
)
async def test_an_answer_broken_off_is_unreachable(serve: Any, answer: bytes) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()

    _, url = await serve(handler)
    pool = _pool(url)
    with pytest.raises(UpstreamUnreachable, match="closed the connection"):
        await pool.post("/a", b"{}", {}, 5)
    assert not pool._idle and not pool._live  # nothing broken is kept


async def test_an_interim_100_answer_is_skipped(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        while await server.read_request(reader):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + _answer(b'{"ok": 1}'))
            await writer.drain()

    server, url = await serve(handler)
    pool = _pool(url)
    for _ in range(2):
        assert await pool.post("/a", b"{}", {}, 5) == (200, b'{"ok": 1}')
    assert server.connections == 1
    await pool.close()


async def test_a_connection_that_answers_twice_is_dropped(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        while await server.read_request(reader):
            writer.write(_answer(b"1") + _answer(b"2"))  # one answer too many
            await writer.drain()

    server, url = await serve(handler)
    pool = _pool(url)
    assert await pool.post("/a", b"{}", {}, 5) == (200, b"1")
    await asyncio.sleep(0.1)
    assert await pool.post("/a", b"{}", {}, 5) == (200, b"1")  # not the stray "2"
    assert server.connections == 2
    await pool.close()


async def test_an_answer_that_is_not_http_is_unreachable(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await server.wait_client_close(reader)

    server, url = await serve(handler)
    with pytest.raises(UpstreamUnreachable, match="not HTTP"):
        await _pool(url).post("/a", b"{}", {}, 5)
    await asyncio.wait_for(server.client_closed.wait(), 5)


async def test_refused_and_unresolvable_are_unreachable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(UpstreamUnreachable):
        await _pool(f"http://127.0.0.1:{port}").post("/a", b"{}", {}, 5)
    with pytest.raises(UpstreamUnreachable):
        await _pool("http://no-such-host.invalid").post("/a", b"{}", {}, 5)


async def test_no_answer_in_time_is_a_timeout_and_closes_the_connection(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        await server.wait_client_close(reader)  # never answers

    server, url = await serve(handler)
    pool = _pool(url)
    with pytest.raises(UpstreamTimeout):
        await pool.post("/a", b"{}", {}, 0.2)
    await asyncio.wait_for(server.client_closed.wait(), 5)  # the backend is told


async def test_a_stream_abandoned_midway_closes_its_connection(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(1000):
            writer.write(b"%x\r\n%s\r\n" % (6, b"data%02d" % (i % 100)))
            await writer.drain()
            await asyncio.sleep(0.01)

    server, url = await serve(handler)
    pool = _pool(url)
    reply = await pool.open("/a", b"{}", {}, None)
    assert reply.status == 200
    first = await anext(reply.chunks(5))
    assert first.startswith(b"data")
    reply.close()
    await asyncio.wait_for(server.client_closed.wait(), 5)
    assert not pool._idle


async def test_cancelling_a_call_closes_its_connection(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        await server.wait_client_close(reader)

    server, url = await serve(handler)
    task = asyncio.create_task(_pool(url).post("/a", b"{}", {}, 30))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.client_closed.wait(), 5)


async def test_a_stalled_stream_times_out_per_wait(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await server.wait_client_close(reader)  # then nothing more

    _, url = await serve(handler)
    reply = await _pool(url).open("/a", b"{}", {}, None)
    got = []
    with pytest.raises(UpstreamTimeout):
        async for chunk in reply.chunks(0.2):
            got.append(chunk)
    assert got == [b"hello"]


async def test_gzip_answers_are_decoded(serve: Any) -> None:
    body = ('{"text": "' + "연차 휴가 " * 500 + '"}').encode()

    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(gzip.compress(body), b"content-encoding: gzip\r\n"))
        await server.read_request(reader)
        packed = gzip.compress(body)
        writer.write(_chunked(packed[:100], packed[100:], extra=b"content-encoding: gzip\r\n"))
        await server.wait_client_close(reader)

    _, url = await serve(handler)
    pool = _pool(url)
    assert await pool.post("/a", b"{}", {}, 5) == (200, body)
    reply = await pool.open("/a", b"{}", {}, None)
    assert b"".join([c async for c in reply.chunks(5)]) == body


async def test_a_big_stream_pauses_reading_and_arrives_whole(serve: Any) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB

    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_chunked(*[piece] * 32))  # 2 MiB
        await writer.drain()
        await server.wait_client_close(reader)

    _, url = await serve(handler)
    pool = _pool(url)
    reply = await pool.open("/a", b"{}", {}, None)
    await asyncio.sleep(0.3)  # the client does not read: the pool must stop reading
    assert reply._paused
    # what it holds is the high-water mark plus the last socket read, far from the 2 MiB sent
    assert HIGH_WATER < reply._buffered < HIGH_WATER + 256 * 1024 + len(piece)
    received = b"".join([c async for c in reply.chunks(5)])
    assert received == piece * 32
    assert reply.at_eof and len(pool._idle) == 1  # back in the pool, reading again


async def test_a_big_whole_answer_is_read_without_pausing(serve: Any) -> None:
    """Flow control is for streams: an embeddings answer of megabytes is read whole, also
    after its head was opened as a stream (an error body)."""
    big = b'{"data": "' + b"7" * (3 * HIGH_WATER) + b'"}'

    async def handler(reader: Any, writer: Any, server: Server) -> None:
        while await server.read_request(reader):
            writer.write(_answer(big))
            await writer.drain()

    _, url = await serve(handler)
    pool = _pool(url)
    assert await pool.post("/a", b"{}", {}, 5) == (200, big)
    reply = await pool.open("/a", b"{}", {}, None)
    await asyncio.sleep(0.3)
    assert reply._paused  # opened as a stream and not read: paused
    loop = asyncio.get_running_loop()
    assert await reply.read(loop.time() + 5) == big
    await pool.close()


async def test_the_connection_limit_queues_calls(serve: Any) -> None:
    async def handler(reader: Any, writer: Any, server: Server) -> None:
        while await server.read_request(reader):
            await asyncio.sleep(0.05)
            writer.write(_answer(b"%d" % len(server.heads)))
            await writer.drain()

    server, url = await serve(handler)
    pool = _pool(url, limit=1)
    answers = await asyncio.gather(*(pool.post("/a", b"{}", {}, 5) for _ in range(4)))
    assert sorted(a[1] for a in answers) == [b"1", b"2", b"3", b"4"]
    assert server.connections == 1
    await pool.close()


def test_header_injection_and_bad_urls_are_refused() -> None:
    pool = _pool("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="invalid HTTP header"):
        pool._request("/a", b"{}", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="not an http"):
        _pool("ftp://example.org")
    assert b"Host: example.org\r\n" in _pool("https://example.org/")._request("/a", b"", {})
    assert b"Host: [::1]:8000\r\n" in _pool("http://[::1]:8000")._request("/a", b"", {})


async def test_https_backends_are_reached_over_tls(serve: Any, tmp_path: Path) -> None:
    cert_file, key_file, ca_pem = tls_material(tmp_path, "backend")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)

    async def handler(reader: Any, writer: Any, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(b'{"tls": true}'))
        await writer.drain()

    _, url = await serve(handler, server_ctx)
    with pytest.raises(UpstreamUnreachable):  # not trusted by the system store
        await _pool(url).post("/a", b"{}", {}, 5)
    trusted = ssl.create_default_context(cadata=ca_pem)
    assert await _pool(url, ssl_context=trusted).post("/a", b"{}", {}, 5) == (200, b'{"tls": true}')
