"""The cluster graph store: Neo4j 5.26 (Community) through the official async driver.

Community edition allows one database, so tenancy lives in the data (ARCHITECTURE §5):

* every node has the label ``LlmflowNode``, its schema label (``Document`` …) and a tenant
  label (``Tenant_<tenant>``, a second guard), and the properties ``tenant_id``, ``kb_id``
  and ``uid`` = ``tenant/kb/id`` (unique: Community has no node keys);
* every relationship carries ``tenant_id``, ``kb_id`` and the ``document_id`` that produced it;
* every statement is a constant Cypher template with parameters — labels and relationship
  types too, through Cypher 5.26's dynamic ``$(…)`` syntax — and filters on ``tenant_id``.

A citation of a section that is not ingested yet points at a *stub* node (``stub = true``);
the document that defines the section fills it in, and deleting that document turns it back
into a stub while other documents still cite it. Stubs are never returned by reads.
Writes are batched ``UNWIND`` statements, one transaction per document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from llmflow.graph.base import (
    NODE_LABELS,
    Direction,
    DocumentGraph,
    EdgeType,
    GraphEdge,
    GraphNode,
    NodeLabel,
)
from llmflow.graph.config import GraphSettings

BATCH = 1000

SCHEMA = (
    "CREATE CONSTRAINT llmflow_node_uid IF NOT EXISTS FOR (n:LlmflowNode) REQUIRE n.uid IS UNIQUE",
    "CREATE INDEX llmflow_node_key IF NOT EXISTS "
    "FOR (n:LlmflowNode) ON (n.tenant_id, n.kb_id, n.key)",
    "CREATE INDEX llmflow_node_doc IF NOT EXISTS "
    "FOR (n:LlmflowNode) ON (n.tenant_id, n.kb_id, n.document_id)",
)

WRITE_NODES = """
UNWIND $rows AS row
MERGE (n:LlmflowNode {uid: row.uid})
ON CREATE SET n.tenant_id = $tenant, n.kb_id = $kb, n.id = row.id
WITH n, row WHERE n.tenant_id = $tenant
SET n:$(row.label):$($tenant_label),
    n.name = CASE WHEN row.document_id IS NULL AND NOT coalesce(n.stub, false)
                  AND n.name IS NOT NULL THEN n.name ELSE row.name END,
    n.key = row.key,
    n.document_id = coalesce(row.document_id, n.document_id),
    n.props = row.props,
    n.stub = false
"""

WRITE_EDGES = """
UNWIND $rows AS row
MATCH (a:LlmflowNode {uid: row.src_uid}) WHERE a.tenant_id = $tenant
MERGE (b:LlmflowNode {uid: row.dst_uid})
ON CREATE SET b.tenant_id = $tenant, b.kb_id = $kb, b.id = row.dst, b.name = row.dst,
              b.key = '', b.stub = true
WITH a, b, row WHERE b.tenant_id = $tenant
SET b:$($tenant_label)
MERGE (a)-[r:$(row.type) {document_id: $doc, tenant_id: $tenant, kb_id: $kb}]->(b)
SET r.weight = row.weight, r.props = row.props
"""

# what a document's deletion may leave without relationships: the shared entities/topics it
# mentions and the stub sections it cites
DOC_SHARED = """
MATCH (n:LlmflowNode:$($tenant_label) {tenant_id: $tenant, kb_id: $kb, document_id: $doc})
      -[r]->(s:LlmflowNode)
