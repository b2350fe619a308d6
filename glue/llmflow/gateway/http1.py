"""A pooled HTTP/1.1 client for the gateway's calls to its backends.

Every chat, completion, embedding and rerank call the gateway passes on goes out through
:class:`Http1Pool`: a pool of keep-alive connections per backend URL on asyncio protocols,
with ``httptools``' response parser (llhttp, the parser uvicorn serves the gateway's own
requests with). Framing — ``Content-Length``, chunked bodies, keep-alive or close — is
llhttp's; this module adds what a proxy to a handful of known backends needs and no more:

* one request at a time per connection (no pipelining), idle connections reused newest
  first and closed after ``keepalive_s`` (below the backends' own idle timeout, so a request
  does not go out on a connection the other side is closing), at most ``limit`` open;
* a connect timeout, a deadline for a whole answer (:meth:`Http1Pool.post`) or for each wait
  for more bytes of a streamed one (:meth:`Reply.chunks`);
* TLS for ``https`` backends (the system's trust store, ``SSL_CERT_FILE`` honoured), a path
  prefix in the backend URL, ``gzip``/``deflate`` bodies should a backend send them unasked;
* a streamed body (:meth:`Reply.chunks`) is buffered up to 256 KiB before reading from the
  socket pauses; a whole answer (:meth:`Reply.read`, :meth:`Http1Pool.post`) is read as
  fast as it comes;
* a request that is cancelled, times out, or is abandoned before its answer ended closes its
  connection, which is how a backend learns that nobody waits for the rest (vLLM then stops
  generating).

Errors are :class:`UpstreamUnreachable` (refused, reset, closed early, not HTTP) and its
:class:`UpstreamTimeout`. Nothing is retried here: a POST to an LLM is not idempotent, so the
gateway's fallback chain decides what happens next.

Why not ``aiohttp``, which the gateway used before: at 50 concurrent requests a bare
uvicorn-and-``aiohttp`` proxy added 0.78 ms (p50) to a backend's answer on the 2-core test
machine, the same proxy with this client 0.39 ms; ``aiohttp``'s per-request machinery (a
request and response object, payload registry, tracing hooks, timer contexts, cookie jar)
was the largest part of the gateway's own latency. See ``docs/gateway.md``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024
"""Bytes of a streamed body held unread before the connection stops reading."""


class UpstreamUnreachable(Exception):
    """The replica could not be reached, or the connection broke before an answer."""


class UpstreamTimeout(UpstreamUnreachable):
    """The replica did not answer within the gateway's timeout."""


def _header_line(name: str, value: str) -> bytes:
    if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid HTTP header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


class Reply:
    """One answer as it arrives: ``status`` and ``headers`` once the head is in, then the
    body through :meth:`read` or :meth:`chunks`. :meth:`close` when done with it."""

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._conn: _Connection | None = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._bounded = True  # pause reading past HIGH_WATER (off once read() wants it all)
        self._waiter: asyncio.Future[None] | None = None
        self._head_done = False
        self._interim = False  # a 1xx answer ahead of the real one
        self._complete = False
        self._framed = False  # Content-Length or chunked; else the body ends with the connection
        self._error: UpstreamUnreachable | None = None
        self._decoder: Any = None

    # -- from the connection ------------------------------------------------------------
    def _on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        self.headers.append((lower, value))
        if lower in (b"content-length", b"transfer-encoding"):
            self._framed = True
        elif lower == b"content-encoding":
            coding = value.strip().lower()
            if coding in (b"gzip", b"x-gzip"):
                self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif coding == b"deflate":
                self._decoder = zlib.decompressobj()

    def _on_head(self, status: int) -> None:
        if 100 <= status < 200:  # 100 Continue and the like: the answer proper follows
            self._interim = True
            return
        self.status = status
        self._head_done = True
        self._wake()

    def _on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(UpstreamUnreachable(f"undecodable answer body: {exc}"))
                return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            conn = self._conn
            if (
                self._bounded
                and self._buffered > HIGH_WATER
                and not self._paused
                and conn is not None
            ):
                self._paused = True
                conn.transport.pause_reading()
        self._wake()

    def _on_complete(self, keep_alive: bool) -> None:
        if self._interim:
            self._interim, self._framed, self._decoder = False, False, None
            self.headers.clear()
            return
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self._complete = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reply = None
            if self._paused:
                self._paused = False
                conn.transport.resume_reading()
            conn.pool._finished(conn, keep_alive)
        self._wake()

    def _on_lost(self) -> None:
        if self._complete:
            return
        if self._head_done and not self._framed and self._error is None:
            self._on_complete(False)  # a body delimited by the end of the connection
            return
        self._conn = None
        self._fail(UpstreamUnreachable("the backend closed the connection before its answer ended"))

    def _fail(self, error: UpstreamUnreachable) -> None:
        if self._error is None:
            self._error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self) -> None:
        self._fail(UpstreamTimeout("the backend did not answer in time"))

    # -- for the caller -----------------------------------------------------------------
    async def _wait_until(self, ready: Any, deadline: float | None) -> None:
        """Wait until ``ready()`` (or an error); past ``deadline`` (loop time) the request
        fails with :class:`UpstreamTimeout` and its connection is closed."""
        loop = asyncio.get_running_loop()
        timer = loop.call_at(deadline, self._timed_out) if deadline is not None else None
        try:
            while not ready() and self._error is None:
                self._waiter = loop.create_future()
                await self._waiter
        except asyncio.CancelledError:
            self.close()  # nobody waits for the answer: tell the backend
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None and not ready():
            raise self._error

    async def read(self, deadline: float | None) -> bytes:
        """The whole body (the connection then goes back to the pool)."""
        self._bounded = False  # all of it is wanted at once: no flow control
        conn = self._conn
        if self._paused and conn is not None:
            self._paused = False
            conn.transport.resume_reading()
        await self._wait_until(lambda: self._complete, deadline)
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self, read_timeout_s: float | None) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; each wait for more is bounded by
        ``read_timeout_s``."""
        loop = asyncio.get_running_loop()
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                conn = self._conn
                if self._paused and self._buffered <= HIGH_WATER // 2 and conn is not None:
                    self._paused = False
                    conn.transport.resume_reading()
                yield data
                continue
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            deadline = loop.time() + read_timeout_s if read_timeout_s is not None else None
            await self._wait_until(lambda: bool(self._chunks) or self._complete, deadline)

    @property
    def at_eof(self) -> bool:
        return self._complete and not self._chunks

    def close(self) -> None:
        """Done with the answer. One that has not ended yet closes its connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reply = None
            conn.transport.close()


