"""Search (JWT/API key) and Dify's External Knowledge API."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from llmflow.api.authz import authorize_kb
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.errors import Forbidden, LLMFlowError, NotFound, Unauthorized
from llmflow.retrieve.metadata_filter import MetadataCondition

router = APIRouter(tags=["retrieval"])


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    knowledge_bases: list[str] = Field(min_length=1, max_length=20)
    top_k: int = Field(default=5, ge=1, le=100)
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    mode: Literal["hybrid", "dense", "lexical", "graph"] = Field(
        default="hybrid",
        description="graph: hybrid expanded through the knowledge graph (cross-references, "
        "entities); each result's metadata.graph says which path reached it",
    )
    metadata_condition: MetadataCondition | None = None
    rerank: bool = True


class Citation(BaseModel):
    document_id: str
    source: str
    title: str
    page: int | None
    section: str
    chunk_id: str


class SearchHit(BaseModel):
    chunk_id: str
    score: float
    text: str
    knowledge_base: str
    citation: Citation
    metadata: dict[str, Any]
    signals: dict[str, float]


class SearchOut(BaseModel):
    results: list[SearchHit]
    timings_ms: dict[str, float]
    weights: dict[str, float]


@router.post(
    "/v1/search", response_model=SearchOut, responses=problem_responses(401, 403, 404, 422, 503)
)
async def search(
    body: SearchRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Hybrid (dense + Korean-morpheme BM25) search over the caller's knowledge bases.

    One ``search`` decision per knowledge base named (all must be allowed); the names are
    looked up in the caller's tenant only.
    """
    for name in dict.fromkeys(body.knowledge_bases):
        await authorize_kb(rt, principal, "search", name, request=request)
    resp = await rt.search.search(
        principal,
        body.knowledge_bases,
        body.query,
        top_k=body.top_k,
        score_threshold=body.score_threshold,
        mode=body.mode,
        metadata_condition=body.metadata_condition,
        rerank=body.rerank,
    )
    return {
        "results": [r.to_dict() for r in resp.results],
        "timings_ms": resp.timings_ms,
        "weights": resp.weights,
    }


# -- Dify External Knowledge API ---------------------------------------------------------


class RetrievalSetting(BaseModel):
    top_k: int = Field(ge=1, le=100)
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class RetrievalRequest(BaseModel):
    knowledge_id: str
    query: str
    retrieval_setting: RetrievalSetting
    metadata_condition: MetadataCondition | None = None


class Record(BaseModel):
    content: str
    score: float
    title: str
    metadata: dict[str, Any]


class RetrievalOut(BaseModel):
    records: list[Record]


class DifyError(BaseModel):
    error_code: int
    error_msg: str


def _dify_error(status: int, code: int, msg: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "error_msg": msg}, status_code=status)


@router.post(
    "/retrieval",
    response_model=RetrievalOut,
    tags=["dify"],
    responses={400: {"model": DifyError}, 403: {"model": DifyError}, 404: {"model": DifyError}},
)
async def dify_retrieval(request: Request, rt: RuntimeDep) -> Any:
    """Dify's External Knowledge API, exactly as Dify calls it.

    ``knowledge_id`` is the LLMFlow knowledge base name; the tenant comes from the API key.
    Errors: 1001 bad Authorization header format (403), 1002 authorization failed (403),
    2001 knowledge base does not exist (404); 400 for a malformed body (Dify's registration
    probe sends a valid key and no body and must not see 403/404/502).
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _dify_error(
            403, 1001, "Invalid Authorization header format. Expected 'Bearer <api-key>' format."
        )
    try:
        principal = await rt.api_keys.authenticate(token.strip())
    except Unauthorized:
        return _dify_error(403, 1002, "Authorization failed")
    raw = await request.body()
    try:
        body = RetrievalRequest.model_validate(json.loads(raw) if raw.strip() else {})
    except (ValueError, ValidationError) as exc:
        return _dify_error(400, 1000, f"invalid request body: {exc}".splitlines()[0][:300])
    try:
        await authorize_kb(rt, principal, "search", body.knowledge_id, request=request)
    except Forbidden as exc:
        return _dify_error(403, 1002, f"Authorization failed: {exc.detail}")
    except NotFound:
        return _dify_error(404, 2001, "The knowledge does not exist")
    except LLMFlowError as exc:  # the policy or the audit log is unavailable
        return _dify_error(exc.status, 5000, exc.detail)
    try:
        resp = await rt.search.search(
            principal,
            [body.knowledge_id],
            body.query,
            top_k=body.retrieval_setting.top_k,
            score_threshold=body.retrieval_setting.score_threshold,
            metadata_condition=body.metadata_condition,
        )
    except LLMFlowError as exc:
        if exc.status == 404:
            return _dify_error(404, 2001, "The knowledge does not exist")
        return _dify_error(
            exc.status if exc.status < 500 else 500, 1000 if exc.status < 500 else 5000, exc.detail
        )
    return {
        "records": [
            {
                "content": r.text,
                "score": round(r.score, 6),
                "title": r.title or r.source,
                "metadata": {k: v for k, v in r.metadata.items() if k != "table_html" or v},
            }
            for r in resp.results
        ]
    }
