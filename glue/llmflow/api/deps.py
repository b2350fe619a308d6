"""FastAPI dependencies: the runtime and the calling principal."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from llmflow.auth.apikeys import KEY_SCHEME
from llmflow.auth.principal import Principal
from llmflow.errors import Unauthorized
from llmflow.runtime import Runtime

JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""JWS compact serialization: header.payload.signature (an empty signature is let through to
the verifier, which refuses ``alg: none`` with a clear reason)."""
MAX_CREDENTIAL_CHARS = 32_768
"""Far above a Keycloak token with many groups; bounds the work spent on garbage."""


async def get_runtime(request: Request) -> Runtime:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hand-off on every request for one attribute read."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def bearer_token(request: Request) -> str:
    """The caller's credential: ``Authorization: Bearer <token>`` or APISIX's ``X-Access-Token``.

    APISIX's ``openid-connect`` plugin passes the access token in ``X-Access-Token`` (and, in
    bearer-only mode, leaves the client's ``Authorization`` header in place). When both are
    sent they must carry the same token: two different credentials are refused rather than
    one of them picked silently.
    """
    bearer: str | None = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        bearer = value.strip()
    access = (request.headers.get("x-access-token") or "").strip() or None
    if bearer and access and bearer != access:
        raise Unauthorized(
            "Authorization and X-Access-Token carry different credentials: send one token"
        )
    token = bearer or access
    if not token:
        raise Unauthorized(
            "missing credential: send 'Authorization: Bearer <token>' with an LLMFlow API key "
            "or a Keycloak access token"
        )
    if len(token) > MAX_CREDENTIAL_CHARS:
        raise Unauthorized(f"credential longer than {MAX_CREDENTIAL_CHARS} characters")
    return token


async def get_principal(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Principal:
    """API keys (``llmf_…``) go to the key store, JWTs to the Keycloak verifier."""
    token = bearer_token(request)
    if token.startswith(KEY_SCHEME + "_"):
        return await runtime.api_keys.authenticate(token)
    if not JWT_SHAPE.fullmatch(token):
        raise Unauthorized("the credential is neither an LLMFlow API key (llmf_…) nor a JWT")
    if not runtime.settings.auth.issuer:
        raise Unauthorized(
            "JWT authentication is not configured on this server (auth.issuer is unset): "
            "use an LLMFlow API key"
        )
    verifier = await runtime.jwt_verifier()
    return await verifier.authenticate(token)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