WHERE r.document_id = $doc AND (s.document_id IS NULL OR s.stub)
RETURN collect(DISTINCT s.uid) AS uids
"""

DELETE_SHARED_EDGES = """
UNWIND $uids AS uid
MATCH (s:LlmflowNode {uid: uid})-[r]-()
WHERE s.tenant_id = $tenant AND r.tenant_id = $tenant AND r.document_id = $doc
DELETE r
"""

# sections other documents still cite become stubs instead of disappearing
DEMOTE_CITED = """
MATCH (n:LlmflowNode:$($tenant_label) {tenant_id: $tenant, kb_id: $kb, document_id: $doc})
WHERE EXISTS { MATCH (n)<-[c:REFERS_TO]-() WHERE c.document_id <> $doc }
OPTIONAL MATCH (n)-[o]-() WHERE o.document_id = $doc
DELETE o
WITH DISTINCT n
SET n.stub = true, n.document_id = null, n.props = '{}'
"""

DELETE_DOC_NODES = """
MATCH (n:LlmflowNode:$($tenant_label) {tenant_id: $tenant, kb_id: $kb, document_id: $doc})
DETACH DELETE n
"""

DELETE_ORPHANS = """
UNWIND $uids AS uid
MATCH (s:LlmflowNode {uid: uid})
WHERE s.tenant_id = $tenant AND NOT EXISTS { (s)--() }
WITH s, s.id AS id, coalesce(s.stub, false) AS stub
DELETE s
RETURN id, stub
"""

DELETE_KB = """
MATCH (n:LlmflowNode:$($tenant_label))
WHERE n.tenant_id = $tenant AND n.kb_id = $kb
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS
"""

NEIGHBOURS_OUT = """
UNWIND $uids AS uid
MATCH (n:LlmflowNode:$($tenant_label) {uid: uid})-[r]->(m:LlmflowNode)
WHERE n.tenant_id = $tenant AND r.tenant_id = $tenant AND r.kb_id IN $kbs
  AND type(r) IN $types AND NOT coalesce(m.stub, false)
WITH n, m, type(r) AS t, min(r.document_id) AS doc, sum(r.weight) AS w,
     head(collect(r.props)) AS props
ORDER BY w DESC, m.id
WITH n, collect({near: n.id, far: m.id, type: t, doc: doc, w: w, props: props})[..$per_node]
     AS rows
UNWIND rows AS row
RETURN row.near AS near, row.far AS far, row.type AS type, row.doc AS document_id,
       row.w AS weight, row.props AS props
"""

NEIGHBOURS_IN = NEIGHBOURS_OUT.replace("-[r]->(m:LlmflowNode)", "<-[r]-(m:LlmflowNode)")

DEGREES_IN = """
UNWIND $uids AS uid
MATCH (n:LlmflowNode:$($tenant_label) {uid: uid})<-[r]-(m:LlmflowNode)
WHERE n.tenant_id = $tenant AND r.tenant_id = $tenant AND type(r) = $type
RETURN n.id AS id, count(DISTINCT m) AS degree
"""

DEGREES_OUT = DEGREES_IN.replace("<-[r]-(m:LlmflowNode)", "-[r]->(m:LlmflowNode)")

NODES = """
UNWIND $uids AS uid
MATCH (n:LlmflowNode:$($tenant_label) {uid: uid})
WHERE n.tenant_id = $tenant AND NOT coalesce(n.stub, false)
RETURN n.id AS id, [l IN labels(n) WHERE l IN $node_labels][0] AS label, n.name AS name,
       n.key AS key, n.document_id AS document_id, n.props AS props
"""

FIND = """
MATCH (n:LlmflowNode:$($tenant_label))
WHERE n.tenant_id = $tenant AND n.kb_id IN $kbs AND n.key IN $keys
  AND NOT coalesce(n.stub, false) AND any(l IN labels(n) WHERE l IN $labels)
RETURN n.id AS id, [l IN labels(n) WHERE l IN $node_labels][0] AS label, n.name AS name,
       n.key AS key, n.document_id AS document_id, n.props AS props
