"""The graph store interface (one per backend, chosen by settings) and its value types.

Node labels and relationship types follow seed 004 §2.5, plus the section structure and the
explicit cross-references between sections/articles (``REFERS_TO``). Every node and edge
carries ``tenant_id`` and ``kb_id``; every read takes the tenant and the knowledge-base ids
and filters on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

NodeLabel = Literal["Document", "Section", "Chunk", "Entity", "Topic"]
EdgeType = Literal[
    "HAS_SECTION",  # Document → Section, Section → Section (sub-sections)
    "HAS_CHUNK",  # Document/Section → Chunk
    "MENTIONS",  # Chunk → Entity
    "RELATED_TO",  # Entity ↔ Entity (co-mention, or an LLM-extracted relation)
    "ABOUT",  # Document/Chunk → Topic, Document → Entity (the document's subject)
    "BELONGS_TO",  # Entity → Topic
    "REFERS_TO",  # Chunk → Section (an explicit cross-reference such as 제5조제2항)
]
NODE_LABELS: tuple[NodeLabel, ...] = ("Document", "Section", "Chunk", "Entity", "Topic")
EDGE_TYPES: tuple[EdgeType, ...] = (
    "HAS_SECTION",
    "HAS_CHUNK",
    "MENTIONS",
    "RELATED_TO",
    "ABOUT",
    "BELONGS_TO",
    "REFERS_TO",
)


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str
    label: NodeLabel
    name: str
    document_id: str | None = None
    """The owning document (None for Entity/Topic, which documents share)."""
    props: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "name": self.name,
            "document_id": self.document_id,
            "props": self.props,
        }


@dataclass(frozen=True, slots=True)
class GraphEdge:
    src: str
    dst: str
    type: EdgeType
    document_id: str
    """The document whose extraction produced the edge: deleting it deletes the edge."""
    weight: float = 1.0
    props: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "type": self.type,
            "document_id": self.document_id,
            "weight": self.weight,
            "props": self.props,
        }


@dataclass(slots=True)
class DocumentGraph:
    """Everything one document contributes to the graph; written as one replacement."""

    document_id: str
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)


@dataclass(slots=True)
class Subgraph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }


Direction = Literal["out", "in"]


class GraphStore(Protocol):
    """Operation-level interface; every method is tenant- and knowledge-base-scoped.

    Traversals are built from :meth:`neighbours` — one bounded, parameterised query per hop —
    in :mod:`llmflow.retrieve.graph`, so both stores walk the graph the same way.
    """

    async def ensure_schema(self) -> None:
        """Create tables/constraints/indexes (idempotent)."""

    async def replace_document(self, tenant_id: str, kb_id: str, graph: DocumentGraph) -> list[str]:
        """Delete the document's previous subgraph and write this one (atomically where the
        store allows). Returns the ids of Entity/Topic nodes left without any edge, which
        were removed (their vectors must go too)."""

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> list[str]:
        """Remove the document's nodes and edges; returns the orphaned shared nodes removed."""

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None: ...

    async def neighbours(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        node_ids: Sequence[str],
        edge_types: Sequence[EdgeType],
        direction: Direction,
        per_node: int,
    ) -> list[GraphEdge]:
        """Edges of the given types leaving (``out``) or entering (``in``) the nodes, at most
        ``per_node`` per node (highest weight first). Edges whose far end does not exist
        (a reference to a document not ingested yet) are left out."""

    async def degrees(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        node_ids: Sequence[str],
        edge_type: EdgeType,
        direction: Direction,
    ) -> dict[str, int]:
        """Edge counts per node (to recognise hub entities)."""

    async def nodes(
        self, tenant_id: str, kb_ids: Sequence[str], node_ids: Sequence[str]
    ) -> list[GraphNode]: ...

    async def find_nodes(
        self,
        tenant_id: str,
        kb_ids: Sequence[str],
        labels: Sequence[NodeLabel],
        keys: Sequence[str],
        limit: int,
    ) -> list[GraphNode]:
        """Nodes whose normalised name (``props["key"]``) is one of ``keys``."""

    async def counts(self, tenant_id: str, kb_ids: Sequence[str]) -> dict[str, int]:
        """Node counts by label and edge counts by type (for status and tests)."""

    async def close(self) -> None: ...
