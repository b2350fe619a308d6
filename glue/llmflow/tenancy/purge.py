"""Purge one tenant's data from the data plane: knowledge bases, documents, chunks, keys.

Uses the data plane's own delete paths (``IngestService.delete_kb`` removes a knowledge
base's chunks from Milvus, its originals from the object store and its rows — documents and
ingest jobs go with it by foreign-key cascade), then deletes the tenant's API keys (revoking
is not enough: a purge leaves nothing that names the tenant) and whatever the object store
still holds for it. Every statement is scoped by ``tenant_id``; other tenants are untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text

from llmflow.storage.models import ApiKey, Document, IngestJob

if TYPE_CHECKING:
    from llmflow.runtime import Runtime


@dataclass
class PurgeReport:
    """What a purge removed."""

    tenant: str
    knowledge_bases: list[str] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    api_keys: int = 0
    ingest_jobs: int = 0
    objects: int = 0
    other_rows: dict[str, int] = field(default_factory=dict)
    """Rows of the other tenant-scoped tables (datasets, training, facade, agent threads)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return asdict(self)


async def purge_tenant_data(rt: Runtime, tenant: str) -> PurgeReport:
    """Delete every knowledge base, document, chunk, ingest job and API key of ``tenant``."""
    report = PurgeReport(tenant=tenant)
    index = await rt.index()
    report.chunks = await index.count(tenant)
    async with rt.sessions() as session:
        report.documents = int(
            (
                await session.execute(
                    select(func.count()).select_from(Document).where(Document.tenant_id == tenant)
                )
            ).scalar_one()
        )
    for kb in await rt.knowledge_bases.list(tenant):
        await rt.ingest.delete_kb(tenant, kb.name)
        report.knowledge_bases.append(kb.name)
    async with rt.sessions() as session:
        # Jobs whose KB is gone are cascaded; jobs that never got a KB row are removed here.
        jobs = await session.execute(delete(IngestJob).where(IngestJob.tenant_id == tenant))
        keys = await session.execute(delete(ApiKey).where(ApiKey.tenant_id == tenant))
        await session.commit()
        report.ingest_jobs = int(getattr(jobs, "rowcount", 0) or 0)
        report.api_keys = int(getattr(keys, "rowcount", 0) or 0)
    report.other_rows = await _purge_tables(rt, tenant)
    # Originals outside any KB prefix (none today) and empty folders.
    report.objects = await rt.object_store.delete_prefix(tenant, "")
    return report


# Tenant-scoped tables outside the KB cascade, children first; LangGraph's checkpoint tables
# (created by the agents' saver, absent until an agent ran) key threads as "<tenant>/<id>".
_TENANT_TABLES = (
    ("training_adapter_routes", "tenant_id = :tenant"),
    ("training_jobs", "tenant_id = :tenant"),
    ("dataset_versions", "tenant_id = :tenant"),
    ("facade_runs", "tenant_id = :tenant"),
    ("facade_apps", "tenant_id = :tenant"),
    ("facade_tenant_secrets", "tenant_id = :tenant"),
    ("dify_sso_accounts", "tenant_id = :tenant"),
    ("graph_edges", "tenant_id = :tenant"),
    ("graph_nodes", "tenant_id = :tenant"),
    ("checkpoint_writes", "thread_id LIKE :thread"),
    ("checkpoint_blobs", "thread_id LIKE :thread"),
    ("checkpoints", "thread_id LIKE :thread"),
)


async def _purge_tables(rt: Runtime, tenant: str) -> dict[str, int]:
    """Delete the tenant's rows from every tenant-scoped table that exists (constant SQL;
    the table names come from the list above, never from input)."""
    out: dict[str, int] = {}
    params = {"tenant": tenant, "thread": tenant.replace("%", r"\%").replace("_", r"\_") + "/%"}
    async with rt.engine.begin() as conn:
        for table, where in _TENANT_TABLES:
            exists = await conn.execute(text("SELECT to_regclass(:t)"), {"t": table})
            if exists.scalar_one() is None:
                continue
            result = await conn.execute(text(f"DELETE FROM {table} WHERE {where}"), params)
            out[table] = int(getattr(result, "rowcount", 0) or 0)
    return out
