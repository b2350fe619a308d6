"""`llmflow eval retrieval`: the dataset's corpus through the real ingest pipeline into an
isolated temporary knowledge base, every query through the real search path.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmflow.auth.apikeys import Principal
from llmflow.eval.datasets import RetrievalDataset
from llmflow.eval.metrics import all_gold_at, mrr_at, ndcg_at, percentile, recall_at
from llmflow.ingest.pipeline import Upload, normalise_source

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmflow.runtime import Runtime

CHUNK_DEPTH = 50  # chunks fetched per query, deduplicated to documents


@dataclass
class ModeReport:
    mode: str
    queries: int
    recall: dict[int, float]
    all_gold: dict[int, float]
    """Share of queries with every gold document in the top k (multi-gold datasets)."""
    mrr10: float
    ndcg10: float
    latency_p50_ms: float
    latency_p99_ms: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "queries": self.queries,
            **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
            **{f"all_gold@{k}": round(v, 4) for k, v in self.all_gold.items()},
            "mrr@10": round(self.mrr10, 4),
            "ndcg@10": round(self.ndcg10, 4),
            "latency_p50_ms": round(self.latency_p50_ms, 1),
            "latency_p99_ms": round(self.latency_p99_ms, 1),
        }


@dataclass
class EvalReport:
    dataset: str
    corpus_docs: int
    ingest_seconds: float
    chunks: int
    failed_docs: int
    modes: list[ModeReport]
    graph_cost: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "corpus_docs": self.corpus_docs,
            "chunks": self.chunks,
            "failed_docs": self.failed_docs,
            "ingest_seconds": round(self.ingest_seconds, 2),
            "ingest_docs_per_s": round(self.corpus_docs / self.ingest_seconds, 2)
            if self.ingest_seconds
            else None,
            "ingest_chunks_per_s": round(self.chunks / self.ingest_seconds, 2)
            if self.ingest_seconds
            else None,
            "modes": [m.summary() for m in self.modes],
            **({"graph_build": self.graph_cost} if self.graph_cost else {}),
        }


def _doc_source(doc_id: str) -> str:
    return normalise_source(f"{doc_id.replace('/', '_')}.md")


def _doc_body(title: str, text: str) -> bytes:
    return (f"# {title}\n\n{text}\n" if title else f"{text}\n").encode("utf-8")


async def ingest_corpus(
    rt: Runtime,
    tenant: str,
    kb: str,
    ds: RetrievalDataset,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int, int, dict[str, float]]:
    """Returns (seconds, chunks, failed documents, graph build cost)."""
    await rt.knowledge_bases.create(tenant, kb, exist_ok=True)
    start = time.perf_counter()
    ids: list[str] = []
    items = list(ds.corpus.items())
    for i in range(0, len(items), 200):
        uploads = [
            Upload(_doc_source(d), _doc_body(t, x), "text/markdown")
            for d, (t, x) in items[i : i + 200]
        ]
        ids += [j["job_id"] for j in await rt.ingest.submit(tenant, kb, uploads)]
    jobs = await rt.jobs.wait(tenant, ids, progress, poll_s=0.5)
    seconds = time.perf_counter() - start
    chunks = sum(int((j.get("stats") or {}).get("chunks", 0)) for j in jobs)
    failed = sum(1 for j in jobs if j["status"] == "failed")
    return seconds, chunks, failed, graph_cost(jobs, chunks)


def graph_cost(jobs: list[dict[str, Any]], chunks: int) -> dict[str, float]:
    """Graph build cost over the ingested chunks, per 1,000 chunks: seconds (extraction,
    store writes, entity vectors) and, with LLM extraction on, calls and tokens."""
    keys = (
        "graph_s", "graph_extract_s", "graph_vectors_s", "graph_llm_calls",
        "graph_llm_prompt_tokens", "graph_llm_completion_tokens", "graph_llm_triplets",
    )  # fmt: skip
    sums = {k: 0.0 for k in keys}
    for j in jobs:
        stats = j.get("stats") or {}
        for k in keys:
            sums[k] += float(stats.get(k) or 0.0)
    if not chunks or not sums["graph_s"]:
        return {}
    per = 1000 / chunks
    return {f"{k}_per_1000_chunks": round(v * per, 3) for k, v in sums.items() if v}


async def evaluate_mode(
    rt: Runtime,
    principal: Principal,
    kb: str,
    ds: RetrievalDataset,
    mode: str,
    ks: list[int],
    progress: Callable[[int, int], None] | None = None,
) -> ModeReport:
    source_to_doc = {_doc_source(d): d for d in ds.corpus}
    latencies: list[float] = []
    rows: list[dict[str, Any]] = []
    sums = {k: 0.0 for k in ks}
    gold = {k: 0.0 for k in ks}
    mrr = ndcg = 0.0
    qids = [q for q in ds.queries if ds.qrels.get(q)]
    for n, qid in enumerate(qids, start=1):
        query = ds.queries[qid]
        relevant = set(ds.qrels[qid])
        t = time.perf_counter()
        resp = await rt.search.search(
            principal,
            [kb],
            query,
            top_k=CHUNK_DEPTH,
            mode=mode,  # type: ignore[arg-type]
            rerank=True,
        )
        latencies.append((time.perf_counter() - t) * 1000)
        ranked: list[str] = []
        for r in resp.results:
            doc = source_to_doc.get(r.source)
            if doc and doc not in ranked:
                ranked.append(doc)
        row = {
            "qid": qid,
            "query": query,
            "mode": mode,
            "relevant": sorted(relevant),
            "retrieved": ranked[:10],
            "latency_ms": round(latencies[-1], 2),
        }
        for k in ks:
            v = recall_at(ranked, relevant, k)
            sums[k] += v
            row[f"recall@{k}"] = v
            a = all_gold_at(ranked, relevant, k)
            gold[k] += a
            row[f"all_gold@{k}"] = a
        m, g = mrr_at(ranked, relevant, 10), ndcg_at(ranked, relevant, 10)
        mrr += m
        ndcg += g
        row["mrr@10"], row["ndcg@10"] = m, g
        rows.append(row)
        if progress:
            progress(n, len(qids))
    count = max(len(qids), 1)
    return ModeReport(
        mode,
        len(qids),
        {k: v / count for k, v in sums.items()},
        {k: v / count for k, v in gold.items()},
        mrr / count,
        ndcg / count,
        percentile(latencies, 50),
        percentile(latencies, 99),
        rows,
    )


async def run_eval(
    rt: Runtime,
    ds: RetrievalDataset,
    modes: list[str],
    ks: list[int],
    progress: Callable[[str, int, int], None] | None = None,
    keep: bool = False,
) -> EvalReport:
    """Ingest into a fresh tenant/KB, evaluate each mode, then remove everything again."""
    tenant, kb = f"eval-{secrets.token_hex(4)}", "eval"
    principal = Principal(tenant_id=tenant, subject="eval", roles=frozenset({"reader"}))
    try:
        seconds, chunks, failed, graph = await ingest_corpus(
            rt, tenant, kb, ds, (lambda d, t: progress("ingest", d, t)) if progress else None
        )
        reports = []
        for mode in modes:
            reports.append(
                await evaluate_mode(
                    rt, principal, kb, ds, mode, ks, _scoped(progress, f"query {mode}")
                )
            )
        return EvalReport(ds.name, len(ds.corpus), seconds, chunks, failed, reports, graph)
    finally:
        if not keep:
            await rt.ingest.delete_kb(tenant, kb)


def _scoped(
    progress: Callable[[str, int, int], None] | None, name: str
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(name, done, total)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-query rows as JSONL, CSV or Parquet, chosen by the file extension."""
    import json

    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    flat = [
        {
            k: json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v
            for k, v in row.items()
        }
        for row in rows
    ]
    if suffix == ".csv":
        import csv

        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(flat[0]) if flat else ["qid"])
            writer.writeheader()
            writer.writerows(flat)
        return
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(flat), path)
        return
    from llmflow.errors import InvalidRequest

    raise InvalidRequest(f"unsupported output format {suffix!r}: use .jsonl, .csv or .parquet")
