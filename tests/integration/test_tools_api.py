"""The retrieval tools for Dify's custom-tool import, on the real embedded platform.

``GET /v1/tools/openapi.json`` is read the way Dify's importer reads it
(``api/core/tools/utils/parser.py``, ``ApiBasedToolSchemaParser.parse_openapi_to_tool_bundle``,
replayed below from its documented behaviour, not copied): ``servers[0].url`` prefixed to
each path, every method of every path an operation, the ``operationId`` the tool's name, a
JSON request body's (``$ref``-resolved) properties its parameters, typed from ``type``. Each
tool is then called as Dify's API tool calls it: a JSON body of those parameters and
``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llmflow.agents.config import AgentSettings
from llmflow.ingest.pipeline import Upload

pytestmark = pytest.mark.integration

A, B = "tools-a", "tools-b"
PUBLIC = "https://llmflow.corp.example/api"
REGS_A = (
    "# 여비규정\n\n## 제2조(숙박비)\n\n국내 출장 숙박비는 제4조의 한도 안에서 실비로 지급한다.\n\n"
    "## 제4조(한도)\n\n숙박비 한도는 1박 10만원으로 한다. 표식 ALPHA.\n"
)
REGS_B = "# 여비규정\n\n## 제2조(숙박비)\n\n숙박비는 1박 7만원을 정액 지급한다. 표식 BRAVO.\n"
_METHODS = ("get", "post", "put", "delete", "patch", "head", "options", "trace")
_DIFY_TYPES = {"integer": "number", "number": "number", "boolean": "boolean", "string": "string"}


def dify_tool_bundles(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """What Dify's importer makes of an OpenAPI document: one tool per operation."""
    if not doc.get("servers"):
        raise ValueError("No server found in the openapi yaml.")
    server = doc["servers"][0]["url"]
    tools = []
    for path, item in doc["paths"].items():
        for method in (m for m in _METHODS if m in item):
            op = item[method]
            params: dict[str, dict[str, Any]] = {}
            for p in op.get("parameters", []):
                kind = _DIFY_TYPES.get(p.get("schema", {}).get("type"))
                params[p["name"]] = {"type": kind, "required": p.get("required", False),
                                     "in": p.get("in")}  # fmt: skip
            for content in op.get("requestBody", {}).get("content", {}).values():
                schema = content.get("schema", {})
                if "$ref" in schema:  # only this level of $ref is resolved
                    node: Any = doc
                    for part in schema["$ref"].split("/")[1:]:
                        node = node[part]
                    schema = node
                for name, prop in schema.get("properties", {}).items():
                    params[name] = {"type": _DIFY_TYPES.get(prop.get("type")),
                                    "required": name in schema.get("required", []),
                                    "in": "body", "default": prop.get("default")}  # fmt: skip
            tools.append(
                {
                    "url": server + path,
                    "method": method,
                    "operation_id": op.get("operationId"),
                    "summary": op.get("description") or op.get("summary"),
                    "params": params,
                }
            )
    return tools


async def _ingest(rt: Any, tenant: str, kb: str, name: str, text: str) -> None:
    await rt.knowledge_bases.create(tenant, kb, exist_ok=True)
    jobs = await rt.ingest.submit(tenant, kb, [Upload(name, text.encode())])
    await rt.jobs.drain()
    (job,) = await rt.ingest.jobs(tenant, [jobs[0]["job_id"]])
    assert job["status"] == "succeeded", job


@pytest.fixture(scope="module")
async def api(runtime: Any) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    saved = runtime.settings.agents
    runtime.settings.agents = AgentSettings(tools_public_url=PUBLIC)
    await _ingest(runtime, A, "travel", "travel.md", REGS_A)
    await _ingest(runtime, A, "travel-old", "travel-old.md", REGS_A.replace("10만원", "8만원"))
    await _ingest(runtime, B, "travel", "travel.md", REGS_B)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as c:
            yield c
    finally:
        runtime.settings.agents = saved


async def _headers(runtime: Any, tenant: str, kbs: list[str] | None = None) -> dict[str, str]:
    issued = await runtime.api_keys.create(tenant, kbs, name="dify-tools", roles=["reader"])
    return {"Authorization": f"Bearer {issued.key}"}


