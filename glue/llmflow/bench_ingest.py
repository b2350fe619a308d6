"""`llmflow bench ingest`: ingest throughput through the real pipeline, and without it.

* ``pipeline`` — files go through ``ingest_paths`` (object store, PostgreSQL jobs, partition,
  PII, chunk, Kiwi, the configured embedder, Milvus) into a fresh tenant/KB per repeat; the
  per-job ``stats`` give the time of every stage. Models are loaded before the clock starts.
  The temporary KBs are deleted afterwards.
* ``in_process`` — ``partition()`` + ``Chunker`` + ``KoreanAnalyzer`` called directly on the
  PDFs (no database, no embedding, no index): the clean pages/s of the text path.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow.settings import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CORPUS = REPO / "platform" / "samples" / "corpus"
OFFICE = REPO.parent / "shared" / "datasets" / "documents" / "office"
TEXT_PDFS = (
    "pdf_korean-text-with-tables.pdf",
    "pdf_layout-parser-paper-fast.pdf",
    "pdf_multi-column-2p.pdf",
    "pdf_DA-1p.pdf",
)
STAGES = ("partition_s", "pii_s", "chunk_s", "lexical_s", "embed_s", "index_s")
TEXT_STAGES = ("partition_s", "chunk_s", "lexical_s")
PAGES_TARGET = 20.0  # text-PDF pages/s through partition → chunk → lexical on 2 cores


def default_paths() -> list[Path]:
    """The sample corpus plus the text PDFs of the shared document set, where present."""
    paths = [SAMPLE_CORPUS] if SAMPLE_CORPUS.is_dir() and any(SAMPLE_CORPUS.iterdir()) else []
    return paths + [OFFICE / name for name in TEXT_PDFS if (OFFICE / name).is_file()]


def _rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


def _is_pdf(source: str) -> bool:
    return source.lower().endswith(".pdf")


# -- through the real pipeline ----------------------------------------------------------------


async def warm_up(rt: Any, tenant: str, paths: list[Path], created: list[str]) -> float:
    """Ingest the inputs once, untimed, into a throwaway KB: loads every model and imports
    every partitioner, so that no timed stage contains a first-use cost."""
    from llmflow.cli import ingest_paths

    t = time.perf_counter()
    await rt.knowledge_bases.create(tenant, "warm-up")
    created.append("warm-up")
    await ingest_paths(
        rt, tenant, "warm-up", paths, wait=True, show_progress=False, create_kb=False
    )
    return round(time.perf_counter() - t, 2)


def summarise_jobs(jobs: Sequence[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Throughput and per-stage totals over finished ingest jobs."""
    ok = [j for j in jobs if j["status"] == "succeeded"]
    stats = [j.get("stats") or {} for j in ok]
    totals = {s: round(sum(float(x.get(s) or 0.0) for x in stats), 3) for s in STAGES}
    stage_sum = sum(totals.values())
    pages = sum(int(x.get("pages") or 0) for x in stats)
    chunks = sum(int(x.get("chunks") or 0) for x in stats)
    pdf = [j.get("stats") or {} for j in ok if _is_pdf(j["source"])]
    pdf_pages = sum(int(x.get("pages") or 0) for x in pdf)
    pdf_text_s = sum(float(x.get(s) or 0.0) for x in pdf for s in TEXT_STAGES)
    pdf_all_s = sum(float(x.get(s) or 0.0) for x in pdf for s in STAGES)
    return {
        "files": len(jobs),
        "succeeded": len(ok),
        "failed": [
            {"source": j["source"], "error": j.get("error")}
            for j in jobs
            if j["status"] == "failed"
        ],
        "skipped": sum(1 for j in jobs if j["status"] == "skipped"),
        "pages": pages,
        "chunks": chunks,
        "wall_s": round(wall_s, 3),
        "end_to_end_pages_per_s": _rate(pages, wall_s),
        "end_to_end_chunks_per_s": _rate(chunks, wall_s),
        "end_to_end_files_per_s": _rate(len(ok), wall_s),
        "stage_totals_s": totals,
        "stage_sum_s": round(stage_sum, 3),
        "embed_share": round(totals["embed_s"] / stage_sum, 3) if stage_sum else None,
        "pdf_pages": pdf_pages,
        "pdf_text_path_s": round(pdf_text_s, 3),
        "pdf_text_path_pages_per_s": _rate(pdf_pages, pdf_text_s),
        "pdf_all_stages_s": round(pdf_all_s, 3),
        "pdf_all_stages_pages_per_s": _rate(pdf_pages, pdf_all_s),
    }


