"""The ingest pipeline: store original → partition → PII scan → chunk → embed → index.

Durability and consistency rules:
* the original is stored before a job is queued, so a worker can always redo the work;
* identical content in the same KB is not re-processed (idempotent by SHA-256);
* a changed document gets a new version: its chunks are written first, then the chunks of
  older versions are removed, so search never loses the document in between;
* a failure removes whatever this version wrote; older indexed versions stay searchable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.errors import InvalidRequest, NotFound
from llmflow.index.milvus import ChunkRecord
from llmflow.ingest.chunk import Chunker
from llmflow.ingest.elements import DocumentError, Element, FileTooLarge
from llmflow.storage.models import (
    Document,
    DocumentStatus,
    IngestJob,
    JobStatus,
    KnowledgeBase,
    new_id,
    utcnow,
)
from llmflow.storage.objectstore import ObjectStore, object_key

if TYPE_CHECKING:
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upload:
    """One file handed to ingestion: ``source`` is its identity inside the KB."""

    source: str
    data: bytes
    content_type: str | None = None


def job_view(job: IngestJob, doc: Document | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job_id": job.id,
        "document_id": job.document_id,
        "source": job.source,
        "status": job.status,
        "attempts": job.attempts,
        "error": {"reason": job.error_reason, "message": job.error_message}
        if job.error_reason
        else None,
        "stats": job.stats or {},
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if doc is not None:
        view["document_status"] = doc.status
    return view


def document_view(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "status": doc.status,
        "version": doc.version,
        "indexed_version": doc.indexed_version,
        "content_type": doc.content_type,
        "size_bytes": doc.size_bytes,
        "content_hash": doc.content_hash,
        "pages": doc.pages,
        "chunks": doc.chunk_count,
        "language": doc.language,
        "error": {"reason": doc.error_reason, "message": doc.error_message}
        if doc.error_reason
        else None,
        "pii": doc.pii_report,
        "updated_at": doc.updated_at.isoformat() if doc.updated_at else None,
    }


def normalise_source(name: str) -> str:
    """A relative POSIX path without '..' (file names arrive from browsers and CLIs)."""
    parts = [
        p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")
    ]
    if not parts:
        raise InvalidRequest(f"invalid file name {name!r}")
    return "/".join(parts)[:1024]


class IngestService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.rt.sessions

    @property
    def store(self) -> ObjectStore:
        return self.rt.object_store

    # -- submit -------------------------------------------------------------------------
    async def submit(
        self, tenant_id: str, kb_name: str, uploads: list[Upload]
    ) -> list[dict[str, Any]]:
        """Store originals and queue one job per file; returns the job views."""
        views: list[dict[str, Any]] = []
        to_defer: list[str] = []
        async with self.sessions() as session:
            kb = await self.rt.knowledge_bases.get_row(session, tenant_id, kb_name)
            for upload in uploads:
                job = await self._submit_one(session, kb, upload)
                await session.commit()
                if job.status == JobStatus.QUEUED:
                    to_defer.append(job.id)
                views.append(job_view(job))
        for job_id in to_defer:
            await self.rt.jobs.defer_ingest(job_id)
        return views

    async def _submit_one(
        self, session: AsyncSession, kb: KnowledgeBase, upload: Upload
    ) -> IngestJob:
        source = normalise_source(upload.source)
        digest = hashlib.sha256(upload.data).hexdigest()
        doc = (
            await session.execute(
                select(Document).where(Document.kb_id == kb.id, Document.source == source)
            )
        ).scalar_one_or_none()
        if (
            doc is not None
            and doc.content_hash == digest
            and doc.status
            in (DocumentStatus.INDEXED, DocumentStatus.QUEUED, DocumentStatus.PROCESSING)
        ):
            job = IngestJob(
                tenant_id=kb.tenant_id,
                kb_id=kb.id,
                document_id=doc.id,
                source=source,
                document_version=doc.version,
                status=JobStatus.SKIPPED,
                stats={"reason": "same content already ingested"},
                finished_at=utcnow(),
            )
            session.add(job)
            return job
        if doc is None:
            doc = Document(
                id=new_id(),
                tenant_id=kb.tenant_id,
                kb_id=kb.id,
                source=source,
                title=PurePosixPath(source).name,
                version=1,
                indexed_version=0,
                chunk_count=0,
                metadata_={},
            )
            session.add(doc)
        else:
            doc.version += 1
        doc.content_hash = digest
        doc.content_type = upload.content_type
        doc.size_bytes = len(upload.data)
        doc.object_key = object_key(kb.id, doc.id, doc.version, source)
        doc.error_reason = doc.error_message = None
        job = IngestJob(
            tenant_id=kb.tenant_id,
            kb_id=kb.id,
            document_id=doc.id,
            source=source,
            document_version=doc.version,
            status=JobStatus.QUEUED,
            stats={},
        )
        limit = self.rt.settings.ingest.max_file_bytes
        if len(upload.data) > limit:
            # refused before anything is stored; the rest of the upload carries on
            err = FileTooLarge(f"{source} is {len(upload.data):,} bytes; the limit is {limit:,}")
            self._fail(doc, job, err.reason, err.message)
        else:
            doc.status = DocumentStatus.QUEUED
            await self.store.put(kb.tenant_id, doc.object_key, upload.data)
        session.add(job)
        return job

    @staticmethod
    def _fail(doc: Document, job: IngestJob, reason: str, message: str) -> None:
        doc.status = DocumentStatus.FAILED
        doc.error_reason = job.error_reason = reason
        doc.error_message = job.error_message = message
        job.status = JobStatus.FAILED
        job.finished_at = utcnow()

    # -- process ------------------------------------------------------------------------
    async def process(self, job_id: str, final_attempt: bool = True) -> None:
        """Run one ingest job; raises on transient failure so the queue retries it."""
        async with self.sessions() as session:
            job = await session.get(IngestJob, job_id)
            if job is None or job.status in (JobStatus.SUCCEEDED, JobStatus.SKIPPED):
                return
            doc = await session.get(Document, job.document_id) if job.document_id else None
            if doc is None or doc.version != job.document_version:
                job.status = JobStatus.SKIPPED
                job.stats = {"reason": "superseded by a newer upload or deleted"}
                job.finished_at = utcnow()
                await session.commit()
                return
            job.status, job.started_at = JobStatus.RUNNING, utcnow()
            job.attempts += 1
            doc.status = DocumentStatus.PROCESSING
            await session.commit()
            try:
                kb = await session.get(KnowledgeBase, doc.kb_id)
                classification = kb.classification if kb is not None else "internal"
                stats = await self._index(doc, classification)
            except DocumentError as exc:
                await self._cleanup_version(doc)
                self._fail(doc, job, exc.reason, exc.message)
                await session.commit()
                log.info("document failed", extra={"source": doc.source, "reason": exc.reason})
                return
            except Exception as exc:
                await self._cleanup_version(doc)
                if final_attempt:
                    self._fail(
                        doc,
                        job,
                        "internal_error",
                        f"ingestion failed after {job.attempts} attempt(s): {exc}",
                    )
                else:
                    job.status, doc.status = JobStatus.QUEUED, DocumentStatus.QUEUED
                    job.error_message = str(exc)
                await session.commit()
                raise
            job.status, job.finished_at, job.stats = JobStatus.SUCCEEDED, utcnow(), stats
            job.error_reason = job.error_message = None
            doc.status = DocumentStatus.INDEXED
            doc.indexed_version = doc.version
            await session.commit()

    async def _cleanup_version(self, doc: Document) -> None:
        try:
            index = await self.rt.index()
            await index.delete_document(
                doc.tenant_id, doc.id, keep_version=doc.indexed_version or -1
            )
        except Exception:  # the original failure matters more; the retry cleans again
            log.exception("cleanup of a failed version failed", extra={"document": doc.id})

    async def _index(self, doc: Document, classification: str) -> dict[str, Any]:
        from llmflow.ingest.partition import partition

        rt, settings = self.rt, self.rt.settings
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        data = await self.store.get(doc.tenant_id, doc.object_key)
        elements: list[Element] = await asyncio.to_thread(
            partition,
            data,
            doc.source,
            content_type=doc.content_type,
            max_bytes=settings.ingest.max_file_bytes,
            ocr_languages=settings.ingest.ocr_languages,
            ocr_min_text_chars=settings.ingest.ocr_min_text_chars,
        )
        timings["partition_s"] = time.perf_counter() - t0

        t = time.perf_counter()
        if settings.ingest.pii_scan:
            from llmflow.ingest.pii import apply_pii_policy

            guard = await rt.pii_guard()
            elements, report = await asyncio.to_thread(
                apply_pii_policy, guard, elements, doc.tenant_id, classification
            )
            doc.pii_report = report.to_dict()
        timings["pii_s"] = time.perf_counter() - t

        t = time.perf_counter()
        embedder = await rt.embedder()
        # leave room for the title/section header that is embedded with every chunk
        budget = min(settings.ingest.chunk_tokens, embedder.max_tokens - 48)
        chunker = Chunker(
            embedder.count_tokens, budget, min(settings.ingest.chunk_overlap_tokens, budget // 3)
        )
        chunks = await asyncio.to_thread(chunker.split, elements, doc.id, doc.version)
        timings["chunk_s"] = time.perf_counter() - t
        if not chunks:
            from llmflow.ingest.elements import EmptyDocument

            raise EmptyDocument(f"{doc.source} contains no indexable text")

        title = _document_title(elements, doc.source)
        headers = [_header(title, c.section) for c in chunks]
        t = time.perf_counter()
        analyzer = await rt.analyzer()
        texts = [f"{h}\n{c.text}" for h, c in zip(headers, chunks, strict=True)]
        phrases: list[list[str]] = []
        if settings.graph.enabled:  # one Kiwi pass also yields the graph's noun phrases
            analysed = await asyncio.to_thread(
                analyzer.analyze_with_phrases, texts, [len(h) + 1 for h in headers]
            )
            lexical, phrases = [a for a, _ in analysed], [p for _, p in analysed]
        else:
            lexical = await asyncio.to_thread(analyzer.analyze_many, texts)
        # A whole table repeats its column values ("유급", "30일 이내") row after row: that
        # term frequency says nothing about the table's topic but its length buries the one
        # row a query names under BM25's length normalisation. Index each term once.
        lexical = [
            " ".join(dict.fromkeys(lex.split())) if c.table_html is not None else lex
            for c, lex in zip(chunks, lexical, strict=True)
        ]
        timings["lexical_s"] = time.perf_counter() - t

        t = time.perf_counter()
        vectors = await embedder.embed_documents(
            [f"{h}\n{c.text}" for h, c in zip(headers, chunks, strict=True)]
        )
        timings["embed_s"] = time.perf_counter() - t

        languages = Counter(e.language for e in elements if e.language)
        doc.language = languages.most_common(1)[0][0] if languages else None
        pages = {e.page for e in elements if e.page is not None}
        doc.pages = max(pages) if pages else None
        doc.title = title
        records = [
            ChunkRecord(
                chunk_id=c.chunk_id,
                tenant_id=doc.tenant_id,
                kb_id=doc.kb_id,
                document_id=doc.id,
                doc_version=doc.version,
                chunk_index=c.index,
                text=c.text,
                lexical=lex,
                dense=vec,
                title=title,
                source=doc.source,
                page=c.page,
                section=c.section,
                metadata={
                    "document_name": doc.source,
                    "content_type": doc.content_type,
                    "language": doc.language,
                    "element_types": c.element_types,
                    "table_html": c.table_html,
                    "tokens": c.token_count,
                    **{k: v for k, v in (doc.metadata_ or {}).items() if isinstance(k, str)},
                },
            )
            for c, lex, vec in zip(chunks, lexical, vectors, strict=True)
        ]
        t = time.perf_counter()
        index = await rt.index()
        await index.insert(records)
        timings["index_s"] = time.perf_counter() - t
        graph_stats: dict[str, Any] = {}
        if settings.graph.enabled:
            # replaces the previous version's subgraph atomically; a failure here leaves the
            # old graph and the old chunks in place (the new chunks are cleaned up)
            graph_stats = await rt.graph.index_document(
                tenant_id=doc.tenant_id,
                kb_id=doc.kb_id,
                document_id=doc.id,
                title=title,
                chunks=chunks,
                phrases=phrases,
                topics=_topics(doc.metadata_ or {}),
            )
        if doc.version > 1:  # a first version has no older chunks to replace
            await index.delete_document(doc.tenant_id, doc.id, keep_version=doc.version)
        doc.chunk_count = len(records)
        return {
            "elements": len(elements),
            "chunks": len(records),
            "pages": doc.pages,
            **{k: round(v, 4) for k, v in timings.items()},
            **graph_stats,
        }

    # -- delete -------------------------------------------------------------------------
    async def delete_document(self, tenant_id: str, kb_name: str, document_id: str) -> None:
        """Remove a document from every store: index, object store, metadata."""
        async with self.sessions() as session:
            kb = await self.rt.knowledge_bases.get_row(session, tenant_id, kb_name)
            doc = await session.get(Document, document_id)
            if doc is None or doc.kb_id != kb.id or doc.tenant_id != tenant_id:
                raise NotFound(f"document {document_id!r} does not exist in {kb_name!r}")
            index = await self.rt.index()
            await index.delete_document(tenant_id, doc.id)
            if self.rt.settings.graph.enabled:
                await self.rt.graph.delete_document(tenant_id, kb.id, doc.id)
            await self.store.delete_prefix(tenant_id, f"kb/{kb.id}/{doc.id}/")
            await session.delete(doc)
            await session.commit()

    async def delete_kb(self, tenant_id: str, kb_name: str) -> None:
        async with self.sessions() as session:
            kb = await self.rt.knowledge_bases.get_row(session, tenant_id, kb_name)
            index = await self.rt.index()
            await index.delete_kb(tenant_id, kb.id)
            await self.rt.graph.delete_kb(tenant_id, kb.id)
            await self.store.delete_prefix(tenant_id, f"kb/{kb.id}/")
            await session.delete(kb)
            await session.commit()

    # -- read ---------------------------------------------------------------------------
    async def jobs(self, tenant_id: str, job_ids: list[str]) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(IngestJob, Document)
                    .outerjoin(Document, Document.id == IngestJob.document_id)
                    .where(IngestJob.id.in_(job_ids), IngestJob.tenant_id == tenant_id)
                )
            ).all()
            found = {job.id: job_view(job, doc) for job, doc in rows}
        return [found[j] for j in job_ids if j in found]

    async def documents(self, tenant_id: str, kb_name: str) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            kb = await self.rt.knowledge_bases.get_row(session, tenant_id, kb_name)
            rows = (
                (
                    await session.execute(
                        select(Document).where(Document.kb_id == kb.id).order_by(Document.source)
                    )
                )
                .scalars()
                .all()
            )
            return [document_view(d) for d in rows]

    async def document(self, tenant_id: str, kb_name: str, document_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            kb = await self.rt.knowledge_bases.get_row(session, tenant_id, kb_name)
            doc = await session.get(Document, document_id)
            if doc is None or doc.kb_id != kb.id:
                raise NotFound(f"document {document_id!r} does not exist in {kb_name!r}")
            return document_view(doc)


def _topics(metadata: dict[str, Any]) -> list[str]:
    """Topics a document declares in its metadata (``topic``, ``category``, ``tags``)."""
    out: list[str] = []
    for key in ("topic", "category", "tags"):
        value = metadata.get(key)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [v for v in value if isinstance(v, str)]
    return out[:10]


def _document_title(elements: list[Element], source: str) -> str:
    for el in elements[:20]:
        if el.type == "Title" and 2 <= len(el.text.strip()) <= 200:
            return el.text.strip()
    return PurePosixPath(source).name


def _header(title: str, section: str) -> str:
    return f"{title} — {section}" if section and section != title else title
