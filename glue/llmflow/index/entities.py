"""Entity vectors in Milvus: one collection per embedding schema, partition key ``tenant_id``.

LlamaIndex's ``VectorContextRetriever`` ignores an external vector store when Neo4j is the
graph store (llama_index#15511), so graph retrieval looks entities up here itself and hands
the node ids to the graph store. The collection shares the chunk index's Milvus client.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pymilvus import DataType, MilvusClient

from llmflow.index.milvus import ChunkIndex


@dataclass(frozen=True, slots=True)
class EntityHit:
    node_id: str
    name: str
    kb_id: str
    score: float


def _pk(tenant_id: str, kb_id: str, node_id: str) -> str:
    return hashlib.sha256(f"{tenant_id}/{kb_id}/{node_id}".encode()).hexdigest()[:48]


class EntityIndex:
    def __init__(self, chunks: ChunkIndex) -> None:
        self.client: MilvusClient = chunks.client
        self.dim = chunks.dim
        self.collection = chunks.collection + "_entities"
        self.is_lite = chunks.is_lite
        self._num_partitions = chunks._num_partitions
        self._ready = False
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._ready:
                return
            if not self.client.has_collection(self.collection):
                schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
                schema.add_field(
                    "tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True
                )
                schema.add_field("kb_id", DataType.VARCHAR, max_length=32)
                schema.add_field("node_id", DataType.VARCHAR, max_length=40)
                schema.add_field("name", DataType.VARCHAR, max_length=1024)
                schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
                index = self.client.prepare_index_params()
                index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
                self.client.create_collection(
                    self.collection,
                    schema=schema,
                    index_params=index,
                    num_partitions=self._num_partitions,
                )
            self.client.load_collection(self.collection)
            self._ready = True

    def _missing(self, tenant_id: str, kb_id: str, node_ids: Sequence[str]) -> list[str]:
        self._ensure()
        pks = {_pk(tenant_id, kb_id, n): n for n in node_ids}
        found: set[str] = set()
        keys = list(pks)
        for start in range(0, len(keys), 500):
            batch = ", ".join(f'"{k}"' for k in keys[start : start + 500])  # hex digests
            rows = self.client.query(
                self.collection,
                filter=f"{ChunkIndex.scope_filter(tenant_id)} and id in [{batch}]",
                output_fields=["id"],
            )
            found.update(str(r["id"]) for r in rows)
        return [n for pk, n in pks.items() if pk not in found]

    async def missing(self, tenant_id: str, kb_id: str, node_ids: Sequence[str]) -> list[str]:
        """The entity node ids that have no vector yet (only those need embedding)."""
        if not node_ids:
            return []
        return await asyncio.to_thread(self._missing, tenant_id, kb_id, node_ids)

    def _upsert(
        self,
        tenant_id: str,
        kb_id: str,
        items: Sequence[tuple[str, str]],
        vectors: Sequence[list[float]],
    ) -> None:
        self._ensure()
        rows = [
            {
                "id": _pk(tenant_id, kb_id, node_id),
                "tenant_id": tenant_id,
                "kb_id": kb_id,
                "node_id": node_id,
                "name": name.encode()[:1000].decode(errors="ignore"),
                "dense": vec,
            }
            for (node_id, name), vec in zip(items, vectors, strict=True)
        ]
        for start in range(0, len(rows), 500):
            self.client.upsert(self.collection, rows[start : start + 500])
        if self.is_lite:
            self.client.flush(self.collection)

    async def upsert(
        self,
        tenant_id: str,
        kb_id: str,
        items: Sequence[tuple[str, str]],
        vectors: Sequence[list[float]],
    ) -> None:
        """Store the vectors of ``(node_id, name)`` entities."""
        if items:
            await asyncio.to_thread(self._upsert, tenant_id, kb_id, items, vectors)

    def _delete(self, tenant_id: str, kb_id: str, node_ids: Sequence[str] | None) -> None:
        self._ensure()
        if node_ids is None:
            self.client.delete(
                self.collection, filter=ChunkIndex.scope_filter(tenant_id, kb_ids=[kb_id])
            )
            return
        pks = [_pk(tenant_id, kb_id, n) for n in node_ids]
        for start in range(0, len(pks), 500):
            self.client.delete(self.collection, ids=pks[start : start + 500])

    async def delete(self, tenant_id: str, kb_id: str, node_ids: Sequence[str] | None) -> None:
        """Remove the given entities' vectors (``None``: the whole knowledge base's)."""
        if node_ids is None or node_ids:
            await asyncio.to_thread(self._delete, tenant_id, kb_id, node_ids)

    def _search(
        self, vector: list[float], tenant_id: str, kb_ids: Sequence[str], limit: int
    ) -> list[EntityHit]:
        self._ensure()
        res = self.client.search(
            self.collection,
            data=[vector],
            anns_field="dense",
            filter=ChunkIndex.scope_filter(tenant_id, kb_ids),
            limit=limit,
            output_fields=["node_id", "name", "kb_id", "tenant_id"],
            search_params={"metric_type": "COSINE"},
        )
        return [
            EntityHit(
                str(h["entity"]["node_id"]),
                str(h["entity"]["name"]),
                str(h["entity"]["kb_id"]),
                float(h["distance"]),
            )
            for h in res[0]
            if h["entity"].get("tenant_id") == tenant_id  # defence in depth
        ]

    async def search(
        self, vector: list[float], tenant_id: str, kb_ids: Sequence[str], limit: int
    ) -> list[EntityHit]:
        return await asyncio.to_thread(self._search, vector, tenant_id, kb_ids, limit)
