"""Hybrid retrieval: dense + Korean-morpheme BM25, fused with respect for each signal.

Plain RRF of an English-only embedder with morpheme BM25 on Korean drops Recall@1 from 0.85
to 0.19 (ARCHITECTURE §7), so every signal is weighted by what it can do: the dense signal
keeps its full weight only when the query's language is one the embedding model knows
(``embedding.languages``; ``multi`` for multilingual models), else
``retrieval.off_language_dense_weight`` (default 0: the dense search is skipped).

Both searches run concurrently against Milvus and are fused here — by default a weighted sum
of per-query min-max normalised scores, which keeps each signal's margins (weighted RRF is
available, ``retrieval.fusion=rrf``, but it flattens BM25's lead: on KorQuAD it turned
lexical Recall@1 0.942 into 0.83 even at dense weight 0.1). Fusing here is for quality —
Milvus' RRFRanker has no signal weights — not speed: on Milvus Lite 3.2 it measured 1.0–1.5×
the p50 of Lite's own ``hybrid_search`` (``llmflow bench search``). Scores are 0–1: 1.0
means the top hit of every active signal; with a reranker, the reranker's 0–1 relevance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from llmflow.errors import Forbidden, InvalidRequest, NotFound
from llmflow.index.lexical import detect_language
from llmflow.index.milvus import Hit
from llmflow.retrieve.metadata_filter import MetadataCondition, matches, validate
from llmflow.storage.models import KnowledgeBase

if TYPE_CHECKING:
    from llmflow.auth.apikeys import Principal
    from llmflow.runtime import Runtime

Mode = Literal["hybrid", "dense", "lexical", "graph"]
MODES: tuple[str, ...] = ("hybrid", "dense", "lexical", "graph")
MAX_QUERY_CHARS = 4000


@dataclass(slots=True)
class SearchResult:
    chunk_id: str
    score: float
    text: str
    title: str
    document_id: str
    source: str
    page: int | None
    section: str
    knowledge_base: str
    metadata: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)

    def citation(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "source": self.source,
            "title": self.title,
            "page": self.page,
            "section": self.section,
            "chunk_id": self.chunk_id,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "text": self.text,
            "knowledge_base": self.knowledge_base,
            "citation": self.citation(),
            "metadata": self.metadata,
            "signals": self.signals,
        }


@dataclass(slots=True)
class SearchResponse:
    results: list[SearchResult]
    timings_ms: dict[str, float]
    weights: dict[str, float]


Fused = list[tuple[str, float, dict[str, float]]]


def _ranks(signals: dict[str, list[Hit]]) -> dict[str, dict[str, float]]:
    ranks: dict[str, dict[str, float]] = {}
    for name, hits in signals.items():
        for rank, hit in enumerate(hits, start=1):
            ranks.setdefault(hit.chunk_id, {})[name] = float(rank)
    return ranks


def fuse_rrf(signals: dict[str, list[Hit]], weights: dict[str, float], k: int) -> Fused:
    """Weighted reciprocal-rank fusion, normalised so that first-everywhere scores 1.0."""
    active = {name: w for name, w in weights.items() if w > 0 and name in signals}
    best = sum(w / (k + 1) for w in active.values()) or 1.0
    scores: dict[str, float] = {}
    for name, hits in signals.items():
        w = active.get(name, 0.0)
        for rank, hit in enumerate(hits, start=1):
            if w:
                scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + w / (k + rank)
    ranks = _ranks(signals)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, s / best, ranks[cid]) for cid, s in ordered]


def fuse_scores(signals: dict[str, list[Hit]], weights: dict[str, float]) -> Fused:
    """Weighted convex combination of per-query min-max normalised scores.

    Unlike RRF, it keeps each signal's margins: a BM25 hit far ahead of the next stays ahead
    unless the other signal disagrees strongly, so a weak signal only reorders near-ties.
    The result is in 0–1: 1.0 is the top hit of every active signal.
    """
    active = {name: w for name, w in weights.items() if w > 0 and name in signals}
    total = sum(active.values()) or 1.0
    scores: dict[str, float] = {}
    for name, w in active.items():
        hits = signals[name]
        if not hits:
            continue
        hi, lo = max(h.score for h in hits), min(h.score for h in hits)
        span = hi - lo
        for h in hits:
            norm = (h.score - lo) / span if span > 0 else 1.0
            scores[h.chunk_id] = scores.get(h.chunk_id, 0.0) + w * norm
    ranks = _ranks(signals)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, s / total, ranks[cid]) for cid, s in ordered]


def result_from_fields(
    cid: str,
    score: float,
    ranks: dict[str, float],
    f: dict[str, Any],
    kb_by_id: dict[str, str],
) -> SearchResult:
    """A result (with its citation in the metadata) from the chunk index's stored fields."""
    page = f.get("page")
    result = SearchResult(
        chunk_id=cid,
        score=score,
        text=f.get("text", ""),
        title=f.get("title", ""),
        document_id=f.get("document_id", ""),
        source=f.get("source", ""),
        page=None if page is None or page < 0 else int(page),
        section=f.get("section", ""),
        knowledge_base=kb_by_id.get(f.get("kb_id", ""), ""),
        metadata=dict(f.get("metadata") or {}),
        signals=ranks,
    )
    result.metadata.update(
        {
            "document_id": result.document_id,
            "source": result.source,
            "title": result.title,
            "page": result.page,
            "section": result.section,
            "chunk_id": cid,
            "knowledge_base": result.knowledge_base,
        }
    )
    return result


