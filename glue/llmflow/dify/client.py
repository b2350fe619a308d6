"""Low-level clients of one Dify instance: the console API and the service API.

* Console API (``/console/api``): LLMFlow authenticates with Dify's admin API key
  (``ADMIN_API_KEY_ENABLE=true``; ``Authorization: Bearer <ADMIN_API_KEY>`` plus
  ``X-WORKSPACE-ID``: Dify then acts as that workspace's owner), or with a console access
  token where a call must act as a given account.
* Service API (``/v1``): per-app keys (``app-…``) and knowledge keys (``dataset-…``).

Errors come back in Dify's shape ``{"code", "message", "status"}`` and become
:class:`DifyError`. Contracts are those of :data:`DIFY_VERSION`; the contract tests replay
that version's endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

DIFY_VERSION = "1.14.2"
"""The Dify version these clients follow (``platform/platform.yaml`` pins the images)."""

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class DifyError(Exception):
    """A Dify call that failed: HTTP status, Dify's error code and message."""

    def __init__(self, status: int, code: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"Dify {method} {path} → {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, message = f"http_{response.status_code}", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        message = str(body.get("message") or body.get("error") or message)
    raise DifyError(
        response.status_code,
        code,
        message,
        method=response.request.method,
        path=response.request.url.path,
    )


class _DifyApi:
    """One ``httpx.AsyncClient`` per Dify API, explicit timeouts, Dify's errors raised."""

    prefix = ""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url + self.prefix,
            headers=dict(headers),
            timeout=timeout,
            transport=transport,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one call; the decoded JSON body (None for an empty one) or a DifyError."""
        response = await self._client.request(
            method, path, json=json, params=params, files=files, data=data, headers=headers
        )
        _raise_for(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def stream(
        self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """``async with api.stream(...) as response`` for SSE endpoints (caller checks status)."""
        return self._client.stream(method, path, json=json, headers=headers)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> _DifyApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class DifyConsole(_DifyApi):
    """The console API of one Dify instance (``{base_url}/console/api``)."""

    prefix = "/console/api"

    @classmethod
    def with_admin_key(
        cls, base_url: str, admin_api_key: str, workspace_id: str, **kwargs: Any
    ) -> DifyConsole:
        """Act as the owner of ``workspace_id`` through Dify's admin API key."""
        return cls(
            base_url,
            {"Authorization": f"Bearer {admin_api_key}", "X-WORKSPACE-ID": workspace_id},
            **kwargs,
        )

    @classmethod
    def with_access_token(cls, base_url: str, access_token: str, **kwargs: Any) -> DifyConsole:
        """Act as the account a console access token belongs to."""
        return cls(base_url, {"Authorization": f"Bearer {access_token}"}, **kwargs)


class DifyService(_DifyApi):
    """The service API of one Dify instance (``{base_url}/v1``) with an app or knowledge key."""

    prefix = "/v1"

    @classmethod
    def with_key(cls, base_url: str, api_key: str, **kwargs: Any) -> DifyService:
        return cls(base_url, {"Authorization": f"Bearer {api_key}"}, **kwargs)