class _Connection(asyncio.Protocol):
    """One connection to a backend; ``reply`` is the answer it is receiving, if any."""

    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.transport: Any = None  # asyncio's or uvloop's transport
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pool._live.add(self)

    @property
    def usable(self) -> bool:
        return not self.lost and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        reply, self.reply = self.reply, None
        if reply is not None:
            reply._on_lost()
        self.pool._gone(self)

    def data_received(self, data: bytes) -> None:
        if self.reply is None:  # bytes nobody asked for: the connection is out of step
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            reply = self.reply
            if reply is not None:
                reply._fail(UpstreamUnreachable(f"the backend's answer is not HTTP: {exc}"))
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.reply is None:  # an answer to nothing: the connection is out of step
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reply is not None:
            self.reply._on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.reply is not None:
            self.reply._on_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.reply is not None:
            self.reply._on_body(body)

    def on_message_complete(self) -> None:
        reply = self.reply
        if reply is not None:
            reply._on_complete(self.parser.should_keep_alive())

    def send(self, request: bytes) -> Reply:
        self.reply = reply = Reply(self)
        self.transport.write(request)
        return reply


class Http1Pool:
    """Keep-alive connections to one backend URL (``http://`` or ``https://``, with an
    optional path prefix)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        keepalive_s: float,
        limit: int = 2000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self._fixed = _header_line("Host", authority) + b"User-Agent: llmflow-gateway\r\n"
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.limit = limit
        self._idle: collections.deque[_Connection] = collections.deque()
        self._live: set[_Connection] = set()
        self._connecting = 0
        self._waiting: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connections --------------------------------------------------------------------
    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self._idle.clear()
            self._live.clear()
            self._waiting.clear()
            self._connecting = 0
            self._loop = loop
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable:
                continue
            if now - conn.idle_since > self.keepalive_s:
                conn.transport.close()  # it is the newest: the rest are older still
                self._close_idle()
                break
            return conn
        while len(self._live) + self._connecting >= self.limit:
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._finished(waiter.result(), True)  # type: ignore[arg-type]
                raise
            if handed is not None and handed.usable:
                return handed
        self._connecting += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to {self.host}:{self.port} timed out") from exc
        except OSError as exc:  # refused, unreachable, name not found, TLS failures
            raise UpstreamUnreachable(f"{self.host}:{self.port}: {exc}") from exc
        finally:
            self._connecting -= 1
        return conn

    def _finished(self, conn: _Connection, keep_alive: bool) -> None:
        """An answer ended: the connection is free again (or closed)."""
        if not keep_alive or not conn.usable:
            conn.transport.close()
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        assert self._loop is not None
        conn.idle_since = self._loop.time()
        self._idle.append(conn)
        oldest = self._idle[0]
        if conn.idle_since - oldest.idle_since > self.keepalive_s:
            self._close_idle(conn.idle_since)

    def _close_idle(self, now: float | None = None) -> None:
        """Close idle connections older than ``keepalive_s`` (all of them without ``now``)."""
        while self._idle and (now is None or now - self._idle[0].idle_since > self.keepalive_s):
            self._idle.popleft().transport.close()

    def _gone(self, conn: _Connection) -> None:
        self._live.discard(conn)
        while self._waiting:  # room for a new connection
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- requests -----------------------------------------------------------------------
    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        parts = [
            f"POST {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"),
            self._fixed,
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
        ]
        parts += [_header_line(name, value) for name, value in headers.items()]
        parts += [b"\r\n", body]
        return b"".join(parts)

    async def open(
        self, path: str, body: bytes, headers: dict[str, str], deadline: float | None
    ) -> Reply:
        """POST ``body`` (JSON) and return once the answer's head has arrived."""
        request = self._request(path, body, headers)
        reply = (await self._acquire()).send(request)
        await reply._wait_until(lambda: reply._head_done, deadline)
        return reply

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """POST ``body`` (JSON) and read the whole answer within ``timeout_s``."""
        request = self._request(path, body, headers)
        deadline = asyncio.get_running_loop().time() + timeout_s
        reply = (await self._acquire()).send(request)
        content = await reply.read(deadline)
        return reply.status, content

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._idle) + list(self._live):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        if self._live:
            await asyncio.sleep(0)  # let the transports close
