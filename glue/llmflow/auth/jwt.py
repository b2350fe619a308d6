"""Keycloak access-token verification for every glue API (ARCHITECTURE §6).

The glue re-verifies the JWT that APISIX already checked (defence in depth), so a request that
reaches a service directly is held to the same rules:

* **Signature**: only the algorithms of ``auth.algorithms`` (RS256 by default; settings refuse
  ``none`` and every HMAC algorithm, which rules out the "HS256 signed with the RSA public
  key" confusion), only keys from the issuer's JWKS (see :mod:`llmflow.auth.jwks`), the key
  chosen by the header's ``kid`` and bound to one algorithm. A ``crit`` header is refused:
  Keycloak never sets one, and we implement no extension it could name.
* **Claims required**: ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and the tenant claim.
  ``iss`` must equal ``auth.issuer`` (Keycloak's *public* issuer URL) exactly; ``aud`` (a
  string or a list, both of which Keycloak emits) must contain one of ``auth.audiences``.
* **nbf is checked when present, not required**. Issue 5 asks for ``nbf`` as well, but Keycloak
  access tokens do not carry it (``JsonWebToken.nbf`` is left unset and omitted from the JSON;
  old releases wrote ``"nbf": 0``, which passes). Requiring it would reject every real token.
  ``iat`` plays the not-before role instead: PyJWT refuses an ``iat`` in the future, so a token
  minted "for later" is refused either way.
* **Leeway** ``auth.leeway_s`` on ``exp``, ``nbf`` and ``iat`` for clock skew between Keycloak
  and the glue pods.
* **Token type**: a ``typ`` claim other than ``Bearer`` (Keycloak's ``ID`` token, signed by the
  same key and possibly carrying the same audience) is not an access token and is refused.

Every refusal is :class:`~llmflow.errors.Unauthorized` whose message says what was wrong and
never contains the token or its claims; a JWKS that cannot be fetched is
:class:`~llmflow.errors.ServiceUnavailable` (503).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from llmflow.auth.jwks import JwksCache
from llmflow.auth.principal import Principal, PrincipalKind, roles_from_realm_roles
from llmflow.errors import InvalidRequest, Unauthorized
from llmflow.knowledge import validate_name
from llmflow.settings import AuthSettings

log = logging.getLogger(__name__)

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
ACCESS_TOKEN_TYPE = "Bearer"
SERVICE_ACCOUNT_PREFIX = "service-account-"
"""Keycloak names a client's service-account user ``service-account-<client id>``."""
_MAX_KID_CHARS = 200


def default_jwks_url(issuer: str) -> str:
    """Keycloak's JWKS endpoint under an issuer (realm) URL."""
    return issuer.rstrip("/") + "/protocol/openid-connect/certs"