async def _invoke(
    api: httpx.AsyncClient, tool: dict[str, Any], args: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """Call a tool as Dify's API tool does: POST a JSON body of its parameters."""
    assert tool["url"].startswith(PUBLIC)
    body = {k: v for k, v in args.items() if tool["params"].get(k, {}).get("in") == "body"}
    return await api.post(tool["url"][len(PUBLIC) :], json=body, headers=headers)


async def test_openapi_document_imports_into_dify(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/tools/openapi.json")  # public, like any API description
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"][0]["url"] == PUBLIC
    assert set(doc["paths"]) == {
        "/v1/tools/search",
        "/v1/tools/graph/neighbourhood",
        "/v1/tools/graph/follow-reference",
    }  # fmt: skip  (only the tool operations, nothing else of the API)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }  # fmt: skip
    assert doc["security"] == [{"bearerAuth": []}]
    tools = {t["operation_id"]: t for t in dify_tool_bundles(doc)}
    assert set(tools) == {"searchKnowledgeBases", "graphNeighbourhood", "followReference"}
    for tool in tools.values():
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", tool["operation_id"])
        assert tool["summary"] and tool["method"] == "post"
        assert all(p["type"] is not None for p in tool["params"].values()), tool["params"]
    search = tools["searchKnowledgeBases"]["params"]
    assert search["query"] == {"type": "string", "required": True, "in": "body", "default": None}
    assert search["top_k"]["type"] == "number" and search["top_k"]["default"] == 5
    assert search["knowledge_bases"]["type"] == "string"  # a list Dify can fill: comma-separated
    # the same operations exist on the API with the same ids (FastAPI's own document)
    full = (await api.get("/openapi.json")).json()
    ids = {op["operationId"] for item in full["paths"].values() for op in item.values()}
    assert set(tools) <= ids


async def test_search_tool_as_dify_calls_it(api: httpx.AsyncClient, runtime: Any) -> None:
    doc = (await api.get("/v1/tools/openapi.json")).json()
    tool = next(t for t in dify_tool_bundles(doc) if t["operation_id"] == "searchKnowledgeBases")
    h = await _headers(runtime, A)
    r = await _invoke(api, tool, {"query": "숙박비 한도", "knowledge_bases": "travel"}, h)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results and {x["knowledge_base"] for x in results} == {"travel"}
    assert all(x["document_id"] and x["chunk_id"] for x in results)
    assert "ALPHA" in " ".join(x["text"] for x in results)
    # no knowledge base named: every one this key may search (and only those)
    r = await _invoke(api, tool, {"query": "숙박비 한도", "top_k": 10}, h)
    assert {x["knowledge_base"] for x in r.json()["results"]} == {"travel", "travel-old"}
    limited = await _headers(runtime, A, ["travel-old"])
    r = await _invoke(api, tool, {"query": "숙박비 한도"}, limited)
    assert {x["knowledge_base"] for x in r.json()["results"]} == {"travel-old"}
    r = await _invoke(api, tool, {"query": "숙박비"}, {"Authorization": "Bearer llmf_nope"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


async def test_tools_never_return_another_tenants_data(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    doc = (await api.get("/v1/tools/openapi.json")).json()
    tools = {t["operation_id"]: t for t in dify_tool_bundles(doc)}
    h = await _headers(runtime, B)
    r = await _invoke(api, tools["searchKnowledgeBases"], {"query": "숙박비 한도 표식"}, h)
    assert r.status_code == 200
    texts = " ".join(x["text"] for x in r.json()["results"])
    assert "BRAVO" in texts and "ALPHA" not in texts
    # tools-a's knowledge base name means nothing in tools-b
    r = await _invoke(
        api, tools["searchKnowledgeBases"], {"query": "숙박비", "knowledge_bases": "travel-old"}, h
    )
    assert r.status_code == 404 and "ALPHA" not in r.text
    if not runtime.settings.graph.enabled:
        pytest.skip("the knowledge graph is disabled in these settings")
    r = await _invoke(
        api, tools["graphNeighbourhood"], {"node": "숙박비", "knowledge_bases": "travel"}, h
    )
    assert r.status_code in (200, 404), r.text  # 404: no such node in tools-b's graph
    assert "ALPHA" not in r.text and "travel-old" not in r.text
    a_docs = {d["id"] for d in await runtime.ingest.documents(A, "travel")}
    if r.status_code == 200:
        seen = {n["document_id"] for n in r.json()["nodes"]} - {None}
        assert seen and not seen & a_docs


async def test_graph_tools_follow_a_reference(api: httpx.AsyncClient, runtime: Any) -> None:
    if not runtime.settings.graph.enabled:
        pytest.skip("the knowledge graph is disabled in these settings")
    doc = (await api.get("/v1/tools/openapi.json")).json()
    tools = {t["operation_id"]: t for t in dify_tool_bundles(doc)}
    h = await _headers(runtime, A, ["travel"])
    r = await _invoke(api, tools["searchKnowledgeBases"], {"query": "제4조의 한도 실비"}, h)
    citing = next(x for x in r.json()["results"] if "제4조의" in x["text"])
    r = await _invoke(
        api, tools["followReference"], {"chunk_id": citing["chunk_id"], "reference": "제4조"}, h
    )
    assert r.status_code == 200, r.text
    assert any("10만원" in x["text"] for x in r.json()["results"])
    node = f"c:{citing['chunk_id']}"  # the citing chunk's node: its citation is an edge
    r = await _invoke(api, tools["graphNeighbourhood"], {"node": node, "hops": 1}, h)
    assert r.status_code == 200, r.text
    graph = r.json()
    assert node in {n["id"] for n in graph["nodes"]}
    assert "REFERS_TO" in {e["type"] for e in graph["edges"]}
