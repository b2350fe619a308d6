"""`llmflow bench search`: our hybrid search path against raw pymilvus on one collection.

For each corpus size a Milvus (Lite) collection is built once through our ``ChunkIndex``
(the production schema: partition key tenant, BM25 over the Kiwi-analysed ``lexical`` field,
384-d dense vectors) in its own data directory, flushed and reopened so that it is measured
sealed and indexed, and reused while its recipe and row count match.
Texts are real Korean when the KorQuAD dev set is present (windows of ~120 tokens over its
contexts — back to back first, then overlapping windows at shuffled start words — analysed by
our ``KoreanAnalyzer``), generated Korean-like text otherwise.

Dense vectors — corpus *and* queries — are deterministic random unit vectors: the local
embedder is far too slow to embed 100k chunks on a small machine, and the cost of a brute-force
vector scan does not depend on what the vectors mean. The query "embedder" is a precomputed
table (:class:`TableEmbedder`), so no embedding model runs inside any timed path; the real
model's query latency is measured separately and reported on its own line.

Three paths answer the same queries with the same filter, candidate limit and output fields:

* ``ours`` — ``SearchService.search`` (hybrid): KB lookup in PostgreSQL, Kiwi analysis of
  the query, dense + BM25 searches issued concurrently, fused in Python as
  ``retrieval.fusion`` says (weighted score fusion by default);
* ``raw_two`` — the same two ``MilvusClient.search`` calls issued concurrently on the same
  client, fused with a naive RRF (the query is analysed beforehand, outside the timing);
* ``raw_hybrid`` — one ``MilvusClient.hybrid_search`` with ``RRFRanker``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmflow.auth.apikeys import Principal
from llmflow.index.milvus import OUTPUT_FIELDS, ChunkIndex, ChunkRecord
from llmflow.models.embedding._tokens import TokenCounter, approximate_token_count
from llmflow.models.embedding.base import Embedder
from llmflow.runtime import Runtime
from llmflow.settings import Settings, load_settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
KORQUAD = REPO.parent / "shared" / "datasets" / "retrieval" / "KorQuAD_v1.0_dev.json"
TENANT = "bench"
KB_NAME = "corpus"
DIM = 384
SEED = 20240601
BUILD_BATCH = 2000
MANIFEST = "bench-manifest.json"
LAST_RESULT = "bench-search-last.json"
VECTOR_NOTE = (
    "dense vectors of corpus and queries are deterministic random unit vectors (384-d); "
    "no embedding model runs in any timed path (a precomputed query-vector table stands in "
    "for the embedder); the real model's query latency is reported separately"
)

Progress = Callable[[str, int, int], None]


# -- vectors and the table embedder ---------------------------------------------------------


def unit_vectors(count: int, seed: int, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``count`` deterministic random unit vectors."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((count, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def text_vector(text: str, dim: int = DIM) -> list[float]:
    """A deterministic random unit vector keyed by the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return [float(x) for x in unit_vectors(1, seed, dim)[0]]


