"""Graph retrieval and the graph's service surface (build, delete, neighbourhood, references).

Retrieval (``mode="graph"``) = issue 2's hybrid search, then a bounded walk of the graph
from two kinds of seeds, then fusion:

* the hybrid search's best chunks (``graph.seed_chunks``), and
* the entities the query names — looked up by normalised name in the graph and by vector in
  the Milvus entity collection (we do the lookup ourselves: llama_index#15511).

The walk follows a few typed patterns, one parameterised query per hop (fan-out capped per
node, hub entities skipped), each a reason a person can read:

* ``cites``: chunk ─REFERS_TO→ section ─HAS_CHUNK→ chunk (제60조 → the article itself)
* ``cited by``: chunk ←HAS_CHUNK─ section ←REFERS_TO─ chunk
* ``subject``: chunk ─MENTIONS→ entity ←ABOUT─ document ─HAS_CHUNK→ chunk (the bridge of
  multi-hop questions: a mention leads to the document that describes it)
* ``co-mention``: chunk ─MENTIONS→ entity ←MENTIONS─ chunk
* from query entities: entity ←ABOUT─ document ─HAS_CHUNK→ chunk, entity ←MENTIONS─ chunk,
  entity ─RELATED_TO─ entity ←ABOUT─ document ─HAS_CHUNK→ chunk

Every chunk reached keeps the path that reached it (``metadata.graph.paths``), so a user can
see why it was retrieved.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmflow.errors import InvalidRequest, NotFound
from llmflow.graph.base import Direction, EdgeType, GraphEdge, GraphNode, GraphStore, Subgraph
from llmflow.graph.extract import (
    ChunkInput,
    DocumentInput,
    english_phrases,
    entity_key,
    extract_document,
    merge_into,
    node_id,
)
from llmflow.graph.llm_extract import extract_with_llm, llm_extraction_enabled
from llmflow.graph.references import find_references, normalise_key

if TYPE_CHECKING:
    from llmflow.auth.apikeys import Principal
    from llmflow.index.entities import EntityIndex
    from llmflow.ingest.chunk import Chunk
    from llmflow.retrieve.hybrid import SearchResult
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

Step = tuple[tuple[EdgeType, ...], Direction]
_HOP_DECAY = 0.85


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    steps: tuple[Step, ...]
    weight: float = 1.0
    """How much a match is worth: a citation or the document *about* a mentioned entity is
    strong evidence; two chunks merely mentioning the same entity much less."""


CHUNK_PATTERNS = (
    Pattern("cites", ((("REFERS_TO",), "out"), (("HAS_CHUNK",), "out")), 1.2),
    Pattern("cited by", ((("HAS_CHUNK",), "in"), (("REFERS_TO",), "in")), 0.8),
    Pattern(
        "subject",
        ((("MENTIONS",), "out"), (("ABOUT",), "in"), (("HAS_CHUNK",), "out")),
        1.2,
    ),
    Pattern("co-mention", ((("MENTIONS",), "out"), (("MENTIONS",), "in")), 0.5),
)
ENTITY_PATTERNS = (
    Pattern("subject", ((("ABOUT",), "in"), (("HAS_CHUNK",), "out")), 1.2),
    Pattern("mention", ((("MENTIONS",), "in"),), 0.6),
    Pattern(
        "related",
        ((("RELATED_TO",), "out"), (("ABOUT",), "in"), (("HAS_CHUNK",), "out")),
        0.5,
    ),
    Pattern(
        "related",
        ((("RELATED_TO",), "in"), (("ABOUT",), "in"), (("HAS_CHUNK",), "out")),
        0.5,
    ),
)
SECTION_PATTERNS = (Pattern("section", ((("HAS_CHUNK",), "out"),)),)


@dataclass(slots=True)
class GraphHit:
    chunk_id: str
    score: float
    paths: list[list[str]] = field(default_factory=list)


@dataclass(slots=True)
class _Walker:
    """One expansion: memoised hop queries and node names for readable paths."""

    store: GraphStore
    tenant_id: str
    kb_ids: list[str]
    per_node: int
    max_degree: int
    degree_cache: dict[str, int] = field(default_factory=dict)
    hop_cache: dict[tuple[str, tuple[EdgeType, ...], Direction], list[GraphEdge]] = field(
        default_factory=dict
    )
    queries: int = 0

    async def hop(
        self, nodes: Sequence[str], types: tuple[EdgeType, ...], direction: Direction
    ) -> dict[str, list[GraphEdge]]:
        todo = [n for n in dict.fromkeys(nodes) if (n, types, direction) not in self.hop_cache]
        if todo:
            self.queries += 1
            edges = await self.store.neighbours(
                self.tenant_id, self.kb_ids, todo, types, direction, self.per_node
            )
            for n in todo:
                self.hop_cache[(n, types, direction)] = []
            for e in edges:
                near = e.src if direction == "out" else e.dst
                self.hop_cache[(near, types, direction)].append(e)
        return {n: self.hop_cache[(n, types, direction)] for n in nodes}

    async def drop_hubs(self, entity_ids: Sequence[str]) -> set[str]:
        """Entities mentioned by more chunks than the cap say nothing specific."""
        todo = [e for e in dict.fromkeys(entity_ids) if e not in self.degree_cache]
        if todo:
            self.queries += 1
            degrees = await self.store.degrees(self.tenant_id, self.kb_ids, todo, "MENTIONS", "in")
            for e in todo:
                self.degree_cache[e] = degrees.get(e, 0)
        return {e for e in entity_ids if self.degree_cache.get(e, 0) > self.max_degree}

    async def walk(
        self, seeds: dict[str, float], patterns: Sequence[Pattern], max_hops: int
    ) -> list[tuple[str, float, list[str]]]:
        """(chunk node id, score, path as node ids and edge types) for every pattern match."""
        out: list[tuple[str, float, list[str]]] = []
        for pattern in patterns:
            if len(pattern.steps) > max_hops:
                continue
            frontier: list[tuple[str, float, list[str]]] = [
                (s, w * pattern.weight, [s]) for s, w in seeds.items()
            ]
            for depth, (types, direction) in enumerate(pattern.steps):
                by_node = await self.hop([f[0] for f in frontier], types, direction)
                far_ids = [
                    (e.dst if direction == "out" else e.src)
                    for f in frontier
                    for e in by_node.get(f[0], [])
                ]
                entities = [n for n in far_ids if n.startswith("e:")]
                hubs = await self.drop_hubs(entities) if entities else set()
                nxt: list[tuple[str, float, list[str]]] = []
                for node, score, path in frontier:
                    for e in by_node.get(node, []):
                        far = e.dst if direction == "out" else e.src
                        if far in hubs or far in path:
                            continue
                        factor = _HOP_DECAY
                        if far.startswith("e:"):
                            factor *= specificity(self.degree_cache.get(far, 1))
                        nxt.append((far, score * factor, [*path, e.type, far]))
                # keep the walk bounded: best partial paths first
                nxt.sort(key=lambda t: -t[1])
                frontier = nxt[: self.per_node * max(1, len(seeds)) * (depth + 1)]
            out += [(n, s, p) for n, s, p in frontier if n.startswith("c:")]
        return out


class GraphService:
    """The graph of every knowledge base: written at ingest, read by search and the tools."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._said_no_llm = False

    @property
    def enabled(self) -> bool:
        return self.rt.settings.graph.enabled

    # -- build ----------------------------------------------------------------------------
    async def index_document(
        self,
        *,
        tenant_id: str,
        kb_id: str,
        document_id: str,
        title: str,
        chunks: Sequence[Chunk],
        phrases: Sequence[list[str]],
        topics: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Extract and store one document's graph (replacing its previous one) and the
        vectors of entities not seen before; returns counts and timings for the job stats."""
        t0 = time.perf_counter()
        doc = DocumentInput(
            document_id=document_id,
            title=title,
            chunks=[
                ChunkInput(c.chunk_id, c.index, c.text, list(c.section_path), list(p))
                for c, p in zip(chunks, phrases, strict=True)
            ],
            topics=list(topics),
        )
        graph = await asyncio.to_thread(extract_document, doc)
        t_extract = time.perf_counter() - t0
        llm_stats: dict[str, Any] = {}
        llm = self.rt.settings.graph.llm
        if llm_extraction_enabled(llm):
            nodes, edges, report = await extract_with_llm(
                llm, document_id, [(c.chunk_id, c.text) for c in chunks]
            )
            graph = merge_into(graph, nodes, edges)
            llm_stats = report.stats()
        elif not self._said_no_llm:
            self._said_no_llm = True
            log.info(
                "graph: deterministic extraction only (structure, references, entities); "
                "set graph.llm.base_url and graph.llm.model for LLM extraction"
            )
        store = await self.rt.graph_store()
        removed = await store.replace_document(tenant_id, kb_id, graph)
        stats: dict[str, Any] = {
            "graph_nodes": len(graph.nodes),
            "graph_edges": len(graph.edges),
            "graph_references": sum(1 for e in graph.edges if e.type == "REFERS_TO"),
            "graph_extract_s": round(t_extract, 4),
            **llm_stats,
        }
        if self.rt.settings.graph.entity_vectors:
            t = time.perf_counter()
            entities = await self.rt.entity_index()
            await entities.delete(tenant_id, kb_id, removed)
            names = {n.id: n.name for n in graph.nodes if n.label == "Entity"}
            missing = await entities.missing(tenant_id, kb_id, list(names))
            if missing:
                embedder = await self.rt.embedder()
                vectors = await embedder.embed_documents([names[m] for m in missing])
                await entities.upsert(tenant_id, kb_id, [(m, names[m]) for m in missing], vectors)
            stats["graph_entity_vectors"] = len(missing)
            stats["graph_vectors_s"] = round(time.perf_counter() - t, 4)
        stats["graph_s"] = round(time.perf_counter() - t0, 4)
        return stats

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None:
        store = await self.rt.graph_store()
        removed = await store.delete_document(tenant_id, kb_id, document_id)
        if self.rt.settings.graph.entity_vectors and removed:
            entities = await self.rt.entity_index()
            await entities.delete(tenant_id, kb_id, removed)

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        store = await self.rt.graph_store()
        await store.delete_kb(tenant_id, kb_id)
        if self.rt.settings.graph.entity_vectors:
            entities = await self.rt.entity_index()
            await entities.delete(tenant_id, kb_id, None)

    # -- retrieval ------------------------------------------------------------------------
    async def query_seeds(
        self,
        tenant_id: str,
        kb_ids: list[str],
        query: str,
        query_vector: list[float] | None = None,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(entity seeds, section seeds) the query names: by normalised name, by cited
        article, and by entity vector."""
        settings = self.rt.settings.graph
        store = await self.rt.graph_store()
        analyzer = await self.rt.analyzer()
        [(_, korean)] = await asyncio.to_thread(analyzer.analyze_with_phrases, [query], [0])
        keys = {entity_key(p) for p in [*korean, *english_phrases(query)]}
        entities: dict[str, float] = {}
        for node in await store.find_nodes(tenant_id, kb_ids, ["Entity"], list(keys), 50):
            entities[node.id] = 1.0
        sections: dict[str, float] = {}
        refs = [r for r in find_references(query, "") if r.law]
        if refs:
            ids = [node_id("s", r.key) for r in refs]
            for node in await store.nodes(tenant_id, kb_ids, ids):
                sections[node.id] = 1.0
        if settings.entity_vectors:
            vector = query_vector
            if vector is None:
                embedder = await self.rt.embedder()
                vector = await embedder.embed_query(query)
            index: EntityIndex = await self.rt.entity_index()
            for hit in await index.search(vector, tenant_id, kb_ids, settings.entity_top_k):
                if hit.score >= settings.entity_min_score:
                    entities[hit.node_id] = max(entities.get(hit.node_id, 0.0), hit.score)
        return entities, sections

    async def expand(
        self,
        tenant_id: str,
        kb_ids: list[str],
        query: str,
        seed_chunks: Sequence[tuple[str, float]],
        query_vector: list[float] | None = None,
    ) -> tuple[list[GraphHit], dict[str, Any]]:
        """Graph candidates ranked by their best path, and stats (seeds, queries, ms)."""
        settings = self.rt.settings.graph
        t0 = time.perf_counter()
        store = await self.rt.graph_store()
        walker = _Walker(store, tenant_id, kb_ids, settings.per_node, settings.max_entity_degree)
        entity_seeds, section_seeds = await self.query_seeds(tenant_id, kb_ids, query, query_vector)
        chunk_seeds = {f"c:{cid}": score for cid, score in seed_chunks[: settings.seed_chunks]}
        matches = await walker.walk(chunk_seeds, CHUNK_PATTERNS, settings.max_hops)
        if entity_seeds:
            # an entity the query names counts by how specific it is (a hub says little)
            await walker.drop_hubs(list(entity_seeds))
            entity_seeds = {
                e: w * specificity(walker.degree_cache.get(e, 1))
                for e, w in entity_seeds.items()
                if walker.degree_cache.get(e, 0) <= settings.max_entity_degree
            }
            matches += await walker.walk(entity_seeds, ENTITY_PATTERNS, settings.max_hops)
        if section_seeds:
            matches += await walker.walk(section_seeds, SECTION_PATTERNS, settings.max_hops)
        best: dict[str, GraphHit] = {}
        for node, score, path in matches:
            hit = best.setdefault(node, GraphHit(node[2:], 0.0))
            hit.score = max(hit.score, score) + (0.1 * min(hit.score, score))
            if len(hit.paths) < 3:
                hit.paths.append(path)
        hits = sorted(best.values(), key=lambda h: (-h.score, h.chunk_id))
        names = await self._names(store, tenant_id, kb_ids, hits[:50])
        for h in hits[:50]:
            h.paths = [_readable(p, names) for p in h.paths]
        stats = {
            "seed_chunks": len(chunk_seeds),
            "seed_entities": len(entity_seeds),
            "seed_sections": len(section_seeds),
            "graph_queries": walker.queries,
            "graph_candidates": len(hits),
            "graph_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        return hits, stats

    @staticmethod
    async def _names(
        store: GraphStore, tenant_id: str, kb_ids: list[str], hits: Sequence[GraphHit]
    ) -> dict[str, GraphNode]:
        ids = {n for h in hits for p in h.paths for n in p[::2]}
        return {n.id: n for n in await store.nodes(tenant_id, kb_ids, list(ids))}

    # -- tool surface (agents, OpenAPI tools) ---------------------------------------------
    async def _kb_ids(self, principal: Principal, kb_names: Sequence[str]) -> dict[str, str]:
        return await self.rt.search.resolve_kbs(principal, kb_names)

    async def neighbourhood(
        self,
        principal: Principal,
        kb_names: Sequence[str],
        node: str,
        hops: int = 1,
        limit: int = 50,
    ) -> Subgraph:
        """The subgraph around a node (a node id, or an entity/section/document name)."""
        if not 1 <= hops <= self.rt.settings.graph.max_hops:
            raise InvalidRequest(f"hops must be between 1 and {self.rt.settings.graph.max_hops}")
        if not 1 <= limit <= 500:
            raise InvalidRequest("limit must be between 1 and 500")
        kb_ids = list((await self._kb_ids(principal, kb_names)).values())
        store = await self.rt.graph_store()
        tenant = principal.tenant_id
        start = await store.nodes(tenant, kb_ids, [node]) if ":" in node else []
        if not start:
            start = await store.find_nodes(
                tenant,
                kb_ids,
                ["Entity", "Section", "Document", "Topic"],
                [entity_key(node), normalise_key(node)],
                5,
            )
        if not start:
            raise NotFound(f"no graph node named {node!r} in these knowledge bases")
        nodes = {n.id: n for n in start}
        edges: dict[tuple[str, str, str], GraphEdge] = {}
        frontier = list(nodes)
        all_types: tuple[EdgeType, ...] = (
            "HAS_SECTION", "HAS_CHUNK", "MENTIONS", "RELATED_TO", "ABOUT", "BELONGS_TO",
            "REFERS_TO",
        )  # fmt: skip
        per_node = max(1, min(limit, self.rt.settings.graph.per_node))
        for _ in range(hops):
            found: list[GraphEdge] = []
            for direction in ("out", "in"):
                found += await store.neighbours(
                    tenant, kb_ids, frontier, all_types, direction, per_node
                )
            frontier = []
            for e in found:
                if len(nodes) >= limit and (e.src not in nodes or e.dst not in nodes):
                    continue
                edges.setdefault((e.src, e.type, e.dst), e)
                for n in (e.src, e.dst):
                    if n not in nodes:
                        nodes[n] = GraphNode(n, "Entity", n)  # replaced by the real node below
                        frontier.append(n)
        real = await store.nodes(tenant, kb_ids, list(nodes))
        return Subgraph(real, list(edges.values()))

    async def _results(
        self, principal: Principal, kbs: dict[str, str], chunk_ids: Sequence[str]
    ) -> list[SearchResult]:
        from llmflow.retrieve.hybrid import result_from_fields

        index = await self.rt.index()
        fields = await index.fetch(principal.tenant_id, list(kbs.values()), chunk_ids)
        kb_by_id = {i: n for n, i in kbs.items()}
        return [
            result_from_fields(cid, 1.0, {}, fields[cid], kb_by_id)
            for cid in chunk_ids
            if cid in fields
        ]

    async def follow_reference(
        self,
        principal: Principal,
        kb_names: Sequence[str],
        chunk_id: str,
        reference: str | None = None,
    ) -> list[SearchResult]:
        """The chunks a chunk's citations point at (all, or those whose text or target
        matches ``reference``, e.g. ``제60조``)."""
        kbs = await self._kb_ids(principal, kb_names)
        store = await self.rt.graph_store()
        kb_ids = list(kbs.values())
        refs = await store.neighbours(
            principal.tenant_id, kb_ids, [f"c:{chunk_id}"], ("REFERS_TO",), "out", 50
        )
        if reference:
            wanted = normalise_key(reference)
            refs = [
                e
                for e in refs
                if wanted in normalise_key(str(e.props.get("text", "")))
                or wanted in normalise_key(str(e.props.get("target", "")))
            ]
        if not refs:
            return []
        targets = await store.neighbours(
            principal.tenant_id, kb_ids, [e.dst for e in refs], ("HAS_CHUNK",), "out", 20
        )
        results = await self._results(principal, kbs, [e.dst[2:] for e in targets])
        by_section = {e.dst: e for e in refs}
        via = {t.dst[2:]: by_section.get(t.src) for t in targets}
        for r in results:
            edge = via.get(r.chunk_id)
            if edge is not None:
                r.metadata["reference"] = edge.props
        return results

    async def section(
        self,
        principal: Principal,
        kb_names: Sequence[str],
        document_id: str,
        section: str | None = None,
    ) -> list[SearchResult]:
        """A document's chunks in reading order — all, or those under a section whose
        heading contains ``section`` (``제60조``, ``4.2``)."""
        kbs = await self._kb_ids(principal, kb_names)
        index = await self.rt.index()
        try:
            rows = await index.document_chunks(principal.tenant_id, list(kbs.values()), document_id)
        except ValueError:  # not an id at all
            rows = []
        if not rows:
            raise NotFound(f"document {document_id!r} does not exist in these knowledge bases")
        if section:
            wanted = normalise_key(section)
            rows = [r for r in rows if wanted in normalise_key(str(r.get("section", "")))
                    or normalise_key(str(r.get("text", ""))).startswith(wanted)]  # fmt: skip
        from llmflow.retrieve.hybrid import result_from_fields

        kb_by_id = {i: n for n, i in kbs.items()}
        return [result_from_fields(str(r["chunk_id"]), 1.0, {}, r, kb_by_id) for r in rows[:200]]


def _readable(path: list[str], names: dict[str, GraphNode]) -> list[str]:
    """Node ids replaced by ``Label:name`` (edge types stay as they are)."""
    out: list[str] = []
    for i, item in enumerate(path):
        if i % 2:
            out.append(item)
            continue
        node = names.get(item)
        out.append(f"{node.label}:{node.name[:80]}" if node else item)
    return out


def fuse_graph(
    ranked: Sequence[tuple[str, float, dict[str, float]]],
    graph_hits: Sequence[GraphHit],
    *,
    method: str,
    weight: float,
    k: int,
) -> list[tuple[str, float, dict[str, float]]]:
    """Hybrid ranking + graph ranking → one ranking with 0–1 scores (1.0 = first in both).

    ``rrf``: weighted reciprocal-rank fusion (hybrid weight 1); ``scores``: weighted sum of
    the hybrid score and the graph score normalised by its maximum.
    """
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, float]] = {}
    if method == "rrf":
        best = 1 / (k + 1) + weight / (k + 1)
        for r, (cid, _s, sig) in enumerate(ranked, start=1):
            scores[cid] = 1 / (k + r)
            ranks[cid] = dict(sig)
        for r, h in enumerate(graph_hits, start=1):
            scores[h.chunk_id] = scores.get(h.chunk_id, 0.0) + weight / (k + r)
            ranks.setdefault(h.chunk_id, {})["graph"] = float(r)
    else:
        best = 1 + weight
        top = max((h.score for h in graph_hits), default=0.0) or 1.0
        for cid, s, sig in ranked:
            scores[cid] = s
            ranks[cid] = dict(sig)
        for r, h in enumerate(graph_hits, start=1):
            scores[h.chunk_id] = scores.get(h.chunk_id, 0.0) + weight * h.score / top
            ranks.setdefault(h.chunk_id, {})["graph"] = float(r)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, min(1.0, s / best), ranks[cid]) for cid, s in ordered]


def specificity(degree: int) -> float:
    """How much a path through an entity mentioned by ``degree`` chunks is worth."""
    return 1.0 / (1.0 + math.log1p(max(0, degree - 1)))