class SearchService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def dense_weight(self, query: str) -> float:
        r = self.rt.settings.retrieval
        langs = {lang.lower() for lang in self.rt.settings.embedding.languages}
        lang = detect_language(query)
        if "multi" in langs or lang is None or lang in langs:
            return r.dense_weight
        return r.off_language_dense_weight

    async def resolve_kbs(self, principal: Principal, names: Sequence[str]) -> dict[str, str]:
        """KB name → id within the principal's tenant; unknown names are 404, names outside
        the principal's grant are 403."""
        if not names:
            raise InvalidRequest("name at least one knowledge base")
        for name in names:
            if not principal.may_read(name):
                raise Forbidden(f"this credential may not read knowledge base {name!r}")
        async with self.rt.sessions() as session:
            rows = (
                await session.execute(
                    select(KnowledgeBase.name, KnowledgeBase.id).where(
                        KnowledgeBase.tenant_id == principal.tenant_id,
                        KnowledgeBase.name.in_(list(names)),
                    )
                )
            ).all()
        found = {n: i for n, i in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f"knowledge base {missing[0]!r} does not exist")
        return found

    async def _graph_fusion(self, kb_ids: list[str]) -> tuple[str, float]:
        """Fusion method and graph weight: the first searched KB's override, else settings."""
        gs = self.rt.settings.graph
        async with self.rt.sessions() as session:
            rows = (
                await session.execute(
                    select(
                        KnowledgeBase.id, KnowledgeBase.graph_fusion, KnowledgeBase.graph_weight
                    ).where(KnowledgeBase.id.in_(kb_ids))
                )
            ).all()
        by_id = {r[0]: (r[1], r[2]) for r in rows}
        fusion, weight = by_id.get(kb_ids[0], (None, None))
        return fusion or gs.fusion, gs.graph_weight if weight is None else float(weight)

    async def _with_graph(
        self,
        principal: Principal,
        kb_ids: list[str],
        query: str,
        fused: Fused,
        fields: dict[str, dict[str, Any]],
        timings: dict[str, float],
        query_vector: list[float] | None,
    ) -> tuple[Fused, dict[str, dict[str, Any]]]:
        """Expand the hybrid ranking through the graph and fuse both (graph mode)."""
        from llmflow.retrieve.graph import fuse_graph

        t = time.perf_counter()
        graph, gs = self.rt.graph, self.rt.settings.graph
        hits, stats = await graph.expand(
            principal.tenant_id, kb_ids, query, [(c, s) for c, s, _ in fused], query_vector
        )
        missing = [h.chunk_id for h in hits if h.chunk_id not in fields][:200]
        if missing:
            index = await self.rt.index()
            fields.update(await index.fetch(principal.tenant_id, kb_ids, missing))
        hits = [h for h in hits if h.chunk_id in fields]
        method, weight = await self._graph_fusion(kb_ids)
        fused = fuse_graph(fused, hits, method=method, weight=weight, k=gs.rrf_k)
        paths = {
            h.chunk_id: {"rank": rank, "score": round(h.score, 4), "paths": h.paths}
            for rank, h in enumerate(hits, start=1)
        }
        timings["graph_ms"] = (time.perf_counter() - t) * 1000
        timings["graph_queries"] = float(stats["graph_queries"])
        return fused, paths

    async def search(
        self,
        principal: Principal,
        kb_names: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        score_threshold: float = 0.0,
        mode: Mode = "hybrid",
        metadata_condition: MetadataCondition | None = None,
        rerank: bool = True,
    ) -> SearchResponse:
        query = query.strip()
        if not query:
            raise InvalidRequest("query must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is longer than {MAX_QUERY_CHARS} characters")
        settings = self.rt.settings.retrieval
        top_k = top_k or settings.default_top_k
        if not 1 <= top_k <= 100:
            raise InvalidRequest("top_k must be between 1 and 100")
        if metadata_condition is not None:
            validate(metadata_condition)
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        if mode == "graph" and not self.rt.settings.graph.enabled:
            raise InvalidRequest("graph mode needs the knowledge graph (graph.enabled)")
        kbs = await self.resolve_kbs(principal, kb_names)
        kb_by_id = {i: n for n, i in kbs.items()}
        kb_ids = list(kbs.values())
        limit = max(top_k * settings.candidate_factor, 20)
        if metadata_condition is not None and metadata_condition.conditions:
            limit *= 5  # post-filtered: fetch more candidates
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        index = await self.rt.index()
        weights = {
            "dense": self.dense_weight(query) if mode != "lexical" else 0.0,
            "lexical": settings.lexical_weight if mode != "dense" else 0.0,
        }

        query_vector: list[list[float]] = []

        async def dense() -> list[Hit]:
            t = time.perf_counter()
            embedder = await self.rt.embedder()
            vector = await embedder.embed_query(query)
            query_vector.append(vector)  # graph mode's entity lookup reuses it
            timings["embed_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            hits = await index.search_dense(vector, principal.tenant_id, kb_ids, limit)
            timings["dense_ms"] = (time.perf_counter() - t) * 1000
            return hits

        async def lexical() -> list[Hit]:
            t = time.perf_counter()
            analyzer = await self.rt.analyzer()
            analysed = await asyncio.to_thread(analyzer.analyze, query)
            timings["analyze_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            hits = await index.search_lexical(analysed, principal.tenant_id, kb_ids, limit)
            timings["lexical_ms"] = (time.perf_counter() - t) * 1000
            return hits

        tasks: dict[str, Any] = {}
        if weights["dense"] > 0 or mode == "dense":
            tasks["dense"] = dense()
        if mode != "dense":
            tasks["lexical"] = lexical()
        results = await asyncio.gather(*tasks.values())
        signals = dict(zip(tasks.keys(), results, strict=True))
        if mode == "dense":
            weights["dense"] = 1.0
        fields: dict[str, dict[str, Any]] = {}
        for hits in signals.values():
            for h in hits:
                if h.fields.get("tenant_id") != principal.tenant_id:  # defence in depth
                    continue
                fields.setdefault(h.chunk_id, h.fields)
        t = time.perf_counter()
        fused_all = (
            fuse_rrf(signals, weights, settings.rrf_k)
            if settings.fusion == "rrf"
            else fuse_scores(signals, weights)
        )
        fused = [(c, s, r) for c, s, r in fused_all if c in fields]
        timings["fusion_ms"] = (time.perf_counter() - t) * 1000
        graph_paths: dict[str, dict[str, Any]] = {}
        if mode == "graph":
            fused, graph_paths = await self._with_graph(
                principal, kb_ids, query, fused, fields, timings,
                query_vector[0] if query_vector else None,
            )  # fmt: skip
        t = time.perf_counter()
        reranking = rerank and self.rt.settings.rerank.provider != "none"
        # results are built only as far as they can still be returned (or reranked)
        wanted = self.rt.settings.rerank.candidates if reranking else top_k
        out: list[SearchResult] = []
        for cid, score, ranks in fused:
            if len(out) >= wanted:
                break
            result = result_from_fields(cid, score, ranks, fields[cid], kb_by_id)
            if cid in graph_paths:
                result.metadata["graph"] = graph_paths[cid]
            if matches(result.metadata, metadata_condition):
                out.append(result)
        timings["results_ms"] = (time.perf_counter() - t) * 1000
        if reranking and out:
            t = time.perf_counter()
            head = out[: self.rt.settings.rerank.candidates]
            reranker = await self.rt.reranker()
            scores = await reranker.rerank(query, [r.text for r in head])
            for r, s in zip(head, scores, strict=True):
                r.signals["fused_score"] = r.score
                r.score = float(s)
            out = sorted(head, key=lambda r: -r.score)
            timings["rerank_ms"] = (time.perf_counter() - t) * 1000
        out = [r for r in out if r.score >= score_threshold][:top_k]
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return SearchResponse(out, {k: round(v, 2) for k, v in timings.items()}, weights)