class JwtVerifier:
    """Verifies Keycloak access tokens and turns them into principals.

    Owns one ``httpx.AsyncClient`` for the JWKS (unless one is handed in); close it with
    :meth:`aclose`.
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.issuer:
            raise ValueError("auth.issuer is not set: JWT verification needs the issuer URL")
        self.settings = settings
        self.issuer = settings.issuer
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.http_timeout_s)
        self.jwks = JwksCache(
            settings.jwks_url or default_jwks_url(settings.issuer),
            self._client,
            algorithms=settings.algorithms,
            ttl_s=settings.jwks_cache_ttl_s,
            min_refetch_interval_s=settings.jwks_min_refetch_interval_s,
            clock=clock,
        )

    async def aclose(self) -> None:
        """Close the JWKS client if this verifier created it."""
        if self._owns_client:
            await self._client.aclose()

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; Unauthorized (401) if anything is wrong."""
        try:
            return await self._verify(token)
        except Unauthorized as exc:
            # The reason only: never the token, never its (unverified) claims.
            log.info("JWT rejected: %s", exc.detail)
            raise

    async def authenticate(self, token: str) -> Principal:
        """The principal of a verified access token; Unauthorized (401) if it has none."""
        try:
            claims = await self._verify(token)
            return principal_from_claims(claims, self.settings.tenant_claim)
        except Unauthorized as exc:
            log.info("JWT rejected: %s", exc.detail)
            raise

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.DecodeError, json.JSONDecodeError, UnicodeDecodeError):
            raise Unauthorized("malformed token: not a JWS compact serialization") from None
        except jwt.PyJWTError:
            raise Unauthorized(
                "token header is not acceptable: a 'kid' that is not a string or a 'crit' extension"
            ) from None
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            shown = alg if isinstance(alg, str) and len(alg) <= 20 else "?"
            raise Unauthorized(
                f"token algorithm {shown!r} is not accepted; use one of {self.settings.algorithms}"
            )
        if "crit" in header:
            raise Unauthorized("token header has a 'crit' parameter, which is not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
            raise Unauthorized("token header has no usable 'kid'")
        key = await self.jwks.signing_key(kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.settings.algorithms,
                audience=self.settings.audiences,
                issuer=self.issuer,
                leeway=self.settings.leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(self._reason(exc)) from None
        typ = claims.get("typ", ACCESS_TOKEN_TYPE)
        if typ != ACCESS_TOKEN_TYPE:
            raise Unauthorized("token is not an access token (typ is not 'Bearer')")
        return claims

    def _reason(self, exc: jwt.PyJWTError) -> str:
        # Our own wording per failure: PyJWT's messages are safe today, but the HTTP answer
        # and the log must stay token-free whatever a future release puts in them.
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "token expired"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "token not yet valid (nbf or iat in the future)"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"token audience is not one of {self.settings.audiences}"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"token issuer is not {self.issuer}"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"token lacks the required claim {exc.claim!r}"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "token signature does not verify"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return "token algorithm does not match its signing key"
        if isinstance(exc, jwt.InvalidIssuedAtError):
            return "token 'iat' is not a number"
        if isinstance(exc, jwt.DecodeError):
            return "malformed token"
        return f"invalid token ({type(exc).__name__})"


def principal_from_claims(claims: Mapping[str, Any], tenant_claim: str = "tenant") -> Principal:
    """Map verified Keycloak access-token claims onto a :class:`Principal`.

    * tenant: the ``tenant_claim`` claim, a single tenant name (required: a token without one
      belongs to no tenant and may see nothing).
    * roles: the realm roles, from ``realm_access.roles`` (Keycloak's ``roles`` scope) and the
      top-level ``roles`` claim (the realm-role mapper of our ``llmflow`` client scope, which
      clients without the ``roles`` scope still get), through
      :func:`~llmflow.auth.principal.roles_from_realm_roles`.
    * groups: the ``groups`` claim as Keycloak's full paths (``/tenants/dept-hr``).
    * kind: ``service`` for a client-credentials token of a service account, recognised by
      either signal Keycloak emits: the ``client_id`` claim (``clientId`` before Keycloak 26)
      of the service-account client scope equal to ``azp`` (that mapper reads a client-session
      note only the client-credentials grant sets), or ``preferred_username`` equal to
      ``service-account-<azp>`` (the service-account user's name; present only when the client
      has the ``profile`` scope). Otherwise ``user``. The kind grants nothing by itself: it is
      input for the policy and the audit log.
    """
    tenant = claims.get(tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise Unauthorized(
            f"token has no '{tenant_claim}' claim: the user (or service-account user) needs "
            f"the '{tenant_claim}' attribute and the realm a '{tenant_claim}' mapper"
        )
    try:
        validate_name("tenant", tenant)
    except InvalidRequest:
        raise Unauthorized(f"token's '{tenant_claim}' claim is not a valid tenant name") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("token 'sub' claim is empty")
    realm_access = claims.get("realm_access")
    realm_roles = _strings(realm_access.get("roles") if isinstance(realm_access, dict) else None)
    realm_roles += _strings(claims.get("roles"))
    azp = claims.get("azp")
    client_id = azp if isinstance(azp, str) and azp else None
    username = claims.get("preferred_username")
    username = username if isinstance(username, str) and username else None
    kind: PrincipalKind = "user"
    if client_id is not None:
        session_client = claims.get("client_id", claims.get("clientId"))
        service_user = (SERVICE_ACCOUNT_PREFIX + client_id).casefold()
        if session_client == client_id or (username or "").casefold() == service_user:
            kind = "service"
    return Principal(
        tenant_id=tenant,
        subject=subject,
        roles=roles_from_realm_roles(realm_roles),
        groups=frozenset(_strings(claims.get("groups"))),
        kind=kind,
        client_id=client_id,
        username=username,
    )


def _strings(value: Any) -> list[str]:
    """The string items of a claim that should be a list of strings (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and v]
