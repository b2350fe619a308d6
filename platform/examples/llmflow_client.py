"""A small typed client of LLMFlow's ERP facade (docs/erp-facade.md). Standalone: httpx only.

    token = KeycloakClientCredentials(token_url, "erp-sap-finance", secret)
    with LlmflowApps("https://api.llmflow.example", token) as apps:
        run = apps.run("po-summary", inputs={"po_number": "PO-2026-0042"},
                       idempotency_key="po-2026-0042")
        print(run.outputs)

Also: ``apps.stream(...)`` yields the facade's SSE events, ``apps.get_run(id)`` reads a run,
and :func:`verify_callback` checks an async-mode callback's signature on the receiving side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

__all__ = [
    "AppRun",
    "FacadeError",
    "KeycloakClientCredentials",
    "LlmflowApps",
    "StreamEvent",
    "verify_callback",
]


class FacadeError(Exception):
    """An RFC 9457 problem the facade answered (or a transport failure, status 0)."""

    def __init__(self, status: int, title: str, detail: str, kind: str = "") -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.type = status, title, detail, kind


@dataclass(frozen=True)
class AppRun:
    """A run as ``POST /v1/apps/{app}/run`` and ``GET /v1/runs/{id}`` return it."""

    id: str
    app: str
    status: Literal["running", "succeeded", "failed"]
    outputs: dict[str, Any] | None
    answer: str | None
    conversation_id: str | None
    error: dict[str, Any] | None
    replayed: bool
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AppRun:
        return cls(
            id=str(body["id"]),
            app=str(body.get("app", "")),
            status=body.get("status", "failed"),
            outputs=body.get("outputs"),
            answer=body.get("answer"),
            conversation_id=body.get("conversation_id"),
            error=body.get("error"),
            replayed=bool(body.get("replayed")),
            raw=dict(body),
        )


@dataclass(frozen=True)
class StreamEvent:
    """One event of the facade's stream: run.started, run.delta, run.step, run.completed,
    run.failed."""

    event: str
    data: dict[str, Any]


class KeycloakClientCredentials:
    """Keycloak client-credentials tokens for a machine client, cached until shortly before
    they expire."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._timeout = timeout_s
        self._transport = transport
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        if self._token is None or time.time() > self._expires_at - 30:
            with httpx.Client(timeout=self._timeout, transport=self._transport) as client:
                response = client.post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.client_id,
                        "client_secret": self._secret,
                    },
                )
            if response.status_code != 200:
                raise FacadeError(response.status_code, "token", response.text[:300])
            body = response.json()
            self._token = str(body["access_token"])
            self._expires_at = time.time() + float(body.get("expires_in", 60))
        return self._token


class LlmflowApps:
    """``/v1/apps/{app}/run`` and ``/v1/runs/{id}`` with explicit timeouts."""

    def __init__(
        self,
        base_url: str,
        credentials: KeycloakClientCredentials,
        *,
        timeout_s: float = 330.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            transport=transport,
        )

    def __enter__(self) -> LlmflowApps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._credentials.token()}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    @staticmethod
    def _check(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise FacadeError(
                response.status_code,
                str(problem.get("title", response.reason_phrase)),
                str(problem.get("detail", response.text[:300])),
                str(problem.get("type", "")),
            )
        body: dict[str, Any] = response.json()
        return body

    def run(
        self,
        app: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        query: str | None = None,
        conversation_id: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> AppRun:
        """Run an app; blocking, or async when ``callback_url`` is given (status running)."""
        body: dict[str, Any] = {
            "inputs": dict(inputs or {}),
            "response_mode": "async" if callback_url else "blocking",
        }
        if query is not None:
            body["query"] = query
        if conversation_id:
            body["conversation_id"] = conversation_id
        if callback_url:
            body["callback_url"] = callback_url
        response = self._client.post(
            f"/v1/apps/{app}/run", json=body, headers=self._headers(idempotency_key)
        )
        return AppRun.from_json(self._check(response))

    def stream(
        self, app: str, *, inputs: Mapping[str, Any] | None = None, query: str | None = None
    ) -> Iterator[StreamEvent]:
        """The run's events as they come (``: ping`` comments skipped)."""
        body: dict[str, Any] = {"inputs": dict(inputs or {}), "response_mode": "streaming"}
        if query is not None:
            body["query"] = query
        with self._client.stream(
            "POST", f"/v1/apps/{app}/run", json=body, headers=self._headers()
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            event, data = "", []
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and event:
                    yield StreamEvent(event, json.loads("\n".join(data)) if data else {})
                    event, data = "", []

    def get_run(self, run_id: str) -> AppRun:
        return AppRun.from_json(
            self._check(self._client.get(f"/v1/runs/{run_id}", headers=self._headers()))
        )


def verify_callback(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = 300
) -> bool:
    """Check an async-mode callback: ``X-LLMFlow-Signature: v1=<hex>`` is HMAC-SHA256 of
    ``"<X-LLMFlow-Timestamp>." + raw body`` with the tenant's callback secret; the timestamp
    must be fresh (replay protection). Compare the raw bytes, before any JSON parsing."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = (
        lower.get("x-llmflow-timestamp", ""),
        lower.get("x-llmflow-signature", ""),
    )
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return any(
        hmac.compare_digest("v1=" + expected.hexdigest(), part.strip())
        for part in signature.split(",")
    )
