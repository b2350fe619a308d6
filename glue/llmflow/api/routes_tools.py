"""Retrieval tools for Dify's custom tools (OpenAPI import): search, graph neighbourhood,
follow a reference; and ``GET /v1/tools/openapi.json``, the document Dify imports.

What Dify's importer (``ApiBasedToolSchemaParser.parse_openapi_to_tool_bundle``) reads, and
so what the document keeps to: ``servers[0].url`` (prefixed to every path; a document without
servers is refused), one ``operationId`` per operation (the tool's name; Dify invents one from
the path otherwise), ``description``/``summary``, and the properties of an
``application/json`` request body as the tool's parameters, typed by their ``type``
(``string``/``integer``/``number``/``boolean``; anything else falls back to string). So the
request bodies here are flat objects of scalars — knowledge bases as one comma-separated
string — and the schemas are inline. Authentication is Bearer with an LLMFlow API key
(Dify: Authorization type "API Key", header ``Authorization``, prefix "Bearer");
``components.securitySchemes`` says so for other OpenAPI clients.

The tenant is the API key's; knowledge bases are looked up and authorised in it only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from llmflow import __version__
from llmflow.agents.runtime_tools import RuntimeResearchTools
from llmflow.api.authz import allowed_kbs
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.auth.principal import Principal
from llmflow.errors import InvalidRequest
from llmflow.runtime import Runtime

router = APIRouter(prefix="/v1/tools", tags=["tools"])

_KBS_DESCRIPTION = (
    "knowledge base names, comma-separated; empty: every knowledge base this key may search"
)


class SearchToolRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000, description="what to look for")
    knowledge_bases: str = Field(default="", max_length=2000, description=_KBS_DESCRIPTION)
    top_k: int = Field(default=5, ge=1, le=20, description="how many passages")


class NeighbourhoodToolRequest(BaseModel):
    node: str = Field(
        min_length=1, max_length=500, description="an entity or section name, or a node id"
    )
    knowledge_bases: str = Field(default="", max_length=2000, description=_KBS_DESCRIPTION)
    hops: int = Field(default=1, ge=1, le=2, description="relationships to follow (1-2)")
    limit: int = Field(default=50, ge=1, le=200, description="most nodes returned")


class FollowReferenceToolRequest(BaseModel):
    chunk_id: str = Field(min_length=1, max_length=200, description="the citing passage")
    reference: str = Field(
        default="", max_length=200, description="one reference as written (e.g. 제5조); empty: all"
    )
    knowledge_bases: str = Field(default="", max_length=2000, description=_KBS_DESCRIPTION)


class Passage(BaseModel):
    text: str
    score: float
    title: str
    source: str
    document_id: str
    page: int | None
    section: str
    chunk_id: str
    knowledge_base: str


class PassagesOut(BaseModel):
    results: list[Passage]


class SubgraphOut(BaseModel):
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


async def _knowledge_bases(
    rt: Runtime, principal: Principal, names: str, request: Request
) -> list[str]:
    """The named knowledge bases (each authorised when the tool runs), or every knowledge
    base of the tenant this key may read and the policy lets it search."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted:
        return list(dict.fromkeys(wanted))
    readable = [
        kb
        for kb in await rt.knowledge_bases.list(principal.tenant_id)
        if principal.may_read(kb.name)
    ]
    kept = await allowed_kbs(rt, principal, "search", readable, request=request)
    if not kept:
        raise InvalidRequest("this key may not search any knowledge base")
    return [kb.name for kb in kept]


def _passages(items: list[Any]) -> dict[str, Any]:
    return {
        "results": [
            {
                "text": p.text,
                "score": round(p.score, 6),
                "title": p.title,
                "source": p.source,
                "document_id": p.document_id,
                "page": p.page,
                "section": p.section,
                "chunk_id": p.chunk_id,
                "knowledge_base": p.knowledge_base,
            }
            for p in items
        ]
    }