def per_file(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Mean stage times per source over the repeats."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for jobs in runs:
        for j in jobs:
            by_source.setdefault(j["source"], []).append(j)
    rows = []
    for source, jobs in by_source.items():
        ok = [j.get("stats") or {} for j in jobs if j["status"] == "succeeded"]
        row: dict[str, Any] = {
            "source": source,
            "status": jobs[-1]["status"],
            "pages": ok[-1].get("pages") if ok else None,
            "chunks": ok[-1].get("chunks") if ok else None,
        }
        for s in STAGES:
            row[s] = round(sum(float(x.get(s) or 0.0) for x in ok) / len(ok), 4) if ok else None
        if not ok:
            row["error"] = (jobs[-1].get("error") or {}).get("message")
        rows.append(row)
    return rows


async def pipeline_bench(
    rt: Any, paths: list[Path], repeat: int, warm: bool = True
) -> dict[str, Any]:
    """Ingest ``paths`` ``repeat`` times, each into a fresh KB of a fresh tenant (after one
    untimed warm-up ingest); the KBs are deleted afterwards whatever happens."""
    from llmflow.cli import ingest_paths

    tenant = f"bench-{secrets.token_hex(4)}"
    created: list[str] = []
    runs: list[list[dict[str, Any]]] = []
    walls: list[float] = []
    warm_s = 0.0
    try:
        if warm:
            warm_s = await warm_up(rt, tenant, paths, created)
        for i in range(repeat):
            kb = f"run-{i}"
            await rt.knowledge_bases.create(tenant, kb)
            created.append(kb)
            t = time.perf_counter()
            jobs = await ingest_paths(
                rt, tenant, kb, paths, wait=True, show_progress=True, create_kb=False
            )
            walls.append(time.perf_counter() - t)
            runs.append(jobs)
    finally:
        for kb in created:
            try:
                await rt.ingest.delete_kb(tenant, kb)
            except Exception:  # report the bench result; a leftover KB is logged
                log.exception("could not delete temporary KB %s/%s", tenant, kb)
    embedder = await rt.embedder()
    summary = summarise_jobs([j for jobs in runs for j in jobs], sum(walls))
    return {
        "tenant": tenant,
        "repeat": repeat,
        "warm_up_s": warm_s,
        "embedder": f"{rt.settings.embedding.provider}:{embedder.model_name}",
        "pii_scan": rt.settings.ingest.pii_scan,
        "run_walls_s": [round(w, 3) for w in walls],
        "cleaned_up": True,
        **summary,
        "per_file": per_file(runs),
    }


# -- in process: partition → chunk → lexical ----------------------------------------------------


@dataclass(slots=True)
class _FileRun:
    source: str
    pages: int
    chunks: int
    partition_s: float
    chunk_s: float
    lexical_s: float


def _text_path_once(
    data: bytes, name: str, settings: Settings, counter: Any, analyzer: Any, budget: int
) -> _FileRun:
    from llmflow.ingest.chunk import Chunker
    from llmflow.ingest.partition import partition

    t = time.perf_counter()
    elements = partition(
        data,
        name,
        content_type=None,
        max_bytes=settings.ingest.max_file_bytes,
        ocr_languages=settings.ingest.ocr_languages,
        ocr_min_text_chars=settings.ingest.ocr_min_text_chars,
    )
    partition_s = time.perf_counter() - t
    t = time.perf_counter()
    chunker = Chunker(counter, budget, min(settings.ingest.chunk_overlap_tokens, budget // 3))
    chunks = chunker.split(elements, "bench", 1)
    chunk_s = time.perf_counter() - t
    t = time.perf_counter()
    analyzer.analyze_many([f"{name}\n{c.text}" for c in chunks])
    lexical_s = time.perf_counter() - t
    pages = {e.page for e in elements if e.page is not None}
    return _FileRun(name, max(pages) if pages else 0, len(chunks), partition_s, chunk_s, lexical_s)


def in_process_bench(files: Sequence[Path], settings: Settings, repeat: int) -> dict[str, Any]:
    """``partition()`` + ``Chunker`` + ``KoreanAnalyzer`` on ``files``, ``repeat`` times after
    one untimed warm-up pass (imports, Kiwi's model, font caches)."""
    from llmflow.bench_search import token_counter
    from llmflow.index.lexical import KoreanAnalyzer

    t = time.perf_counter()
    counter, measure = token_counter()
    analyzer = KoreanAnalyzer()
    budget = min(settings.ingest.chunk_tokens, 256 - 48)  # the pipeline's budget for MiniLM
    blobs = [(f.name, f.read_bytes()) for f in files]
    for name, data in blobs:
        _text_path_once(data, name, settings, counter, analyzer, budget)
    warm_s = time.perf_counter() - t
    runs = [
        _text_path_once(data, name, settings, counter, analyzer, budget)
        for _ in range(repeat)
        for name, data in blobs
    ]
    pages = sum(r.pages for r in runs)
    total = {s: round(sum(getattr(r, s) for r in runs), 3) for s in TEXT_STAGES}
    seconds = sum(total.values())
    files_out = []
    for name, _ in blobs:
        mine = [r for r in runs if r.source == name]
        secs = sum(r.partition_s + r.chunk_s + r.lexical_s for r in mine)
        files_out.append(
            {
                "source": name,
                "pages": mine[0].pages,
                "chunks": mine[0].chunks,
                **{s: round(sum(getattr(r, s) for r in mine) / len(mine), 4) for s in TEXT_STAGES},
                "pages_per_s": _rate(sum(r.pages for r in mine), secs),
            }
        )
    return {
        "files": len(blobs),
        "repeat": repeat,
        "warm_up_s": round(warm_s, 2),
        "token_measure": measure,
        "chunk_budget_tokens": budget,
        "pages": pages,
        "chunks": sum(r.chunks for r in runs),
        "stage_totals_s": total,
        "seconds": round(seconds, 3),
        "pages_per_s": _rate(pages, seconds),
        "target_pages_per_s": PAGES_TARGET,
        "per_file": files_out,
    }


def collect_files(paths: Sequence[Path]) -> list[Path]:
    from llmflow.cli import iter_files

    return [f for f, _ in iter_files(list(paths))]