LIMIT $limit
"""

COUNT_NODES = """
MATCH (n:LlmflowNode:$($tenant_label))
WHERE n.tenant_id = $tenant AND n.kb_id IN $kbs AND NOT coalesce(n.stub, false)
UNWIND labels(n) AS label
WITH label WHERE label IN $node_labels
RETURN label AS name, count(*) AS count
"""

COUNT_EDGES = """
MATCH (n:LlmflowNode:$($tenant_label))-[r]->()
WHERE n.tenant_id = $tenant AND r.tenant_id = $tenant AND r.kb_id IN $kbs
RETURN type(r) AS name, count(*) AS count
"""

TEMPLATES: dict[str, str] = {
    "write_nodes": WRITE_NODES,
    "write_edges": WRITE_EDGES,
    "doc_shared": DOC_SHARED,
    "delete_shared_edges": DELETE_SHARED_EDGES,
    "demote_cited": DEMOTE_CITED,
    "delete_doc_nodes": DELETE_DOC_NODES,
    "delete_orphans": DELETE_ORPHANS,
    "delete_kb": DELETE_KB,
    "neighbours_out": NEIGHBOURS_OUT,
    "neighbours_in": NEIGHBOURS_IN,
    "degrees_in": DEGREES_IN,
    "degrees_out": DEGREES_OUT,
    "nodes": NODES,
    "find": FIND,
    "count_nodes": COUNT_NODES,
    "count_edges": COUNT_EDGES,
}
"""Every statement this adapter sends (unit-tested: parameterised, tenant-filtered)."""

_TENANT_LABEL = re.compile(r"[^A-Za-z0-9_]")


def tenant_label(tenant_id: str) -> str:
    """The per-tenant node label (letters, digits and underscores only)."""
    return "Tenant_" + _TENANT_LABEL.sub("_", tenant_id)


def uid(tenant_id: str, kb_id: str, node_id: str) -> str:
    return f"{tenant_id}/{kb_id}/{node_id}"


def _props(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


class Neo4jGraphStore:
    """:class:`~llmflow.graph.base.GraphStore` over Neo4j (cluster mode)."""

    def __init__(self, driver: Any, database: str = "neo4j") -> None:
        self.driver = driver
        self.database = database

    @classmethod
    def from_settings(cls, settings: GraphSettings) -> Neo4jGraphStore:
        from neo4j import AsyncGraphDatabase

        password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else ""
        driver = AsyncGraphDatabase.driver(
            settings.neo4j_uri or "", auth=(settings.neo4j_user, password)
        )
        return cls(driver, settings.neo4j_database)

    async def _run(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """One auto-commit statement; the records as dicts."""
        async with self.driver.session(database=self.database) as session:
            result = await session.run(TEMPLATES[name], params)
            return [dict(r) for r in await result.data()]

    async def ensure_schema(self) -> None:
        async with self.driver.session(database=self.database) as session:
            for statement in SCHEMA:
                await (await session.run(statement)).consume()

    async def _remove(self, tx: Any, base: dict[str, Any]) -> list[str]:
        shared = await (await tx.run(TEMPLATES["doc_shared"], base)).single()
        uids: list[str] = list(shared["uids"]) if shared else []
        await (await tx.run(TEMPLATES["delete_shared_edges"], {**base, "uids": uids})).consume()
        await (await tx.run(TEMPLATES["demote_cited"], base)).consume()
        await (await tx.run(TEMPLATES["delete_doc_nodes"], base)).consume()
        return uids

    @staticmethod
    async def _orphans(tx: Any, base: dict[str, Any], uids: list[str]) -> list[str]:
        if not uids:
            return []
        result = await tx.run(TEMPLATES["delete_orphans"], {**base, "uids": uids})
        return [r["id"] for r in await result.data() if not r["stub"]]

    async def replace_document(self, tenant_id: str, kb_id: str, graph: DocumentGraph) -> list[str]:
        base = {
            "tenant": tenant_id,
            "kb": kb_id,
            "doc": graph.document_id,
            "tenant_label": tenant_label(tenant_id),
        }
        nodes: list[dict[str, Any]] = [
            {
                "uid": uid(tenant_id, kb_id, n.id),
                "id": n.id,
                "label": n.label,
                "name": n.name[:2000],
                "key": str(n.props.get("key", "")),
                "document_id": n.document_id,
                "props": json.dumps(n.props, ensure_ascii=False),
            }
            for n in graph.nodes
        ]
        edges: list[dict[str, Any]] = [
            {
                "src_uid": uid(tenant_id, kb_id, e.src),
                "dst_uid": uid(tenant_id, kb_id, e.dst),
                "dst": e.dst,
                "type": e.type,
                "weight": float(e.weight),
                "props": json.dumps(e.props, ensure_ascii=False),
            }
            for e in graph.edges
        ]

        async def work(tx: Any) -> list[str]:
            shared = await self._remove(tx, base)
            for name, items in (("write_nodes", nodes), ("write_edges", edges)):
                for i in range(0, len(items), BATCH):
                    params = {**base, "rows": items[i : i + BATCH]}
                    await (await tx.run(TEMPLATES[name], params)).consume()
            return await self._orphans(tx, base, shared)

        async with self.driver.session(database=self.database) as session:
            removed: list[str] = await session.execute_write(work)
            return removed

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> list[str]:
        base = {
            "tenant": tenant_id,
            "kb": kb_id,
            "doc": document_id,
            "tenant_label": tenant_label(tenant_id),
        }

        async def work(tx: Any) -> list[str]:
            return await self._orphans(tx, base, await self._remove(tx, base))

        async with self.driver.session(database=self.database) as session:
            removed: list[str] = await session.execute_write(work)
            return removed

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        await self._run(
            "delete_kb", tenant=tenant_id, kb=kb_id, tenant_label=tenant_label(tenant_id)
        )

    def _uids(self, tenant_id: str, kb_ids: Sequence[str], node_ids: Sequence[str]) -> list[str]:
        return [uid(tenant_id, kb, n) for kb in kb_ids for n in dict.fromkeys(node_ids)]

    async def neighbours(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        node_ids: Sequence[str],
        edge_types: Sequence[EdgeType],
        direction: Direction,
        per_node: int,
    ) -> list[GraphEdge]:
        if not node_ids or not kb_ids:
            return []
        rows = await self._run(
            "neighbours_out" if direction == "out" else "neighbours_in",
            tenant=tenant_id,
            tenant_label=tenant_label(tenant_id),
            kbs=list(kb_ids),
            uids=self._uids(tenant_id, kb_ids, node_ids),
            types=list(edge_types),
            per_node=per_node,
        )
        out: list[GraphEdge] = []
        for r in rows:
            src, dst = (r["near"], r["far"]) if direction == "out" else (r["far"], r["near"])
            out.append(
                GraphEdge(
                    src, dst, r["type"], r["document_id"], float(r["weight"]), _props(r["props"])
                )
            )
        return out

    async def degrees(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        node_ids: Sequence[str],
        edge_type: EdgeType,
        direction: Direction,
    ) -> dict[str, int]:
        if not node_ids or not kb_ids:
            return {}
        rows = await self._run(
            "degrees_in" if direction == "in" else "degrees_out",
            tenant=tenant_id,
            tenant_label=tenant_label(tenant_id),
            uids=self._uids(tenant_id, kb_ids, node_ids),
            type=edge_type,
        )
        out: dict[str, int] = {}
        for r in rows:
            out[r["id"]] = out.get(r["id"], 0) + int(r["degree"])
        return out

    @staticmethod
    def _node(r: dict[str, Any]) -> GraphNode:
        props = _props(r["props"])
        props.setdefault("key", r["key"] or "")
        return GraphNode(r["id"], r["label"] or "Entity", r["name"], r["document_id"], props)

    async def nodes(
        self, tenant_id: str, kb_ids: Sequence[str], node_ids: Sequence[str]
    ) -> list[GraphNode]:
        if not node_ids or not kb_ids:
            return []
        rows = await self._run(
            "nodes",
            tenant=tenant_id,
            tenant_label=tenant_label(tenant_id),
            uids=self._uids(tenant_id, kb_ids, node_ids),
            node_labels=list(NODE_LABELS),
        )
        seen: dict[str, GraphNode] = {}
        for r in rows:
            seen.setdefault(r["id"], self._node(r))
        return list(seen.values())

    async def find_nodes(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        labels: Sequence[NodeLabel],
        keys: Sequence[str],
        limit: int,
    ) -> list[GraphNode]:
        if not keys or not kb_ids:
            return []
        rows = await self._run(
            "find",
            tenant=tenant_id,
            tenant_label=tenant_label(tenant_id),
            kbs=list(kb_ids),
            keys=list(dict.fromkeys(keys)),
            labels=list(labels),
            node_labels=list(NODE_LABELS),
            limit=limit,
        )
        return [self._node(r) for r in rows]

    async def counts(self, tenant_id: str, kb_ids: Sequence[str]) -> dict[str, int]:
        params = {
            "tenant": tenant_id,
            "tenant_label": tenant_label(tenant_id),
            "kbs": list(kb_ids),
        }
        out = {
            r["name"]: int(r["count"])
            for r in await self._run("count_nodes", **params, node_labels=list(NODE_LABELS))
        }
        out.update({r["name"]: int(r["count"]) for r in await self._run("count_edges", **params)})
        return out

    async def close(self) -> None:
        await self.driver.close()
