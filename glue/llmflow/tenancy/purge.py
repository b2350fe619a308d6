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

from sqlalchemy import delete, func, select

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
    # Originals outside any KB prefix (none today) and empty folders.
    report.objects = await rt.object_store.delete_prefix(tenant, "")
    return report