@router.post(
    "/search",
    operation_id="searchKnowledgeBases",
    response_model=PassagesOut,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def search_tool(
    body: SearchToolRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Hybrid search (dense + Korean-morpheme BM25) over your knowledge bases; passages with
    document, page, section and chunk id."""
    kbs = await _knowledge_bases(rt, principal, body.knowledge_bases, request)
    tools = RuntimeResearchTools(rt, request)
    return _passages(await tools.search(principal, kbs, body.query, body.top_k))


@router.post(
    "/graph/neighbourhood",
    operation_id="graphNeighbourhood",
    response_model=SubgraphOut,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def neighbourhood_tool(
    body: NeighbourhoodToolRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The knowledge graph around an entity or section: connected sections, chunks and
    entities, with the relationships between them."""
    kbs = await _knowledge_bases(rt, principal, body.knowledge_bases, request)
    tools = RuntimeResearchTools(rt, request)
    return await tools.neighbourhood(principal, kbs, body.node, body.hops, body.limit)


@router.post(
    "/graph/follow-reference",
    operation_id="followReference",
    response_model=PassagesOut,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def follow_reference_tool(
    body: FollowReferenceToolRequest, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The passages of the articles or sections a passage cites (제N조, Section 4.2 …)."""
    kbs = await _knowledge_bases(rt, principal, body.knowledge_bases, request)
    tools = RuntimeResearchTools(rt, request)
    passages = await tools.follow_reference(principal, kbs, body.chunk_id, body.reference or None)
    return _passages(passages)


# -- the document Dify imports -----------------------------------------------------------
_OPERATIONS: tuple[tuple[str, str, type[BaseModel], type[BaseModel], str], ...] = (
    ("/v1/tools/search", "searchKnowledgeBases", SearchToolRequest, PassagesOut,
     "Search the LLMFlow knowledge bases (hybrid dense + keyword search). Returns passages "
     "with their document, page, section and chunk_id."),
    ("/v1/tools/graph/neighbourhood", "graphNeighbourhood", NeighbourhoodToolRequest,
     SubgraphOut,
     "Explore the knowledge graph around an entity or section name: the connected "
     "documents, sections, chunks and entities, with their relationships."),
    ("/v1/tools/graph/follow-reference", "followReference", FollowReferenceToolRequest,
     PassagesOut,
     "Open what a passage cites (an article such as 제5조제2항, or 'Section 4.2'): returns "
     "the passages of the referenced article or section."),
)  # fmt: skip


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with every ``$ref`` replaced by its definition and without
    titles: Dify resolves only a request body's own ``$ref``, not nested ones."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def tools_openapi(server_url: str) -> dict[str, Any]:
    """OpenAPI 3.1 of the tool operations only, for Dify's custom-tool import."""
    problem = {
        "description": "RFC 9457 problem details",
        "content": {"application/problem+json": {"schema": {"type": "object"}}},
    }
    paths: dict[str, Any] = {}
    for path, operation_id, request_model, response_model, description in _OPERATIONS:
        paths[path] = {
            "post": {
                "operationId": operation_id,
                "summary": description.split(". ")[0],
                "description": description,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _inline(request_model)}},
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": _inline(response_model)}},
                    },
                    **{str(s): problem for s in (401, 403, 404, 422, 503)},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLMFlow retrieval tools",
            "version": __version__,
            "description": "Search and knowledge-graph tools over LLMFlow knowledge bases. "
            "Authenticate with an LLMFlow API key: Authorization: Bearer llmf_…",
        },
        "servers": [{"url": server_url.rstrip("/")}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an LLMFlow API key (llmf_…) with the 'reader' role",
                }
            }
        },
        "security": [{"bearerAuth": []}],
    }


@router.get("/openapi.json", operation_id="toolsOpenapi", include_in_schema=False)
async def openapi_document(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """The OpenAPI document to paste (or point) Dify's custom-tool import at; public like any
    API description — the operations themselves need a key."""
    base = rt.settings.agents.tools_public_url or str(request.base_url)
    return tools_openapi(base)
