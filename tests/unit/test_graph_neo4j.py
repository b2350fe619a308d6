"""The Neo4j adapter's statements: constant, parameterised, tenant-filtered templates, sent
with the right parameters (a recording driver replays the neo4j driver's session API; the
store contract itself runs against a real Neo4j in tests/integration/test_graph_store.py when
LLMFLOW_TEST_NEO4J_URI is set)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmflow.graph import neo4j as cypher
from llmflow.graph.extract import ChunkInput, DocumentInput, extract_document
from llmflow.graph.neo4j import TEMPLATES, Neo4jGraphStore, tenant_label, uid


class _Result:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def data(self) -> list[dict[str, Any]]:
        return self.rows

    async def single(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    async def consume(self) -> None:
        return None


class _Recorder:
    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers

    def _name(self, query: str) -> str:
        return next((n for n, t in TEMPLATES.items() if t == query), query)

    async def run(self, query: str, params: dict[str, Any] | None = None) -> _Result:
        name = self._name(query)
        self.calls.append((name, dict(params or {})))
        return _Result(self.answers.get(name, []))

    async def execute_write(self, fn: Any) -> Any:
        return await fn(self)

    async def __aenter__(self) -> _Recorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Driver:
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder

    def session(self, database: str) -> _Recorder:
        assert database == "neo4j"
        return self.recorder

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_is_parameterised_and_tenant_filtered(name: str) -> None:
    query = TEMPLATES[name]
    assert "$tenant" in query
    # labels and relationship types are parameters too (Cypher 5.26 dynamic labels)
    assert not re.search(r"%s|\{\w+\}", query)  # no str.format fields
    for line in query.splitlines():
        found = re.search(r"(?:MATCH|MERGE) \((\w+):LlmflowNode", line)
        if found:  # every node a statement binds is checked against the tenant
            var = found.group(1)
            assert f"{var}.tenant_id = $tenant" in query or "tenant_id: $tenant" in line


def test_labels_and_types_are_dynamic_parameters() -> None:
    assert "$(row.label)" in cypher.WRITE_NODES and "$($tenant_label)" in cypher.WRITE_NODES
    assert "$(row.type)" in cypher.WRITE_EDGES
    assert tenant_label("dept-hr") == "Tenant_dept_hr"
    assert tenant_label("x`) DETACH DELETE n //") == "Tenant_x___DETACH_DELETE_n___"


async def test_reads_send_per_kb_uids_of_the_callers_tenant_only() -> None:
    rec = _Recorder({"neighbours_out": [
        {"near": "c:1", "far": "s:2", "type": "REFERS_TO", "document_id": "d",
         "weight": 1.0, "props": '{"text": "제4조"}'},
    ]})  # fmt: skip
    store = Neo4jGraphStore(_Driver(rec))
    [edge] = await store.neighbours("dept-hr", ["kb1", "kb2"], ["c:1"], ["REFERS_TO"], "out", 5)
    assert (edge.src, edge.dst, edge.props) == ("c:1", "s:2", {"text": "제4조"})
    name, params = rec.calls[-1]
    assert name == "neighbours_out"
    assert params["uids"] == [uid("dept-hr", "kb1", "c:1"), uid("dept-hr", "kb2", "c:1")]
    assert params["tenant"] == "dept-hr" and params["tenant_label"] == "Tenant_dept_hr"
    assert params["kbs"] == ["kb1", "kb2"] and params["per_node"] == 5
    await store.neighbours("dept-hr", ["kb1"], ["s:2"], ["HAS_CHUNK"], "in", 5)
    assert rec.calls[-1][0] == "neighbours_in"


async def test_replace_document_is_one_write_transaction_in_order_and_batched() -> None:
    chunks = [ChunkInput(f"c{i}", i, f"제{i + 1}조(조문) 제{i + 2}조를 따른다.", ["규정"], [])
              for i in range(700)]  # fmt: skip
    graph = extract_document(DocumentInput("d1", "규정", chunks))
    rec = _Recorder({
        "doc_shared": [{"uids": [uid("t1", "kb", "e:old")]}],
        "delete_orphans": [{"id": "e:old", "stub": False}, {"id": "s:x", "stub": True}],
    })  # fmt: skip
    removed = await Neo4jGraphStore(_Driver(rec)).replace_document("t1", "kb", graph)
    assert removed == ["e:old"]  # stubs are not entities: no vectors to delete for them
    names = [n for n, _ in rec.calls]
    assert names[:4] == ["doc_shared", "delete_shared_edges", "demote_cited", "delete_doc_nodes"]
    assert names[-1] == "delete_orphans"
    writes = [p for n, p in rec.calls if n in ("write_nodes", "write_edges")]
    assert all(len(p["rows"]) <= cypher.BATCH for p in writes)
    assert sum(len(p["rows"]) for p in writes) == len(graph.nodes) + len(graph.edges)
    assert all(p["tenant"] == "t1" and p["doc"] == "d1" for p in writes)
    node_rows = [r for n, p in rec.calls if n == "write_nodes" for r in p["rows"]]
    assert all(r["uid"] == uid("t1", "kb", r["id"]) for r in node_rows)
