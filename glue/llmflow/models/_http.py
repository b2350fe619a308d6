"""HTTP plumbing shared by the model-server clients (TEI, OpenAI-compatible, Infinity).

One retry policy for every model server, because they fail the same way: a busy server
answers 429 (TEI "Model is overloaded") or 503 (TEI "Unhealthy", a proxy in front of a
restarting pod), and a pod being rescheduled drops connections. Those are worth retrying
with exponential back-off; everything else is the caller's to interpret.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
"""The coroutine used to wait between attempts; tests inject one that only records."""

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
"""Busy or briefly unreachable: 429 overloaded, 502/504 from a proxy, 503 unhealthy."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential back-off with "equal jitter".

    Attempt ``k`` (0-based) waits between ``d/2`` and ``d`` with ``d = min(max_delay_s,
    base_delay_s * 2**k)``: the half that is random spreads out clients that failed
    together (every ingest worker hits the same overloaded TEI), the fixed half keeps the
    back-off growing so a struggling server actually gets relief.
    """

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``.

        A server's ``Retry-After`` is honoured when it asks for longer than our own
        back-off, but never beyond ``max_delay_s``: an ingest job should fail visibly
        rather than hang on a server that asks for an hour.
        """
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0**attempt)
        wait = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay_s))
        return wait


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """What a model server said when it refused a request."""

    status_code: int
    message: str
    error_type: str | None = None


def error_detail(response: httpx.Response) -> ErrorDetail:
    """Read the error body of any of the servers we talk to.

    TEI: ``{"error": "...", "error_type": "Validation"}``; TEI's OpenAI route:
    ``{"message", "code", "error_type"}``; OpenAI and new vLLM: ``{"error": {"message",
    "type", "param", "code"}}``; old vLLM: ``{"object": "error", "message", "type"}``;
    FastAPI (Infinity) validation: ``{"detail": [...]}``; axum's body limit: plain text.
    """
    text = response.text
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    message = text.strip()[:500] or response.reason_phrase
    error_type: str | None = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = str(error.get("message", message))
            error_type = _str_or_none(error.get("type"))
        elif isinstance(error, str):
            message = error
            error_type = _str_or_none(body.get("error_type"))
        elif "message" in body:
            message = str(body["message"])
            error_type = _str_or_none(body.get("error_type") or body.get("type"))
        elif "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)[:500]
            error_type = "validation"
    return ErrorDetail(response.status_code, message, error_type)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is ignored (no proxy of ours sends it)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def send_with_retries(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    policy: RetryPolicy,
    sleep: Sleep,
    rng: random.Random,
    unavailable: Callable[[str], Exception],
    service: str,
) -> httpx.Response:
    """Send one request, retrying transport failures and 429/502/503/504.

    Returns the first response that is not retryable, whatever its status: only the
    caller knows that TEI's 413/422 means "shrink the batch". When the retries are used up
    it raises ``unavailable(message)``, the caller's typed error.
    """
    last_problem = ""
    for attempt in range(policy.max_retries + 1):
        retry_after: float | None = None
        try:
            response = await client.request(method, path, json=json_body)
        except httpx.TimeoutException as exc:
            last_problem = f"timed out ({type(exc).__name__})"
        except httpx.TransportError as exc:
            last_problem = f"unreachable ({type(exc).__name__}: {exc})"
        else:
            if response.status_code not in RETRYABLE_STATUS:
                return response
            detail = error_detail(response)
            last_problem = f"HTTP {detail.status_code}: {detail.message}"
            retry_after = retry_after_seconds(response)
        if attempt == policy.max_retries:
            break
        wait = policy.delay(attempt, rng, retry_after)
        log.warning(
            "%s %s %s: %s; retry %d/%d in %.2fs",
            service,
            method,
            path,
            last_problem,
            attempt + 1,
            policy.max_retries,
            wait,
        )
        await sleep(wait)
    raise unavailable(
        f"{service} at {client.base_url} {last_problem} after {policy.max_retries + 1} attempts"
    )


def build_client(
    base_url: str,
    *,
    timeout_s: float,
    api_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one ``AsyncClient`` a service instance owns.

    Connecting gets a short timeout of its own: a wrong URL should fail in seconds, while a
    large embedding batch may legitimately take most of ``timeout_s`` to compute.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        headers=headers,
        transport=transport,
    )
