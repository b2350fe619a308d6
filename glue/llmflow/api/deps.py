"""FastAPI dependencies: the runtime and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llmflow.auth.apikeys import Principal
from llmflow.errors import Unauthorized
from llmflow.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def bearer_token(request: Request) -> str:
    """Token from ``Authorization: Bearer`` (APISIX's ``X-Access-Token`` arrives with JWTs,
    issue 5)."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <key>'")
    return token.strip()


async def get_principal(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Principal:
    return await runtime.api_keys.authenticate(bearer_token(request))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