class TableEmbedder(Embedder):
    """Benchmark stand-in for an embedding model: vectors come from a precomputed table
    (random unit vectors keyed by text), so a lookup costs microseconds and the timed search
    path contains no model inference. Texts missing from the table get their vector on the
    fly by the same rule."""

    def __init__(
        self, texts: Sequence[str] = (), *, model_name: str = "bench-random", dim: int = DIM
    ) -> None:
        self.model_name = model_name
        self._dim = dim
        self._table = {t: text_vector(t, dim) for t in texts}

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return 256

    async def warm_up(self) -> None:
        return None

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._table.get(t) or text_vector(t, self._dim) for t in texts]

    def count_tokens(self, text: str) -> int:
        return approximate_token_count(text)

    @property
    def token_count_is_exact(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class BenchRuntime(Runtime):
    """The production Runtime with the embedder swapped for a :class:`TableEmbedder`."""

    table_embedder: TableEmbedder

    async def embedder(self) -> Embedder:
        return self.table_embedder


# -- corpus text ----------------------------------------------------------------------------


@dataclass(slots=True)
class TextSource:
    """A stream of words to cut chunk texts from, and questions to search with."""

    name: str
    words: list[str]
    questions: list[str]


def load_text_source(korquad: Path = KORQUAD) -> TextSource:
    """KorQuAD contexts (as one word stream) and questions, or generated Korean-like text."""
    if korquad.is_file():
        data = json.loads(korquad.read_text(encoding="utf-8"))
        words: list[str] = []
        questions: list[str] = []
        for article in data["data"]:
            for para in article["paragraphs"]:
                words += para["context"].split()
                questions += [qa["question"] for qa in para["qas"]]
        name = f"KorQuAD v1.0 dev contexts ({korquad.name})"
        return TextSource(name, words, list(dict.fromkeys(questions)))
    return _generated_source()


def _words(text: str) -> list[str]:
    return text.split()


def _generated_source() -> TextSource:
    rng = random.Random(SEED)
    nouns = _words(
        "회사 직원 휴가 연차 급여 보안 정책 계약 고객 데이터 시스템 서버 문서 결재 "
        "승인 예산 감사 교육 출장 규정 위원회 보고서 개인정보 접속 권한 장비 제품 "
        "품질 검사 일정"
    )
    verbs = _words(
        "부여한다 제출한다 승인한다 관리한다 보관한다 검토한다 신청한다 지급한다 점검한다 작성한다"
    )
    words: list[str] = []
    for _ in range(20_000):
        words += (
            f"{rng.choice(nouns)}의 {rng.choice(nouns)}는 {rng.choice(nouns)}에 따라 "
            f"{rng.randint(1, 30)}일 이내에 {rng.choice(nouns)}을 {rng.choice(verbs)}."
        ).split()
    questions = [
        f"{rng.choice(nouns)} {rng.choice(nouns)}은 언제 {rng.choice(verbs)[:-3]}나요?"
        for _ in range(2_000)
    ]
    return TextSource("generated Korean-like sentences (KorQuAD not found)", words, questions)


def token_counter() -> tuple[TokenCounter, str]:
    """The local embedding model's tokenizer (the chunker's measure in embedded mode), or the
    deliberate over-estimate when that model is not installed."""
    try:
        from llmflow.models.embedding._tokens import load_token_counter
        from llmflow.models.embedding.local import default_model_path

        return load_token_counter(default_model_path()), "all-MiniLM-L6-v2 tokenizer"
    except Exception:  # no local model: the approximation is documented as an over-estimate
        return approximate_token_count, "approximate token count"


def corpus_texts(
    n: int, words: Sequence[str], counts: Sequence[int], tokens: int
) -> Iterator[tuple[str, int]]:
    """``n`` (text, token count) windows of about ``tokens`` tokens over the word stream:
    back-to-back windows first (plain chunking of the source), then windows at every other
    start word in a seeded random order (overlapping, like chunk overlap, but distinct).
    Per-word token counts add up exactly for WordPiece, which splits at whitespace first."""
    total_words = len(words)

    def window(start: int) -> tuple[str, int, int]:
        parts: list[str] = []
        total = j = 0
        while total < tokens and j < total_words:
            c = counts[(start + j) % total_words]
            if parts and total + c - tokens > tokens - total:
                break  # closer to the target without this word
            parts.append(words[(start + j) % total_words])
            total += c
            j += 1
        return " ".join(parts), total, j

    produced = pos = 0
    taken: set[int] = set()
    while produced < n and pos < total_words:
        text, total, used = window(pos)
        taken.add(pos)
        pos += used
        produced += 1
        yield text, total
    rng = random.Random(SEED)
    while produced < n:
        offsets = [i for i in range(total_words) if i not in taken]
        rng.shuffle(offsets)
        for start in offsets[: n - produced]:
            text, total, _ = window(start)
            produced += 1
            yield text, total


# -- building the collection ----------------------------------------------------------------


@dataclass(slots=True)
class BuildInfo:
    size: int
    reused: bool
    seconds: float
    texts_s: float = 0.0
    analyse_s: float = 0.0
    insert_s: float = 0.0
    settle_s: float = 0.0
    avg_chars: float = 0.0
    avg_tokens: float = 0.0
    avg_terms: float = 0.0
    token_measure: str = ""
    text_source: str = ""
    collection: str = ""
    recipe: str = ""


def recipe(source: TextSource, tokens: int) -> str:
    """What decides the collection's content: a manifest with another recipe is rebuilt."""
    return f"word-windows-v1 tokens={tokens} seed={SEED} dim={DIM} source={source.name}"


def bench_settings(data_dir: Path, size: int) -> Settings:
    """Production settings with a data directory and collection name keyed by size."""
    return load_settings(
        data_dir=data_dir / f"n{size}",
        embedding={"model": f"bench-random-n{size}", "languages": ["multi"]},
    )


async def open_bench_runtime(settings: Settings, embedder: TableEmbedder) -> BenchRuntime:
    rt = await BenchRuntime.open(settings)
    assert isinstance(rt, BenchRuntime)  # Runtime.open builds ``cls``; it is typed as Runtime
    rt.table_embedder = embedder
    return rt


async def existing_build(rt: Runtime, size: int, recipe: str) -> BuildInfo | None:
    """The build of a previous run when it followed ``recipe`` and its collection still holds
    exactly ``size`` rows."""
    manifest = rt.settings.data_dir / MANIFEST
    if not manifest.is_file():
        return None
    info = BuildInfo(**json.loads(manifest.read_text(encoding="utf-8")))
    if info.recipe != recipe:
        return None
    kb = await rt.knowledge_bases.create(TENANT, KB_NAME, exist_ok=True)
    index = await rt.index()
    if await index.count(TENANT, [kb.id]) != size:
        return None
    info.reused = True
    return info


async def build_collection(
    rt: Runtime, size: int, source: TextSource, tokens: int, progress: Progress | None = None
) -> BuildInfo:
    """Fill the collection with ``size`` chunks through ChunkIndex.insert (production path)."""
    t0 = time.perf_counter()
    kb = await rt.knowledge_bases.create(TENANT, KB_NAME, exist_ok=True)
    index = await rt.index()
    analyzer = await rt.analyzer()
    count, measure = token_counter()
    per_word = {w: count(w) for w in set(source.words)}
    counts = [per_word[w] for w in source.words]
    texts_s = time.perf_counter() - t0
    analyse_s = insert_s = 0.0
    chars = toks = terms = 0
    gen = corpus_texts(size, source.words, counts, tokens)
    for start in range(0, size, BUILD_BATCH):
        t = time.perf_counter()
        pairs = [next(gen) for _ in range(min(BUILD_BATCH, size - start))]
        batch = [text for text, _ in pairs]
        toks += sum(n for _, n in pairs)
        vectors = unit_vectors(len(batch), SEED + start)
        texts_s += time.perf_counter() - t
        t = time.perf_counter()
        lexical = await asyncio.to_thread(analyzer.analyze_many, batch)
        analyse_s += time.perf_counter() - t
        chars += sum(len(x) for x in batch)
        terms += sum(len(x.split()) for x in lexical)
        records = [
            ChunkRecord(
                chunk_id=f"bench-{i:09d}",
                tenant_id=TENANT,
                kb_id=kb.id,
                document_id=f"doc-{i // 20:07d}",
                doc_version=1,
                chunk_index=i % 20,
                text=text,
                lexical=lex,
                dense=[float(x) for x in vec],
                title=source.name[:100],
                source=f"bench/doc-{i // 20:07d}.txt",
                page=None,
                section="",
                metadata={"document_name": f"bench/doc-{i // 20:07d}.txt", "language": "ko"},
            )
            for i, text, lex, vec in zip(
                range(start, start + len(batch)), batch, lexical, vectors, strict=True
            )
        ]
        t = time.perf_counter()
        await index.insert(records)
        insert_s += time.perf_counter() - t
        if progress:
            progress(f"build {size:,} chunks", start + len(batch), size)
    info = BuildInfo(
        size=size,
        reused=False,
        seconds=round(time.perf_counter() - t0, 2),
        texts_s=round(texts_s, 2),
        analyse_s=round(analyse_s, 2),
        insert_s=round(insert_s, 2),
        avg_chars=round(chars / size, 1),
        avg_tokens=round(toks / size, 1),
        avg_terms=round(terms / size, 1),
        token_measure=measure,
        text_source=source.name,
        collection=index.collection,
        recipe=recipe(source, tokens),
    )
    write_manifest(rt.settings, info)
    return info


def write_manifest(settings: Settings, info: BuildInfo) -> None:
    (settings.data_dir / MANIFEST).write_text(json.dumps(asdict(info)), encoding="utf-8")


async def settle(
    rt: BenchRuntime, settings: Settings, embedder: TableEmbedder
) -> tuple[BenchRuntime, float]:
    """Flush the collection, close and reopen it; returns the new runtime and the seconds.

    Milvus Lite keeps fresh rows in an in-memory memtable (up to 128 MiB) that every search
    scans and re-indexes: right after a 10k-chunk build a query took ~1.9 s instead of ~30 ms.
    Flushing writes segments; stopping Lite's in-process server waits for its background
    index build and compaction; reopening loads the persisted indexes — the state a reused
    collection is in."""
    t = time.perf_counter()
    index = await rt.index()
    await asyncio.to_thread(index.client.flush, index.collection)
    await rt.close()
    if "://" not in settings.milvus_uri:
        # Lite 3 serves in-process and outlives the client; stopping it drains its background
        # compaction and index build (public export of milvus_lite)
        from milvus_lite import server_manager_instance

        await asyncio.to_thread(server_manager_instance.release_server, settings.milvus_uri)
    rt = await open_bench_runtime(settings, embedder)
    kb = await rt.knowledge_bases.get(TENANT, KB_NAME)
    await (await rt.index()).count(TENANT, [kb.id])  # loads the collection
    return rt, round(time.perf_counter() - t, 2)


# -- the three search paths -----------------------------------------------------------------

SearchFn = Callable[[str], Awaitable[list[str]]]


@dataclass(slots=True)
class SearchPaths:
    """The three ways to answer one query; each returns the top-k chunk ids."""

    rt: Runtime
    index: ChunkIndex
    kb_id: str
    top_k: int
    limit: int
    rrf_k: int
    analysed: dict[str, str]
    vectors: dict[str, list[float]]
    principal: Principal = field(
        default_factory=lambda: Principal(
            tenant_id=TENANT, subject="bench", roles=frozenset({"reader"})
        )
    )
    ours_timings: list[dict[str, float]] = field(default_factory=list)

    async def ours(self, query: str) -> list[str]:
        resp = await self.rt.search.search(
            self.principal, [KB_NAME], query, top_k=self.top_k, mode="hybrid", rerank=False
        )
        self.ours_timings.append(resp.timings_ms)
        return [r.chunk_id for r in resp.results]

    def _one(self, field_name: str, data: Any) -> list[dict[str, Any]]:
        res = self.index.client.search(
            self.index.collection,
            data=[data],
            anns_field=field_name,
            filter=ChunkIndex.scope_filter(TENANT, [self.kb_id]),
            limit=self.limit,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "COSINE" if field_name == "dense" else "BM25"},
        )
        return list(res[0])

    async def raw_candidates(self, query: str) -> set[str]:
        """Chunk ids of both raw candidate lists (fusion left out)."""
        dense, sparse = await asyncio.gather(
            asyncio.to_thread(self._one, "dense", self.vectors[query]),
            asyncio.to_thread(self._one, "sparse", self.analysed[query]),
        )
        return {str(h["entity"]["chunk_id"]) for h in dense + sparse}

    async def raw_two(self, query: str) -> list[str]:
        dense, sparse = await asyncio.gather(
            asyncio.to_thread(self._one, "dense", self.vectors[query]),
            asyncio.to_thread(self._one, "sparse", self.analysed[query]),
        )
        scores: dict[str, float] = {}
        for hits in (dense, sparse):
            for rank, hit in enumerate(hits, start=1):
                cid = str(hit["entity"]["chunk_id"])
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (self.rrf_k + rank)
        return [cid for cid, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))][
            : self.top_k
        ]

    def _hybrid(self, query: str) -> list[str]:
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = ChunkIndex.scope_filter(TENANT, [self.kb_id])
        reqs = [
            AnnSearchRequest(
                data=[self.vectors[query]],
                anns_field="dense",
                param={"metric_type": "COSINE"},
                limit=self.limit,
                expr=expr,
            ),
            AnnSearchRequest(
                data=[self.analysed[query]],
                anns_field="sparse",
                param={"metric_type": "BM25"},
                limit=self.limit,
                expr=expr,
            ),
        ]
        res = self.index.client.hybrid_search(
            self.index.collection,
            reqs,
            RRFRanker(self.rrf_k),
            limit=self.top_k,
            output_fields=OUTPUT_FIELDS,
        )
        return [str(h["entity"]["chunk_id"]) for h in res[0]]

    async def raw_hybrid(self, query: str) -> list[str]:
        return await asyncio.to_thread(self._hybrid, query)


