"""Keycloak's signing keys (JWKS): fetched from the internal URL, cached, refetched sparingly.

Keycloak's public issuer URL (what ``iss`` says) often is not reachable from inside the
cluster, so the JWKS comes from a separately configured backchannel URL.

Caching rules, in the order :meth:`JwksCache.signing_key` applies them:

* The key set is kept for ``ttl_s`` and then refetched on the next request.
* A ``kid`` not in the set (Keycloak rotated its keys) refetches at once, but at most once per
  ``min_refetch_interval_s``: a flood of tokens with made-up ``kid`` values costs Keycloak one
  request per interval, not one per token. Concurrent requests share one fetch.
* When a refetch fails, the last good key set stays in use (a Keycloak restart must not log
  everyone out); tokens whose key we cannot know get a 503, because their validity cannot be
  decided, not a 401.

Only signature keys are kept: Keycloak publishes an ``RSA-OAEP`` encryption key (``use: enc``)
next to its ``RS256`` signing key, and a key whose ``alg`` is not on the allow-list is dropped
so that it can never verify anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from jwt import PyJWK, PyJWTError

from llmflow.errors import ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

_KEY_TYPE_OF_ALGORITHM = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}

KeySet = dict[str, dict[str, PyJWK]]
"""kid → algorithm → verification key."""


def parse_jwks(document: Any, algorithms: Sequence[str]) -> KeySet:
    """The signature keys of a JWKS document usable with one of ``algorithms``.

    Keys for encryption (``use: enc``), with another algorithm, without a ``kid`` or that do
    not parse are skipped (with a warning for the ones that look like a mistake).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the document has no 'keys' list")
    keys: KeySet = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            log.warning("JWKS key without a 'kid' skipped")
            continue
        if jwk.get("use", "sig") != "sig":
            continue  # Keycloak's RSA-OAEP key: for encrypting to Keycloak, never for signatures
        if "alg" in jwk:
            candidates = [jwk["alg"]] if jwk["alg"] in algorithms else []
        else:
            candidates = [a for a in algorithms if _KEY_TYPE_OF_ALGORITHM.get(a) == jwk.get("kty")]
        usable: dict[str, PyJWK] = {}
        for alg in candidates:
            if _KEY_TYPE_OF_ALGORITHM.get(alg) != jwk.get("kty"):
                log.warning("JWKS key %r skipped: kty %r cannot do %s", kid, jwk.get("kty"), alg)
                continue
            try:
                usable[alg] = PyJWK(jwk, alg)
            except PyJWTError as exc:
                log.warning("JWKS key %r skipped: %s", kid, type(exc).__name__)
        if usable:
            keys[kid] = usable
    if not keys:
        log.warning("the JWKS has no signing key usable with %s", list(algorithms))
    return keys


class JwksCache:
    """The issuer's signing keys, fetched with one ``httpx.AsyncClient`` (see module docstring)."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        algorithms: Sequence[str],
        ttl_s: float,
        min_refetch_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = client
        self._algorithms = list(algorithms)
        self._ttl_s = ttl_s
        self._min_interval_s = min_refetch_interval_s
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._attempts = 0
        self._last_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    @property
    def fetches(self) -> int:
        """How many times the JWKS endpoint has been asked (for metrics and tests)."""
        return self._attempts

    async def signing_key(self, kid: str, alg: str) -> PyJWK:
        """The key that verifies a token with this ``kid`` and ``alg``.

        Raises Unauthorized when the issuer does not publish such a key (after at most one
        refetch), ServiceUnavailable when the JWKS cannot be fetched and the answer depends
        on it.
        """
        now = self._clock()
        if self._keys is None or now - self._fetched_at >= self._ttl_s:
            if self._may_fetch(now):
                await self._refresh()
            if self._keys is None:
                raise self._unavailable()
        key = self._lookup(kid, alg)
        if key is not None:
            return key
        if kid not in (self._keys or {}) and self._may_fetch(self._clock()):
            await self._refresh()
            key = self._lookup(kid, alg)
            if key is not None:
                return key
        keys = self._keys or {}
        if kid in keys:
            raise Unauthorized(
                f"the token's algorithm {alg} does not match signing key {kid!r} "
                f"({', '.join(keys[kid])})"
            )
        if self._last_error is not None:
            raise self._unavailable()
        raise Unauthorized(f"the token's signing key {kid!r} is not published by the issuer")

    def _lookup(self, kid: str, alg: str) -> PyJWK | None:
        return (self._keys or {}).get(kid, {}).get(alg)

    def _may_fetch(self, now: float) -> bool:
        # A fetch in flight is always joined: its result may hold the key we are missing.
        return (
            self._inflight is not None
            or self._attempted_at is None
            or now - self._attempted_at >= self._min_interval_s
        )

    def _unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"cannot verify the token: the identity provider's keys are unavailable "
            f"({self._last_error or 'not fetched yet'}); retry shortly"
        )

    async def _refresh(self) -> None:
        # One fetch task shared by every request that needs it; shielded so that a client
        # disconnecting (which cancels its request) does not cancel the others' fetch.
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch_and_store())
        await asyncio.shield(self._inflight)

    async def _fetch_and_store(self) -> None:
        self._attempts += 1
        self._attempted_at = started = self._clock()
        try:
            keys = await self._fetch()
        except ServiceUnavailable as exc:
            self._last_error = exc.detail
        else:
            self._keys, self._fetched_at, self._last_error = keys, started, None
            log.info("JWKS fetched from %s: %d signing key(s)", self.url, len(keys))
        finally:
            self._inflight = None

    async def _fetch(self) -> KeySet:
        # The exception's detail reaches unauthenticated callers (503): it names what failed,
        # not the internal URL or the transport's message, which go to the log only.
        try:
            response = await self._client.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("JWKS %s unreachable: %s: %s", self.url, type(exc).__name__, exc)
            raise ServiceUnavailable(f"JWKS unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            log.warning("JWKS %s answered HTTP %d", self.url, response.status_code)
            raise ServiceUnavailable(f"JWKS answered HTTP {response.status_code}")
        try:
            return parse_jwks(response.json(), self._algorithms)
        except ValueError as exc:
            log.warning("JWKS %s is not a JWK set: %s", self.url, exc)
            raise ServiceUnavailable("JWKS answer is not a JWK set") from exc
