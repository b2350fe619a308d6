"""PII endpoints: analyse text, and anonymise it with the caller's tenant policy."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from llmflow.api.authz import authorize
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.errors import InvalidRequest
from llmflow.pii.config import Surface

router = APIRouter(prefix="/v1/pii", tags=["pii"])

ACTION = "pii.use"
"""The PII service of the caller's own tenant: it reads no tenant data (``kb.read`` and
``search`` would say otherwise) and every role may use it (policies/opa/README.md)."""

MAX_TEXT_CHARS = 1_000_000


class AnalyzeRequest(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARS, examples=["담당자 이서연 주무관 (02-2110-6543)"])
    language: Literal["ko", "en"] | None = Field(
        default=None, description="recognizer set; default: Korean when the text has Hangul"
    )
    entities: list[str] | None = Field(
        default=None, description="only these entity types (GET /v1/pii/entities lists them)"
    )
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class Span(BaseModel):
    type: str
    start: int = Field(description="offset in characters (code points), inclusive")
    end: int = Field(description="offset in characters, exclusive")
    score: float
    recognizer: str
    text: str


class AnalyzeResponse(BaseModel):
    entities: list[Span]


class AnonymizeRequest(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARS)
    classification: Literal["public", "internal", "confidential", "secret"] = "internal"


class AnonymizedSpan(BaseModel):
    type: str
    start: int = Field(description="offset in the original text")
    end: int
    action: str


class AnonymizeResponse(BaseModel):
    text: str
    items: list[AnonymizedSpan]
    counts: dict[str, int]


class EntityType(BaseModel):
    type: str
    description: str


async def _authorize(rt: RuntimeDep, principal: PrincipalDep, request: Request, op: str) -> None:
    resource = {"type": "pii", "tenant": principal.tenant_id, "id": op}
    await authorize(rt, principal, ACTION, resource, request=request)


@router.post(
    "/analyze", response_model=AnalyzeResponse, responses=problem_responses(401, 403, 422, 503)
)
async def analyze(
    body: AnalyzeRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Find PII in a text: spans with type, offsets, score and the recognizer that found it.

    Nothing is stored or logged; the response repeats the caller's own text spans.
    """
    await _authorize(rt, principal, request, "analyze")
    engine = await rt.pii_engine()
    if body.entities:
        unknown = sorted(set(body.entities) - set(engine.entities))
        if unknown:
            raise InvalidRequest(f"unknown entity types {unknown}; see GET /v1/pii/entities")
    findings = await asyncio.to_thread(
        engine.analyze, body.text, body.language, body.entities, body.score_threshold
    )
    return {"entities": [{**f.to_dict(), "text": body.text[f.start : f.end]} for f in findings]}


@router.post(
    "/anonymize", response_model=AnonymizeResponse, responses=problem_responses(401, 403, 422, 503)
)
async def anonymize(
    body: AnonymizeRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Apply the tenant's PII policy (surface ``anonymize``) to a text.

    A ``block`` in the policy answers 422 ``pii_blocked`` naming the entity types.
    """
    await _authorize(rt, principal, request, "anonymize")
    guard = await rt.pii_guard()
    result = await asyncio.to_thread(
        guard.apply,
        body.text,
        Surface.ANONYMIZE,
        classification=body.classification,
        tenant=principal.tenant_id,
    )
    return {
        "text": result.text,
        "items": [
            {
                "type": f.entity_type,
                "start": f.start,
                "end": f.end,
                "action": result.actions[f.entity_type].value,
            }
            for f in result.findings
        ],
        "counts": result.counts,
    }


@router.get(
    "/entities", response_model=list[EntityType], responses=problem_responses(401, 403, 503)
)
async def entities(
    request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> list[dict[str, str]]:
    """The entity types the engine reports, with what each covers."""
    await _authorize(rt, principal, request, "entities")
    from llmflow.pii.recognizers import describe

    engine = await rt.pii_engine()
    described = describe()
    return [
        {"type": e, "description": str(described.get(e, "Presidio predefined recognizer"))}
        for e in engine.entities
    ]
