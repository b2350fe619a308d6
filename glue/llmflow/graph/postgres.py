"""The embedded graph store: two PostgreSQL tables in the platform's own database.

Why PostgreSQL and not Kùzu: embedded mode already runs a real PostgreSQL (from the wheel)
for metadata and jobs, so the graph adds no engine, no second file format and no second
backup; a document's graph is replaced in the same kind of transaction as its metadata, so a
failed ingest leaves no half-written subgraph; and Kùzu's upstream was reported archived in
2025 (not verifiable offline), a risk for a shipped product. Traversals are bounded hop-by-hop
queries (one indexed query per hop, fan-out capped per node), which is all GraphRAG retrieval
needs; unbounded path queries are not offered.

Every statement is a constant SQL text with bound parameters; every statement filters on
``tenant_id`` (and the knowledge bases). Graph writes of one knowledge base are serialised
with a transaction-scoped advisory lock, so two documents that share an entity never race
between "this entity lost its last edge" and "this entity gained an edge".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llmflow.graph.base import (
    Direction,
    DocumentGraph,
    EdgeType,
    GraphEdge,
    GraphNode,
    NodeLabel,
)

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS graph_nodes (
        tenant_id varchar(64) NOT NULL,
        kb_id varchar(32) NOT NULL,
        id varchar(40) NOT NULL,
        label varchar(16) NOT NULL,
        name text NOT NULL,
        key text NOT NULL DEFAULT '',
        document_id varchar(32),
        props jsonb NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (tenant_id, kb_id, id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS ix_graph_nodes_key ON graph_nodes (tenant_id, kb_id, key)",
    "CREATE INDEX IF NOT EXISTS ix_graph_nodes_doc ON graph_nodes (tenant_id, kb_id, document_id)",
    """
    CREATE TABLE IF NOT EXISTS graph_edges (
        tenant_id varchar(64) NOT NULL,
        kb_id varchar(32) NOT NULL,
        src varchar(40) NOT NULL,
        type varchar(16) NOT NULL,
        dst varchar(40) NOT NULL,
        document_id varchar(32) NOT NULL,
        weight real NOT NULL DEFAULT 1,
        props jsonb NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (tenant_id, kb_id, src, type, dst, document_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS ix_graph_edges_dst ON graph_edges (tenant_id, kb_id, dst, type)",
    "CREATE INDEX IF NOT EXISTS ix_graph_edges_doc ON graph_edges (tenant_id, kb_id, document_id)",
)

_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:tenant || '/' || :kb))")
_OLD_SHARED = text(
    """
    SELECT DISTINCT n.id FROM graph_edges e
    JOIN graph_nodes n ON n.tenant_id = e.tenant_id AND n.kb_id = e.kb_id
         AND n.id IN (e.src, e.dst) AND n.document_id IS NULL
    WHERE e.tenant_id = :tenant AND e.kb_id = :kb AND e.document_id = :doc
    """
)
_DELETE_EDGES = text(
    "DELETE FROM graph_edges WHERE tenant_id = :tenant AND kb_id = :kb AND document_id = :doc"
)
_DELETE_NODES = text(
    "DELETE FROM graph_nodes WHERE tenant_id = :tenant AND kb_id = :kb AND document_id = :doc"
)
_INSERT_NODES = text(
    """
    INSERT INTO graph_nodes (tenant_id, kb_id, id, label, name, key, document_id, props)
    SELECT :tenant, :kb, u.id, u.label, u.name, u.key, u.document_id, u.props::jsonb
    FROM unnest(CAST(:ids AS text[]), CAST(:labels AS text[]), CAST(:names AS text[]),
                CAST(:keys AS text[]), CAST(:docs AS text[]), CAST(:props AS text[]))
         AS u(id, label, name, key, document_id, props)
    ON CONFLICT (tenant_id, kb_id, id) DO UPDATE
    SET document_id = COALESCE(EXCLUDED.document_id, graph_nodes.document_id),
        name = CASE WHEN EXCLUDED.document_id IS NULL THEN graph_nodes.name ELSE EXCLUDED.name END,
        props = graph_nodes.props || EXCLUDED.props
    """
)
_INSERT_EDGES = text(
    """
    INSERT INTO graph_edges (tenant_id, kb_id, src, type, dst, document_id, weight, props)
    SELECT :tenant, :kb, u.src, u.type, u.dst, :doc, u.weight, u.props::jsonb
    FROM unnest(CAST(:srcs AS text[]), CAST(:types AS text[]), CAST(:dsts AS text[]),
                CAST(:weights AS real[]), CAST(:props AS text[]))
         AS u(src, type, dst, weight, props)
    ON CONFLICT (tenant_id, kb_id, src, type, dst, document_id) DO UPDATE
    SET weight = EXCLUDED.weight, props = EXCLUDED.props
    """
)
_DELETE_ORPHANS = text(
    """
    DELETE FROM graph_nodes n
    WHERE n.tenant_id = :tenant AND n.kb_id = :kb AND n.id = ANY(CAST(:ids AS text[]))
      AND n.document_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM graph_edges e WHERE e.tenant_id = n.tenant_id
                      AND e.kb_id = n.kb_id AND e.src = n.id)
      AND NOT EXISTS (SELECT 1 FROM graph_edges e WHERE e.tenant_id = n.tenant_id
                      AND e.kb_id = n.kb_id AND e.dst = n.id)
    RETURNING n.id
    """
)
_NEIGHBOURS = {
    direction: text(
        f"""
        SELECT src, dst, type, document_id, weight, props FROM (
            SELECT e.src, e.dst, e.type, min(e.document_id) AS document_id,
                   sum(e.weight) AS weight, (array_agg(e.props))[1] AS props,
                   row_number() OVER (PARTITION BY e.{near}
                                      ORDER BY sum(e.weight) DESC, e.{far}) AS rn
            FROM graph_edges e
            JOIN graph_nodes n ON n.tenant_id = e.tenant_id AND n.kb_id = e.kb_id
                 AND n.id = e.{far}
            WHERE e.tenant_id = :tenant AND e.kb_id = ANY(CAST(:kbs AS text[]))
              AND e.{near} = ANY(CAST(:ids AS text[]))
              AND e.type = ANY(CAST(:types AS text[]))
            GROUP BY e.src, e.dst, e.type
        ) ranked
        WHERE rn <= :per_node
        """
    )
    for direction, near, far in (("out", "src", "dst"), ("in", "dst", "src"))
}
_DEGREES = {
    direction: text(
        f"""
        SELECT {near} AS id, count(DISTINCT {far}) AS degree FROM graph_edges
        WHERE tenant_id = :tenant AND kb_id = ANY(CAST(:kbs AS text[]))
          AND {near} = ANY(CAST(:ids AS text[])) AND type = :type
        GROUP BY {near}
        """
    )
    for direction, near, far in (("out", "src", "dst"), ("in", "dst", "src"))
}
_NODES = text(
    """
    SELECT DISTINCT ON (id) id, label, name, key, document_id, props FROM graph_nodes
    WHERE tenant_id = :tenant AND kb_id = ANY(CAST(:kbs AS text[]))
      AND id = ANY(CAST(:ids AS text[]))
    """
)
_FIND = text(
    """
    SELECT DISTINCT ON (id) id, label, name, key, document_id, props FROM graph_nodes
    WHERE tenant_id = :tenant AND kb_id = ANY(CAST(:kbs AS text[]))
      AND key = ANY(CAST(:keys AS text[])) AND label = ANY(CAST(:labels AS text[]))
    LIMIT :limit
    """
)
_COUNT_NODES = text(
    """
    SELECT label, count(*) FROM graph_nodes
    WHERE tenant_id = :tenant AND kb_id = ANY(CAST(:kbs AS text[])) GROUP BY label
    """
)
_COUNT_EDGES = text(
    """
    SELECT type, count(*) FROM graph_edges
    WHERE tenant_id = :tenant AND kb_id = ANY(CAST(:kbs AS text[])) GROUP BY type
    """
)
_DELETE_KB = (
    text("DELETE FROM graph_edges WHERE tenant_id = :tenant AND kb_id = :kb"),
    text("DELETE FROM graph_nodes WHERE tenant_id = :tenant AND kb_id = :kb"),
)


