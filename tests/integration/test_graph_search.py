"""Graph retrieval through the real pipeline: cross-references followed across regulations,
graph paths in the results, consistency on re-ingest and deletion, tenant isolation, and the
graph tools (neighbourhood, follow a reference, fetch a section) behind the API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmflow.auth.principal import Principal
from llmflow.errors import InvalidRequest, NotFound
from llmflow.ingest.pipeline import Upload

pytestmark = pytest.mark.integration

WORK_RULES = """# 한빛전자 취업규칙

제12조(연차휴가) ① 회사는 1년간 80퍼센트 이상 출근한 직원에게 15일의 유급휴가를 준다.
② 사용하지 아니한 연차휴가는 제25조에 따른 통상임금을 기준으로 보상한다.

제18조(출장) 직원의 국내 출장은 「여비규정」 제3조에 따른다.

제25조(통상임금) 통상임금은 기본급과 직무수당의 합으로 하며, 「보수규정」 제4조에 따라 산정한다.
"""
PAY_RULES = """# 보수규정

제4조(산정방법) 월 통상임금은 기본급과 직무수당의 월액을 209시간으로 나누어 산정한다.

제5조(지급일) 보수는 매월 25일에 지급한다.
"""
TRAVEL_RULES = """# 여비규정

제3조(일비) 국내 출장의 일비는 1일 3만원으로 하고 숙박비는 실비로 정산한다.
"""


def reader(tenant: str) -> Principal:
    return Principal(tenant_id=tenant, subject="test", roles=frozenset({"reader", "editor"}))


async def ingest(rt: Any, tenant: str, kb: str, docs: dict[str, str]) -> dict[str, Any]:
    await rt.knowledge_bases.create(tenant, kb, exist_ok=True)
    uploads = [Upload(name, text.encode(), "text/markdown") for name, text in docs.items()]
    jobs = await rt.ingest.submit(tenant, kb, uploads)
    await rt.jobs.drain()
    done = await rt.ingest.jobs(tenant, [j["job_id"] for j in jobs])
    assert all(j["status"] == "succeeded" for j in done), done
    return {j["source"]: j for j in done}


async def graph_counts(rt: Any, tenant: str, kb: str) -> dict[str, int]:
    kb_id = (await rt.search.resolve_kbs(reader(tenant), [kb]))[kb]
    store = await rt.graph_store()
    result: dict[str, int] = await store.counts(tenant, [kb_id])
    return result


async def orphan_entities(rt: Any, tenant: str) -> int:
    from sqlalchemy import text

    async with rt.engine.connect() as conn:
        row = await conn.execute(
            text(
                "SELECT count(*) FROM graph_nodes n WHERE n.tenant_id = :t "
                "AND n.document_id IS NULL AND NOT EXISTS (SELECT 1 FROM graph_edges e "
                "WHERE e.tenant_id = n.tenant_id AND e.kb_id = n.kb_id "
                "AND (e.src = n.id OR e.dst = n.id))"
            ),
            {"t": tenant},
        )
        return int(row.scalar_one())


async def test_graph_mode_follows_citations_and_explains_why(runtime: Any) -> None:
    jobs = await ingest(
        runtime, "graph-a", "rules",
        {"work.md": WORK_RULES, "pay.md": PAY_RULES, "travel.md": TRAVEL_RULES},
    )  # fmt: skip
    stats = jobs["work.md"]["stats"]
    assert stats["graph_references"] == 3 and stats["graph_nodes"] > 0
    query = "사용하지 않은 연차휴가 보상은 어떤 금액을 기준으로 하나요?"
    p = reader("graph-a")
    hybrid = await runtime.search.search(p, ["rules"], query, mode="hybrid", top_k=5)
    graph = await runtime.search.search(p, ["rules"], query, mode="graph", top_k=5)
    texts = [r.text for r in graph.results]
    # the article that defines the amount is reached through 제12조's citation of 제25조
    assert any(t.startswith("제25조(통상임금)") for t in texts)
    reached = next(r for r in graph.results if r.text.startswith("제25조"))
    paths = reached.metadata["graph"]["paths"]
    assert any("REFERS_TO" in path and "Section:제25조(통상임금)" in path for path in paths)
    assert "graph" in reached.signals and 0.0 < reached.score <= 1.0
    assert len(graph.results) >= len(hybrid.results)
    assert "graph_ms" in graph.timings_ms


async def test_citation_of_another_regulation_resolves_in_any_ingest_order(
    runtime: Any,
) -> None:
    # the citing rules first, the cited regulation later: no recomputation needed
    await ingest(runtime, "graph-b", "rules", {"work.md": WORK_RULES})
    p = reader("graph-b")
    hits = await runtime.search.search(p, ["rules"], "통상임금 산정", mode="lexical", top_k=5)
    art25 = next(r for r in hits.results if r.text.startswith("제25조"))
    assert await runtime.graph.follow_reference(p, ["rules"], art25.chunk_id, "보수규정") == []
    await ingest(runtime, "graph-b", "rules", {"pay.md": PAY_RULES})
    targets = await runtime.graph.follow_reference(p, ["rules"], art25.chunk_id, "보수규정")
    assert [t.text[:14] for t in targets] == ["제4조(산정방법) 월 통상"]
    assert targets[0].metadata["reference"]["text"] == "「보수규정」 제4조"
    assert targets[0].citation()["source"] == "pay.md"


async def test_reingest_and_delete_keep_the_graph_consistent(runtime: Any) -> None:
    jobs = await ingest(runtime, "graph-c", "rules", {"work.md": WORK_RULES, "pay.md": PAY_RULES})
    before = await graph_counts(runtime, "graph-c", "rules")
    changed = WORK_RULES.replace("제25조에 따른 통상임금", "기본급").replace(
        "「여비규정」 제3조에 따른다", "출장 규칙을 따른다"
    )
    again = await ingest(runtime, "graph-c", "rules", {"work.md": changed})
    assert again["work.md"]["stats"]["graph_references"] == 1  # only 「보수규정」 제4조 is left
    after = await graph_counts(runtime, "graph-c", "rules")
    assert after["REFERS_TO"] == 1 and after["Document"] == before["Document"] == 2
    assert after["Chunk"] == before["Chunk"]  # old version's chunks replaced, not added
    assert await orphan_entities(runtime, "graph-c") == 0
    await runtime.ingest.delete_document("graph-c", "rules", jobs["pay.md"]["document_id"])
    left = await graph_counts(runtime, "graph-c", "rules")
    assert left["Document"] == 1 and await orphan_entities(runtime, "graph-c") == 0
    await runtime.ingest.delete_kb("graph-c", "rules")
    from sqlalchemy import text

    async with runtime.engine.connect() as conn:
        n = await conn.execute(text("SELECT count(*) FROM graph_nodes WHERE tenant_id = 'graph-c'"))
        assert n.scalar_one() == 0


async def test_tools_neighbourhood_and_section_are_tenant_scoped(runtime: Any) -> None:
    await ingest(runtime, "graph-d", "rules", {"work.md": WORK_RULES, "pay.md": PAY_RULES})
    await ingest(runtime, "graph-e", "rules", {"travel.md": TRAVEL_RULES})
    p = reader("graph-d")
    sub = await runtime.graph.neighbourhood(p, ["rules"], "통상임금", hops=1)
    names = {n.name for n in sub.nodes}
    assert "통상임금" in names and "제25조(통상임금)" in names
    assert all(e.type in {"MENTIONS", "RELATED_TO", "ABOUT", "BELONGS_TO"} for e in sub.edges)
    with pytest.raises(NotFound):
        await runtime.graph.neighbourhood(p, ["rules"], "일비", hops=1)  # graph-e's entity
    with pytest.raises(NotFound):
        await runtime.graph.neighbourhood(reader("graph-e"), ["rules"], "통상임금", hops=1)
    with pytest.raises(InvalidRequest):
        await runtime.graph.neighbourhood(p, ["rules"], "통상임금", hops=9)
    hits = await runtime.search.search(p, ["rules"], "통상임금 209시간", mode="lexical")
    doc_id = next(r.document_id for r in hits.results if r.source == "pay.md")
    chunks = await runtime.graph.section(p, ["rules"], doc_id, "제5조")
    assert [c.text[:9] for c in chunks] == ["제5조(지급일) "]
    with pytest.raises(NotFound):
        await runtime.graph.section(reader("graph-e"), ["rules"], doc_id)
    with pytest.raises(NotFound):
        await runtime.graph.section(p, ["rules"], 'x" or tenant_id != "')


async def test_graph_mode_over_http(runtime: Any) -> None:
    from llmflow.api.app import create_app

    await ingest(runtime, "graph-f", "rules", {"work.md": WORK_RULES, "pay.md": PAY_RULES})
    key = await runtime.api_keys.create("graph-f", roles=["reader"], name="graph")
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post(
            "/v1/search",
            json={"query": "연차휴가 보상 기준", "knowledge_bases": ["rules"], "mode": "graph"},
            headers={"Authorization": f"Bearer {key.key}"},
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert any("graph" in x["metadata"] for x in results)
        bad = await client.post(
            "/v1/search",
            json={"query": "x", "knowledge_bases": ["rules"], "mode": "magic"},
            headers={"Authorization": f"Bearer {key.key}"},
        )
        assert bad.status_code == 422


async def test_fusion_is_configurable_per_knowledge_base(runtime: Any) -> None:
    docs = {"work.md": WORK_RULES, "pay.md": PAY_RULES}
    await runtime.knowledge_bases.create("graph-g", "off", graph_fusion="rrf", graph_weight=0.0)
    await ingest(runtime, "graph-g", "off", docs)
    await ingest(runtime, "graph-g", "on", docs)
    p, query = reader("graph-g"), "사용하지 않은 연차휴가 보상은 어떤 금액을 기준으로 하나요?"
    off = await runtime.search.search(p, ["off"], query, mode="graph", top_k=5)
    on = await runtime.search.search(p, ["on"], query, mode="graph", top_k=5)
    hybrid = await runtime.search.search(p, ["off"], query, mode="hybrid", top_k=5)
    # weight 0 in "off": graph-only hits rank after every hybrid hit
    assert [r.text for r in off.results][: len(hybrid.results)] == [r.text for r in hybrid.results]
    assert any(r.text.startswith("제25조") for r in on.results)
    with pytest.raises(InvalidRequest):
        await runtime.knowledge_bases.create("graph-g", "bad", graph_fusion="magic")
