"""Upstream replicas: pooled HTTP clients each, a circuit breaker, weighted picks.

Chat, completion, embedding and rerank calls, streamed or not, go through the pooled
HTTP/1.1 client of :mod:`llmflow.gateway.http1` (:meth:`Backend.post_json`,
:meth:`Backend.open_stream`): the gateway's own latency is mostly its per-request cost, and
that client costs a fraction of ``httpx``'s or ``aiohttp``'s. Adapter loads, ``/tokenize``
and health probes keep ``httpx``.

A backend that fails (connection refused, timeout, 5xx) ``breaker_failures`` times in a row
opens its circuit: it gets no traffic for ``breaker_reset_s``, then one probe request; a
success closes it again. 4xx answers are the client's problem and do not count.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmflow.gateway.config import BackendConfig, GatewaySettings
from llmflow.gateway.http1 import Http1Pool, Reply
from llmflow.gateway.http1 import UpstreamTimeout as UpstreamTimeout
from llmflow.gateway.http1 import UpstreamUnreachable as UpstreamUnreachable


class UpstreamError(Exception):
    """An upstream answered with an error or could not be reached.

    ``status`` is the HTTP status to pass on (502/503/504 when the upstream was not reached),
    ``body`` the upstream's error document, normalised to OpenAI's shape.
    """

    def __init__(
        self, status: int, message: str, *, code: str = "upstream_error", retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retryable = retryable

    @property
    def body(self) -> dict[str, Any]:
        return openai_error(self.message, error_type(self.status), self.code)


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error document."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status < 500:
        return "invalid_request_error"
    return "api_error"


def normalise_error(status: int, payload: Any) -> UpstreamError:
    """An upstream error document in any of the shapes seen in the wild — OpenAI's nested
    ``{"error": {...}}``, vLLM's older flat ``{"object": "error", "message": ...}``, a bare
    string — as one :class:`UpstreamError`."""
    message, code = f"upstream answered {status}", None
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict):
            message = str(inner.get("message") or message)
            raw = inner.get("code")
            code = str(raw) if raw is not None else None
        elif isinstance(inner, str):
            message = inner
    elif isinstance(payload, str) and payload.strip():
        message = payload.strip()[:500]
    return UpstreamError(
        status, message, code=code or "upstream_error", retryable=status >= 500 or status == 429
    )


@dataclass(slots=True)
class CircuitBreaker:
    failures_to_open: int
    reset_s: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    def available(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if not self.probing and now - self.opened_at >= self.reset_s:
            self.probing = True  # half-open: exactly one probe
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failures_to_open:
            self.opened_at, self.probing = now, False

    def trip(self, now: float) -> None:
        """Open now (a failed active health check, :mod:`llmflow.gateway.health`)."""
        self.failures = max(self.failures, self.failures_to_open)
        self.opened_at, self.probing = now, False

    def probe_now(self, now: float) -> None:
        """An open circuit's half-open probe is due at once (its health check passed)."""
        if self.opened_at is not None and not self.probing:
            self.opened_at = min(self.opened_at, now - self.reset_s)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing else "open"


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A complete upstream answer: status and body bytes."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class JsonSession:
    """The connection pool of one replica URL (:class:`~llmflow.gateway.http1.Http1Pool`)
    with JSON bodies and the gateway's timeouts."""

    def __init__(
        self, url: str, timeout_s: float, connect_timeout_s: float, keepalive_s: float
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._pool = Http1Pool(url, connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s)

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> JsonReply:
        """POST and read the whole answer within ``timeout_s``."""
        data = json.dumps(body, ensure_ascii=False).encode()
        status, content = await self._pool.post(path, data, headers, self.timeout_s)
        return JsonReply(status, content)

    async def stream(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> StreamReply:
        """POST and return once the answer's head has arrived (within ``timeout_s``); its body
        is read as it comes. No total timeout (a long answer may stream for minutes):
        ``timeout_s`` bounds each wait for the next bytes instead."""
        data = json.dumps(body, ensure_ascii=False).encode()
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        reply = await self._pool.open(path, data, headers, deadline)
        return StreamReply(reply, self.timeout_s)

    async def close(self) -> None:
        await self._pool.close()


class StreamReply:
    """An upstream answer being streamed (server-sent events)."""

    def __init__(self, reply: Reply, read_timeout_s: float) -> None:
        self._reply = reply
        self._read_timeout_s = read_timeout_s
        self.status_code = reply.status

    async def read(self) -> JsonReply:
        """The whole answer, and the connection back to the pool."""
        deadline = asyncio.get_running_loop().time() + self._read_timeout_s
        return JsonReply(self.status_code, await self._reply.read(deadline))

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines without their line ends, as they arrive (no line length limit:
        one event may carry a long tool call). :class:`UpstreamUnreachable` when the
        connection breaks or stalls past the timeout."""
        pending = b""
        async for chunk in self._reply.chunks(self._read_timeout_s):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")

    async def aclose(self) -> None:
        """Done with the answer: a fully read one has already returned its connection to the
        pool; one abandoned midway closes it, which tells the upstream to stop generating."""
        self._reply.close()


@dataclass(slots=True)
class Backend:
    config: BackendConfig
    client: httpx.AsyncClient
    breaker: CircuitBreaker
    session: JsonSession
    loaded_adapters: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.config.url.rstrip("/")

    async def post_json(self, path: str, body: dict[str, Any]) -> JsonReply:
        """A non-streaming JSON POST; raises :class:`UpstreamUnreachable` (or its
        :class:`UpstreamTimeout`) when no answer came."""
        return await self.session.post(path, body, self.headers())

    async def open_stream(self, path: str, body: dict[str, Any]) -> StreamReply:
        """A streaming JSON POST, returned once its head arrived; raises
        :class:`UpstreamUnreachable` (or :class:`UpstreamTimeout`) when none came."""
        return await self.session.stream(path, body, self.headers())

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


class BackendPool:
    """Every backend of the routing table, one client per distinct URL."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._sessions: dict[str, JsonSession] = {}
        self._backends: dict[str, list[Backend]] = {}
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
        for route in settings.models:
            backends = []
            for cfg in route.backends:
                url = cfg.url.rstrip("/")
                client = self._clients.get(url)
                if client is None:
                    client = httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits)
                    self._clients[url] = client
                    self._sessions[url] = JsonSession(
                        url,
                        settings.timeout_s,
                        settings.connect_timeout_s,
                        settings.upstream_keepalive_s,
                    )
                breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
                backends.append(Backend(cfg, client, breaker, self._sessions[url]))
            self._backends[route.name] = backends
        # replicas shared by several routes (a base model and its LoRA adapters) share
        # one breaker: it is the replica that is down, not the model name
        by_url: dict[str, CircuitBreaker] = {}
        for backends in self._backends.values():
            for b in backends:
                b.breaker = by_url.setdefault(b.url, b.breaker)

    def backends(self, model: str) -> list[Backend]:
        return self._backends.get(model, [])

    def candidates(self, model: str) -> list[Backend]:
        """Available backends of ``model`` in a weighted random order."""
        now = time.monotonic()
        live = [b for b in self.backends(model) if b.breaker.available(now)]
        return _weighted_order(live)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        for session in self._sessions.values():
            await session.close()


def _weighted_order(backends: Sequence[Backend]) -> list[Backend]:
    """Weighted shuffle (Efraimidis–Spirakis): heavier replicas come first more often."""
    keyed = [(random.random() ** (1.0 / b.config.weight), b) for b in backends]
    return [b for _, b in sorted(keyed, key=lambda kb: kb[0], reverse=True)]