def _node(row: Any) -> GraphNode:
    props = dict(row.props or {})
    props.setdefault("key", row.key)
    return GraphNode(row.id, row.label, row.name, row.document_id, props)


class PostgresGraphStore:
    """:class:`~llmflow.graph.base.GraphStore` over the platform's PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._ready = False

    async def ensure_schema(self) -> None:
        if self._ready:
            return
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('graph_schema'))"))
            for statement in SCHEMA:
                await conn.execute(text(statement))
        self._ready = True

    async def _remove(
        self, conn: AsyncConnection, tenant_id: str, kb_id: str, document_id: str
    ) -> list[str]:
        p = {"tenant": tenant_id, "kb": kb_id, "doc": document_id}
        await conn.execute(_LOCK, p)
        shared = [r.id for r in await conn.execute(_OLD_SHARED, p)]
        await conn.execute(_DELETE_EDGES, p)
        await conn.execute(_DELETE_NODES, p)
        return shared

    async def _orphans(
        self, conn: AsyncConnection, tenant_id: str, kb_id: str, candidates: Sequence[str]
    ) -> list[str]:
        if not candidates:
            return []
        rows = await conn.execute(
            _DELETE_ORPHANS, {"tenant": tenant_id, "kb": kb_id, "ids": list(candidates)}
        )
        return [r.id for r in rows]

    async def replace_document(self, tenant_id: str, kb_id: str, graph: DocumentGraph) -> list[str]:
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            shared = await self._remove(conn, tenant_id, kb_id, graph.document_id)
            if graph.nodes:
                await conn.execute(
                    _INSERT_NODES,
                    {
                        "tenant": tenant_id,
                        "kb": kb_id,
                        "ids": [n.id for n in graph.nodes],
                        "labels": [n.label for n in graph.nodes],
                        "names": [n.name[:2000] for n in graph.nodes],
                        "keys": [str(n.props.get("key", "")) for n in graph.nodes],
                        "docs": [n.document_id for n in graph.nodes],
                        "props": [json.dumps(n.props, ensure_ascii=False) for n in graph.nodes],
                    },
                )
            if graph.edges:
                await conn.execute(
                    _INSERT_EDGES,
                    {
                        "tenant": tenant_id,
                        "kb": kb_id,
                        "doc": graph.document_id,
                        "srcs": [e.src for e in graph.edges],
                        "types": [e.type for e in graph.edges],
                        "dsts": [e.dst for e in graph.edges],
                        "weights": [float(e.weight) for e in graph.edges],
                        "props": [json.dumps(e.props, ensure_ascii=False) for e in graph.edges],
                    },
                )
            return await self._orphans(conn, tenant_id, kb_id, shared)

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> list[str]:
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            shared = await self._remove(conn, tenant_id, kb_id, document_id)
            return await self._orphans(conn, tenant_id, kb_id, shared)

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            await conn.execute(_LOCK, {"tenant": tenant_id, "kb": kb_id})
            for statement in _DELETE_KB:
                await conn.execute(statement, {"tenant": tenant_id, "kb": kb_id})

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
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                _NEIGHBOURS[direction],
                {
                    "tenant": tenant_id,
                    "kbs": list(kb_ids),
                    "ids": list(dict.fromkeys(node_ids)),
                    "types": list(edge_types),
                    "per_node": per_node,
                },
            )
            return [
                GraphEdge(r.src, r.dst, r.type, r.document_id, float(r.weight), dict(r.props))
                for r in rows
            ]

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
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                _DEGREES[direction],
                {
                    "tenant": tenant_id,
                    "kbs": list(kb_ids),
                    "ids": list(dict.fromkeys(node_ids)),
                    "type": edge_type,
                },
            )
            return {r.id: int(r.degree) for r in rows}

    async def nodes(
        self, tenant_id: str, kb_ids: Sequence[str], node_ids: Sequence[str]
    ) -> list[GraphNode]:
        if not node_ids or not kb_ids:
            return []
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                _NODES, {"tenant": tenant_id, "kbs": list(kb_ids), "ids": list(node_ids)}
            )
            return [_node(r) for r in rows]

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
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                _FIND,
                {
                    "tenant": tenant_id,
                    "kbs": list(kb_ids),
                    "keys": list(dict.fromkeys(keys)),
                    "labels": list(labels),
                    "limit": limit,
                },
            )
            return [_node(r) for r in rows]

    async def counts(self, tenant_id: str, kb_ids: Sequence[str]) -> dict[str, int]:
        await self.ensure_schema()
        p = {"tenant": tenant_id, "kbs": list(kb_ids)}
        async with self.engine.connect() as conn:
            out = {str(r[0]): int(r[1]) for r in await conn.execute(_COUNT_NODES, p)}
            out.update({str(r[0]): int(r[1]) for r in await conn.execute(_COUNT_EDGES, p)})
        return out

    async def close(self) -> None:
        """The engine belongs to the runtime; nothing of our own to release."""
