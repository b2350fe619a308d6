"""The graph store contract, run against every backend: embedded PostgreSQL always, and a real
Neo4j when ``LLMFLOW_TEST_NEO4J_URI`` (+ ``LLMFLOW_TEST_NEO4J_PASSWORD``) is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmflow.graph.base import DocumentGraph, GraphEdge, GraphNode, GraphStore
from llmflow.graph.extract import ChunkInput, DocumentInput, extract_document, node_id

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "neo4j"])
async def store(request: pytest.FixtureRequest, runtime: Any) -> AsyncIterator[GraphStore]:
    if request.param == "postgres":
        from llmflow.graph.postgres import PostgresGraphStore

        pg = PostgresGraphStore(runtime.engine)
        await pg.ensure_schema()
        yield pg
        return
    uri = os.environ.get("LLMFLOW_TEST_NEO4J_URI")
    if not uri:
        pytest.skip("LLMFLOW_TEST_NEO4J_URI is not set (no Neo4j server on this machine)")
    from neo4j import AsyncGraphDatabase

    from llmflow.graph.neo4j import Neo4jGraphStore

    driver = AsyncGraphDatabase.driver(
        uri, auth=("neo4j", os.environ.get("LLMFLOW_TEST_NEO4J_PASSWORD", "neo4j"))
    )
    neo = Neo4jGraphStore(driver)
    await neo.ensure_schema()
    yield neo
    await neo.close()


def tenant() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def rules(doc: str, title: str, *articles: tuple[str, str]) -> DocumentGraph:
    return extract_document(
        DocumentInput(
            doc,
            title,
            [ChunkInput(f"{doc}-{i}", i, text, [title], phrases) for i, (text, phrases) in
             enumerate([(a, b.split()) for a, b in articles])],
        )
    )  # fmt: skip


WORK = ("제12조(연차휴가) 미사용 휴가는 「보수규정」 제4조에 따라 보상한다.", "연차휴가 보수규정")
PAY = ("제4조(산정방법) 통상임금은 기본급을 209시간으로 나누어 산정한다.", "통상임금 기본급")


async def test_references_resolve_in_any_order_and_dangle_after_deletion(
    store: GraphStore,
) -> None:
    t, kb = tenant(), "kb1"
    art4 = node_id("s", "보수규정#제4조")
    await store.replace_document(t, kb, rules("w", "취업규칙", WORK))
    # the cited regulation is not there yet: the reference is kept but leads nowhere
    assert await store.neighbours(t, [kb], ["c:w-0"], ["REFERS_TO"], "out", 10) == []
    await store.replace_document(t, kb, rules("p", "보수규정", PAY))
    [edge] = await store.neighbours(t, [kb], ["c:w-0"], ["REFERS_TO"], "out", 10)
    assert edge.dst == art4 and edge.props["text"] == "「보수규정」 제4조"
    [to_chunk] = await store.neighbours(t, [kb], [art4], ["HAS_CHUNK"], "out", 10)
    assert to_chunk.dst == "c:p-0"
    # deleting the cited regulation leaves no node of it, and the citation leads nowhere again
    await store.delete_document(t, kb, "p")
    assert await store.neighbours(t, [kb], ["c:w-0"], ["REFERS_TO"], "out", 10) == []
    assert await store.nodes(t, [kb], ["c:p-0", "d:p"]) == []
    # ... until it is ingested again
    await store.replace_document(t, kb, rules("p", "보수규정", PAY))
    assert len(await store.neighbours(t, [kb], ["c:w-0"], ["REFERS_TO"], "out", 10)) == 1


async def test_replacing_a_document_leaves_no_orphans_or_stale_edges(store: GraphStore) -> None:
    t, kb = tenant(), "kb1"
    await store.replace_document(t, kb, rules("w", "취업규칙", WORK))
    await store.replace_document(t, kb, rules("p", "보수규정", PAY))
    before = await store.counts(t, [kb])
    changed = ("제12조(연차휴가) 휴가는 15일로 한다.", "연차휴가 출산휴가")
    removed = await store.replace_document(t, kb, rules("w", "취업규칙", changed))
    # 보수규정 is still mentioned by the other document; 출산휴가 is new; nothing dangles
    assert node_id("e", "보수규정") not in removed
    assert await store.neighbours(t, [kb], ["c:w-0"], ["REFERS_TO"], "out", 10) == []
    mentions = await store.neighbours(t, [kb], ["c:w-0"], ["MENTIONS"], "out", 50)
    assert node_id("e", "출산휴가") in {e.dst for e in mentions}
    removed = await store.delete_document(t, kb, "w")
    assert node_id("e", "연차휴가") in removed and node_id("e", "출산휴가") in removed
    after = await store.counts(t, [kb])
    assert after.get("Document") == 1 and before.get("Document") == 2
    for e in ("연차휴가", "출산휴가"):
        assert await store.nodes(t, [kb], [node_id("e", e)]) == []
    # entities of the remaining document survive
    assert await store.nodes(t, [kb], [node_id("e", "통상임금")])


async def test_tenants_and_knowledge_bases_never_see_each_other(store: GraphStore) -> None:
    a, b = tenant(), tenant()
    await store.replace_document(a, "kb1", rules("w", "취업규칙", WORK))
    await store.replace_document(b, "kb1", rules("w", "취업규칙", WORK))
    await store.delete_document(b, "kb1", "w")
    # same ids, other tenant: a's graph is untouched by b's deletion, b sees nothing
    assert await store.nodes(a, ["kb1"], ["c:w-0"])
    assert await store.nodes(b, ["kb1"], ["c:w-0"]) == []
    assert await store.neighbours(a, ["kb2"], ["c:w-0"], ["MENTIONS"], "out", 10) == []
    keys = ["연차휴가"]
    assert await store.find_nodes(a, ["kb1"], ["Entity"], keys, 5)
    assert await store.find_nodes(b, ["kb1"], ["Entity"], keys, 5) == []
    await store.delete_kb(a, "kb1")
    assert await store.counts(a, ["kb1"]) == {}


async def test_fan_out_is_capped_per_node_by_weight_and_degrees_count(store: GraphStore) -> None:
    t, kb = tenant(), "kb1"
    nodes = [GraphNode("d:x", "Document", "X", "x", {"key": "x"})]
    edges = []
    for i in range(6):
        nodes.append(GraphNode(f"c:x{i}", "Chunk", f"c{i}", "x", {}))
        edges.append(GraphEdge("d:x", f"c:x{i}", "HAS_CHUNK", "x", 1.0 / (1 + i)))
    nodes.append(GraphNode("e:hub", "Entity", "hub", None, {"key": "hub"}))
    edges += [GraphEdge(f"c:x{i}", "e:hub", "MENTIONS", "x") for i in range(6)]
    await store.replace_document(t, kb, DocumentGraph("x", nodes, edges))
    first = await store.neighbours(t, [kb], ["d:x"], ["HAS_CHUNK"], "out", 2)
    assert [e.dst for e in first] == ["c:x0", "c:x1"]
    assert await store.degrees(t, [kb], ["e:hub"], "MENTIONS", "in") == {"e:hub": 6}
    into = await store.neighbours(t, [kb], ["e:hub"], ["MENTIONS"], "in", 3)
    assert len(into) == 3 and all(e.dst == "e:hub" for e in into)
