"""Chunk index in Milvus (server or Lite): dense + BM25 sparse fields, partition key tenant.

One collection per embedding schema (model + dimension). Every query carries the tenant
filter built here from a parameterised template; callers never hand in filter strings.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymilvus import DataType, Function, FunctionType, MilvusClient

from llmflow.settings import Settings

TEXT_MAX_BYTES = 65_535
OUTPUT_FIELDS = [
    "chunk_id",
    "tenant_id",
    "kb_id",
    "document_id",
    "doc_version",
    "chunk_index",
    "text",
    "title",
    "source",
    "page",
    "section",
    "metadata",
]


@dataclass(slots=True)
class ChunkRecord:
    """One row of the chunk index."""

    chunk_id: str
    tenant_id: str
    kb_id: str
    document_id: str
    doc_version: int
    chunk_index: int
    text: str
    lexical: str
    dense: list[float]
    title: str
    source: str
    page: int | None
    section: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "tenant_id": self.tenant_id,
            "kb_id": self.kb_id,
            "document_id": self.document_id,
            "doc_version": self.doc_version,
            "chunk_index": self.chunk_index,
            "text": _truncate_bytes(self.text),
            "lexical": _truncate_bytes(self.lexical),
            "dense": self.dense,
            "title": _truncate_bytes(self.title, 1024),
            "source": _truncate_bytes(self.source, 1024),
            "page": -1 if self.page is None else self.page,
            "section": _truncate_bytes(self.section, 2048),
            "metadata": self.metadata,
        }


@dataclass(slots=True)
class Hit:
    """A search hit from one signal; ``score`` is the raw engine score."""

    chunk_id: str
    score: float
    fields: dict[str, Any]


def _truncate_bytes(text: str, limit: int = TEXT_MAX_BYTES) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def _literal(value: str) -> str:
    """A Milvus string literal for an identifier (tenant, KB or document id)."""
    if not _IDENT.fullmatch(value):
        raise ValueError(f"not a valid identifier for an index filter: {value!r}")
    return f'"{value}"'


def collection_name(prefix: str, model: str, dim: int | None = None) -> str:
    """One collection per embedding schema: model and dimension (the dimension is known only
    once the embedder has answered; without it, the name's model part)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", model).strip("_").lower()
    return (f"{prefix}_{slug}" + (f"_{dim}" if dim else ""))[:255]


class ChunkIndex:
    """Async façade over a (sync, thread-safe) MilvusClient."""

    def __init__(self, settings: Settings, dim: int, model: str) -> None:
        token = settings.milvus.token.get_secret_value() if settings.milvus.token else ""
        uri = settings.milvus_uri
        if "://" not in uri:  # Milvus Lite file: its folder must exist
            from pathlib import Path

            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri=uri, token=token)
        # Milvus Lite (a local file) scans rows of its growing segment one by one, ~50x slower
        # than a sealed, indexed segment: seal it every few hundred rows and when ingestion
        # goes idle. A Milvus server seals segments itself; explicit flushes only hurt it.
        self.is_lite = "://" not in uri
        self._flush_rows = settings.milvus.lite_flush_rows
        self._unflushed = 0
        self.dim = dim
        self.collection = collection_name(settings.milvus.collection_prefix, model, dim)
        self._num_partitions = settings.milvus.num_partitions
        self._ready = False
        self._lock = threading.Lock()

    # -- schema -------------------------------------------------------------------------
    def _ensure_collection(self) -> None:
        with self._lock:
            if self._ready:
                return
            if not self.client.has_collection(self.collection):
                self._create()
            self.client.load_collection(self.collection)
            self._ready = True

    def _create(self) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("kb_id", DataType.VARCHAR, max_length=32)
        schema.add_field("document_id", DataType.VARCHAR, max_length=32)
        schema.add_field("doc_version", DataType.INT64)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
        schema.add_field(
            "lexical",
            DataType.VARCHAR,
            max_length=TEXT_MAX_BYTES,
            enable_analyzer=True,
            analyzer_params={"type": "standard"},
        )
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("page", DataType.INT64)
        schema.add_field("section", DataType.VARCHAR, max_length=2048)
        schema.add_field("metadata", DataType.JSON)
        schema.add_function(
            Function(
                name="lexical_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["lexical"],
                output_field_names=["sparse"],
            )
        )
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
        index.add_index(
            "sparse",
            index_type="SPARSE_INVERTED_INDEX",
            metric_type="BM25",
            params={"inverted_index_algo": "DAAT_MAXSCORE"},
        )
        self.client.create_collection(
            self.collection,
            schema=schema,
            index_params=index,
            num_partitions=self._num_partitions,
        )

    # -- filters ------------------------------------------------------------------------
    @staticmethod
    def scope_filter(
        tenant_id: str, kb_ids: Sequence[str] | None = None, document_id: str | None = None
    ) -> str:
        """The tenant filter (always) plus optional KB / document restriction.

        Milvus Lite has no expression templates (``filter_params``), so values are rendered
        here — only after they pass a strict identifier check, so no caller-controlled text
        can ever change the expression's structure.
        """
        expr = f"tenant_id == {_literal(tenant_id)}"
        if kb_ids is not None:
            expr += f" and kb_id in [{', '.join(_literal(k) for k in kb_ids)}]"
        if document_id is not None:
            expr += f" and document_id == {_literal(document_id)}"
        return expr

    # -- writes -------------------------------------------------------------------------
    def _insert(self, records: Sequence[ChunkRecord]) -> None:
        self._ensure_collection()
        rows = [r.to_row() for r in records]
        for start in range(0, len(rows), 500):
            self.client.upsert(self.collection, rows[start : start + 500])
        with self._lock:
            self._unflushed += len(rows)
            due = self.is_lite and self._unflushed >= self._flush_rows
        if due:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            if not self._unflushed:
                return
            self._unflushed = 0
        self.client.flush(self.collection)

    async def flush_pending(self) -> None:
        """Seal rows written since the last flush (Milvus Lite only; no-op on a server)."""
        if self.is_lite and self._unflushed:
            await asyncio.to_thread(self._flush)

    async def insert(self, records: Sequence[ChunkRecord]) -> None:
        if records:
            await asyncio.to_thread(self._insert, records)

    def _delete(self, expr: str) -> None:
        self._ensure_collection()
        self.client.delete(self.collection, filter=expr)

    async def delete_document(
        self, tenant_id: str, document_id: str, keep_version: int | None = None
    ) -> None:
        """Remove a document's chunks (all versions, or all but ``keep_version``)."""
        expr = self.scope_filter(tenant_id, document_id=document_id)
        if keep_version is not None:
            expr += f" and doc_version != {int(keep_version)}"
        await asyncio.to_thread(self._delete, expr)

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        await asyncio.to_thread(self._delete, self.scope_filter(tenant_id, kb_ids=[kb_id]))

    def _count(self, expr: str) -> int:
        self._ensure_collection()
        res = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    async def count(
        self, tenant_id: str, kb_ids: Sequence[str] | None = None, document_id: str | None = None
    ) -> int:
        return await asyncio.to_thread(
            self._count, self.scope_filter(tenant_id, kb_ids, document_id)
        )

    # -- reads --------------------------------------------------------------------------
    def _search(self, field_name: str, data: Any, expr: str, limit: int) -> list[Hit]:
        self._ensure_collection()
        res = self.client.search(
            self.collection,
            data=[data],
            anns_field=field_name,
            filter=expr,
            limit=limit,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "COSINE" if field_name == "dense" else "BM25"},
        )
        # Milvus returns the BM25 relevance as the "distance" (higher is better); Milvus Lite
        # returns it negated (best hit first, most negative). Scores leave here one way only.
        sign = -1.0 if field_name == "sparse" and self.is_lite else 1.0
        return [
            Hit(str(h["entity"]["chunk_id"]), sign * float(h["distance"]), dict(h["entity"]))
            for h in res[0]
        ]

    async def search_dense(
        self, vector: list[float], tenant_id: str, kb_ids: Sequence[str], limit: int
    ) -> list[Hit]:
        expr = self.scope_filter(tenant_id, kb_ids)
        return await asyncio.to_thread(self._search, "dense", vector, expr, limit)

    async def search_lexical(
        self, analysed_query: str, tenant_id: str, kb_ids: Sequence[str], limit: int
    ) -> list[Hit]:
        if not analysed_query.strip():
            return []
        expr = self.scope_filter(tenant_id, kb_ids)
        return await asyncio.to_thread(self._search, "sparse", analysed_query, expr, limit)

    def _fetch(self, expr: str, chunk_ids: Sequence[str]) -> list[dict[str, Any]]:
        self._ensure_collection()
        rows: list[dict[str, Any]] = []
        ids = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(ids), 500):
            batch = ", ".join(_literal(i) for i in ids[start : start + 500])
            rows += self.client.query(
                self.collection, filter=f"{expr} and chunk_id in [{batch}]",
                output_fields=OUTPUT_FIELDS,
            )  # fmt: skip
        return [dict(r) for r in rows]

    async def fetch(
        self, tenant_id: str, kb_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The stored fields of the given chunks (within the tenant and KBs), by chunk id."""
        chunk_ids = [c for c in chunk_ids if _IDENT.fullmatch(c)]
        if not chunk_ids:
            return {}
        rows = await asyncio.to_thread(self._fetch, self.scope_filter(tenant_id, kb_ids), chunk_ids)
        return {str(r["chunk_id"]): r for r in rows if r.get("tenant_id") == tenant_id}

    def _query(self, expr: str, limit: int) -> list[dict[str, Any]]:
        self._ensure_collection()
        rows = self.client.query(
            self.collection, filter=expr, output_fields=OUTPUT_FIELDS, limit=limit
        )
        return [dict(r) for r in rows]

    async def document_chunks(
        self, tenant_id: str, kb_ids: Sequence[str], document_id: str, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """A document's chunks in reading order."""
        expr = self.scope_filter(tenant_id, kb_ids, document_id)
        rows = await asyncio.to_thread(self._query, expr, limit)
        return sorted(rows, key=lambda r: int(r.get("chunk_index", 0)))

    def close(self) -> None:
        self.client.close()
