"""RFC 9457 problem details at the HTTP edge."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmflow.errors import LLMFlowError, PiiBlocked

PROBLEM_TYPE = "https://llmflow.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_TYPE + code,
        title=title,
        status=status,
        detail=detail,
        instance=str(request.url.path),
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem-details errors."""
    return {s: {"model": Problem, "content": {MEDIA_TYPE: {}}} for s in statuses}


def domain_problem(request: Request, exc: LLMFlowError) -> JSONResponse:
    """The problem details of a platform error (401s also say ``WWW-Authenticate``)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    errors = (
        [{"entity_type": entity} for entity in exc.entities]
        if isinstance(exc, PiiBlocked)
        else None
    )
    return problem_response(
        request, exc.status, exc.code, exc.title, exc.detail, errors=errors, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(LLMFlowError)
    async def _domain(request: Request, exc: LLMFlowError) -> JSONResponse:
        return domain_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem_response(
            request,
            422,
            "validation_error",
            "Invalid request",
            "the request does not match the API schema",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            request, exc.status_code, f"http_{exc.status_code}", str(exc.detail), str(exc.detail)
        )