PATHS = ("ours", "raw_two", "raw_hybrid")


# -- measurement ----------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    from llmflow.eval.metrics import percentile as nearest_rank

    return nearest_rank(values, pct)


@dataclass(slots=True)
class Cell:
    """Latency and throughput of one path at one concurrency."""

    queries: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    qps: float
    wall_s: float
    capped: bool


async def measure(
    fn: SearchFn, queries: Sequence[str], concurrency: int, total: int, time_cap_s: float
) -> Cell:
    """``concurrency`` asyncio tasks pull queries until ``total`` ran or the cap passed
    (queries in flight at the cap still finish and count)."""
    latencies: list[float] = []
    issued = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() - start < time_cap_s:
            query = queries[issued % len(queries)]
            issued += 1
            t = time.perf_counter()
            await fn(query)
            latencies.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    n = len(latencies)
    return Cell(
        queries=n,
        p50_ms=round(percentile(latencies, 50), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        mean_ms=round(sum(latencies) / n, 2) if n else 0.0,
        qps=round(n / wall, 2) if wall > 0 else 0.0,
        wall_s=round(wall, 2),
        capped=n < total,
    )


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def mean_steps(timings: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each of SearchService's own step timings (``SearchResponse.timings_ms``)."""
    keys = sorted({k for t in timings for k in t})
    n = max(len(timings), 1)
    return {k: round(sum(t.get(k, 0.0) for t in timings) / n, 2) for k in keys}


async def agreement(paths: SearchPaths, queries: Sequence[str]) -> dict[str, Any]:
    """Do the paths do the same work? Ours must rank the same candidates the raw searches
    return; with ``retrieval.fusion=rrf`` its top-k must equal naive RRF's. Also checks that
    the naive RRF matches Lite's RRFRanker."""
    within = same_two = same_hybrid = raw_same = 0
    for q in queries:
        ours = await paths.ours(q)
        candidates = await paths.raw_candidates(q)
        two, hybrid = await paths.raw_two(q), await paths.raw_hybrid(q)
        within += set(ours) <= candidates
        same_two += ours == two
        same_hybrid += ours == hybrid
        raw_same += two == hybrid
    n = max(len(queries), 1)
    return {
        "queries": len(queries),
        "ours_fusion": paths.rt.settings.retrieval.fusion,
        "ours_topk_within_raw_candidates": round(within / n, 3),
        "raw_two_same_topk_as_ours": round(same_two / n, 3),
        "raw_hybrid_same_topk_as_ours": round(same_hybrid / n, 3),
        "raw_two_same_topk_as_raw_hybrid": round(raw_same / n, 3),
    }


async def bench_size(
    rt: Runtime,
    build: BuildInfo,
    queries: list[str],
    analysed: list[str],
    concurrency: Sequence[int],
    total: int,
    time_cap_s: float,
    top_k: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    settings = rt.settings.retrieval
    index = await rt.index()
    kb = await rt.knowledge_bases.get(TENANT, KB_NAME)
    paths = SearchPaths(
        rt=rt,
        index=index,
        kb_id=kb.id,
        top_k=top_k,
        limit=max(top_k * settings.candidate_factor, 20),
        rrf_k=settings.rrf_k,
        analysed=dict(zip(queries, analysed, strict=True)),
        vectors={q: text_vector(q) for q in queries},
    )
    fns: dict[str, SearchFn] = {
        "ours": paths.ours,
        "raw_two": paths.raw_two,
        "raw_hybrid": paths.raw_hybrid,
    }
    # warm-up (loads the collection, opens pools) and a like-for-like check of the results
    agree = await agreement(paths, queries[: min(5, len(queries))])
    rows: list[dict[str, Any]] = []
    steps = len(concurrency) * len(PATHS)
    for ci, c in enumerate(concurrency):
        cells: dict[str, Cell] = {}
        ours_steps: dict[str, float] = {}
        order = PATHS[ci % len(PATHS) :] + PATHS[: ci % len(PATHS)]  # no path always first
        for pi, name in enumerate(order):
            paths.ours_timings.clear()
            cells[name] = await measure(fns[name], queries, c, max(total, c), time_cap_s)
            if name == "ours":
                ours_steps = mean_steps(paths.ours_timings)
                # what SearchService's own clock does not see: the KB lookup in PostgreSQL
                # before it starts, building results after it stops, event-loop scheduling
                ours_steps["outside_total_ms"] = round(
                    cells[name].mean_ms - ours_steps.get("total_ms", 0.0), 2
                )
            if progress:
                progress(f"search {build.size:,}", ci * len(PATHS) + pi + 1, steps)
        ours, two, hyb = cells["ours"], cells["raw_two"], cells["raw_hybrid"]
        rows.append(
            {
                "concurrency": c,
                **{name: asdict(cell) for name, cell in cells.items()},
                "ours_mean_steps_ms": ours_steps,
                "ratio_ours_raw_two_p50": _ratio(ours.p50_ms, two.p50_ms),
                "ratio_ours_raw_two_qps": _ratio(ours.qps, two.qps),
                "ratio_ours_raw_hybrid_p50": _ratio(ours.p50_ms, hyb.p50_ms),
                "ratio_ours_raw_hybrid_qps": _ratio(ours.qps, hyb.qps),
                "ratio_raw_two_raw_hybrid_p50": _ratio(two.p50_ms, hyb.p50_ms),
            }
        )
    return {
        "size": build.size,
        "build": asdict(build),
        "agreement_top_k": agree,
        "results": rows,
    }


async def query_embedding_latency(queries: Sequence[str]) -> dict[str, Any] | None:
    """The real local embedder's query latency, measured on its own (it is excluded from
    the search paths above); None when the local model is not installed."""
    try:
        from llmflow.models.embedding import LocalEmbedder
    except ImportError:
        return None
    try:
        embedder = LocalEmbedder()
        await embedder.warm_up()
    except Exception as exc:  # not installed or not loadable: say so, don't fail the bench
        log.warning("local embedder unavailable: %s", exc)
        return None
    try:
        await embedder.embed_query(queries[0])
        latencies = []
        for q in queries:
            t = time.perf_counter()
            await embedder.embed_query(q)
            latencies.append((time.perf_counter() - t) * 1000)
    finally:
        await embedder.aclose()
    return {
        "model": embedder.model_name,
        "queries": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


@dataclass(slots=True)
class SearchBenchOptions:
    sizes: list[int]
    concurrency: list[int]
    queries: int
    data_dir: Path
    time_cap_s: float = 60.0
    top_k: int = 5
    tokens: int = 120
    embed_latency: bool = True


async def run_search_bench(
    opts: SearchBenchOptions, progress: Progress | None = None
) -> dict[str, Any]:
    """Build (or reuse) a collection per size and measure the three paths on it."""
    source = await asyncio.to_thread(load_text_source)
    queries = random.Random(SEED).sample(source.questions, min(opts.queries, len(source.questions)))
    embedder = TableEmbedder(queries)
    out: dict[str, Any] = {
        "vectors": VECTOR_NOTE,
        "text_source": source.name,
        "query_source": f"{len(queries)} questions sampled from {source.name}",
        "top_k": opts.top_k,
        "time_cap_s_per_cell": opts.time_cap_s,
        "executor_threads": min(32, (os.cpu_count() or 1) + 4),
        "cpu_count": os.cpu_count(),
        "sizes": [],
    }
    analysed: list[str] | None = None
    for size in opts.sizes:
        settings = bench_settings(opts.data_dir, size)
        rt: BenchRuntime | None = await open_bench_runtime(settings, embedder)
        try:
            assert rt is not None
            build = await existing_build(rt, size, recipe(source, opts.tokens))
            if build is None:  # stale or partial: release PostgreSQL and the Lite file, rebuild
                await rt.close()
                rt = None
                shutil.rmtree(settings.data_dir, ignore_errors=True)
                rt = await open_bench_runtime(settings, embedder)
                build = await build_collection(rt, size, source, opts.tokens, progress)
                rt, build.settle_s = await settle(rt, settings, embedder)
                write_manifest(settings, build)
            if analysed is None:
                analyzer = await rt.analyzer()
                analysed = await asyncio.to_thread(analyzer.analyze_many, queries)
            out["candidates_per_signal"] = max(opts.top_k * settings.retrieval.candidate_factor, 20)
            out["sizes"].append(
                await bench_size(
                    rt,
                    build,
                    queries,
                    analysed,
                    opts.concurrency,
                    opts.queries,
                    opts.time_cap_s,
                    opts.top_k,
                    progress,
                )
            )
        finally:
            if rt is not None:
                await rt.close()
        # a long run leaves what it has measured so far, size by size
        (opts.data_dir / LAST_RESULT).write_text(
            json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8"
        )
    out["query_embedding"] = await query_embedding_latency(queries) if opts.embed_latency else None
    (opts.data_dir / LAST_RESULT).write_text(
        json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return out
