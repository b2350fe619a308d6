"""Knowledge bases: named document collections inside a tenant."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.errors import Conflict, InvalidRequest, NotFound
from llmflow.storage.models import Document, KnowledgeBase

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CLASSIFICATIONS = ("public", "internal", "confidential", "secret")
"""Data classification of a knowledge base, least to most sensitive."""


def validate_name(kind: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise InvalidRequest(
            f"invalid {kind} {value!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class KnowledgeBaseInfo:
    id: str
    tenant_id: str
    name: str
    description: str
    embedding_model: str
    collection: str
    documents: int
    classification: str = "internal"
    graph_fusion: str | None = None
    graph_weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "description": self.description,
            "classification": self.classification,
            "embedding_model": self.embedding_model,
            "documents": self.documents,
            "graph_fusion": self.graph_fusion,
            "graph_weight": self.graph_weight,
        }


class KnowledgeBases:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], embedding_model: str, collection: str
    ) -> None:
        self.sessions = sessions
        self.embedding_model = embedding_model
        self.collection = collection

    @staticmethod
    async def _count(session: AsyncSession, kb_id: str) -> int:
        stmt = select(func.count()).select_from(Document).where(Document.kb_id == kb_id)
        return int((await session.execute(stmt)).scalar_one())

    async def _info(self, session: AsyncSession, kb: KnowledgeBase) -> KnowledgeBaseInfo:
        return KnowledgeBaseInfo(
            kb.id,
            kb.tenant_id,
            kb.name,
            kb.description,
            kb.embedding_model,
            kb.collection,
            await self._count(session, kb.id),
            kb.classification,
            kb.graph_fusion,
            kb.graph_weight,
        )

    async def get_row(self, session: AsyncSession, tenant_id: str, name: str) -> KnowledgeBase:
        stmt = select(KnowledgeBase).where(
            KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.name == name
        )
        kb = (await session.execute(stmt)).scalar_one_or_none()
        if kb is None:
            raise NotFound(f"knowledge base {name!r} does not exist in tenant {tenant_id!r}")
        return kb

    async def get(self, tenant_id: str, name: str) -> KnowledgeBaseInfo:
        async with self.sessions() as session:
            return await self._info(session, await self.get_row(session, tenant_id, name))

    async def list(self, tenant_id: str) -> list[KnowledgeBaseInfo]:
        async with self.sessions() as session:
            # one query with the document counts, not one count per knowledge base
            counts = (
                select(Document.kb_id, func.count().label("n")).group_by(Document.kb_id).subquery()
            )
            rows = (
                await session.execute(
                    select(KnowledgeBase, func.coalesce(counts.c.n, 0))
                    .outerjoin(counts, counts.c.kb_id == KnowledgeBase.id)
                    .where(KnowledgeBase.tenant_id == tenant_id)
                    .order_by(KnowledgeBase.name)
                )
            ).all()
            return [
                KnowledgeBaseInfo(
                    kb.id,
                    kb.tenant_id,
                    kb.name,
                    kb.description,
                    kb.embedding_model,
                    kb.collection,
                    int(n),
                    kb.classification,
                )
                for kb, n in rows
            ]

    async def create(
        self,
        tenant_id: str,
        name: str,
        description: str = "",
        exist_ok: bool = False,
        classification: str = "internal",
        graph_fusion: str | None = None,
        graph_weight: float | None = None,
    ) -> KnowledgeBaseInfo:
        validate_name("tenant", tenant_id)
        validate_name("knowledge base name", name)
        if classification not in CLASSIFICATIONS:
            raise InvalidRequest(
                f"classification must be one of {', '.join(CLASSIFICATIONS)}; "
                f"got {classification!r}"
            )
        if graph_fusion not in (None, "scores", "rrf"):
            raise InvalidRequest(f"graph_fusion must be scores or rrf; got {graph_fusion!r}")
        if graph_weight is not None and not 0.0 <= graph_weight <= 10.0:
            raise InvalidRequest("graph_weight must be between 0 and 10")
        async with self.sessions() as session:
            existing = (
                await session.execute(
                    select(KnowledgeBase).where(
                        KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.name == name
                    )
                )
            ).scalar_one_or_none()
            if existing is not None:
                if exist_ok:
                    return await self._info(session, existing)
                raise Conflict(f"knowledge base {name!r} already exists in tenant {tenant_id!r}")
            kb = KnowledgeBase(
                tenant_id=tenant_id,
                name=name,
                description=description,
                classification=classification,
                graph_fusion=graph_fusion,
                graph_weight=graph_weight,
                embedding_model=self.embedding_model,
                collection=self.collection,
            )
            session.add(kb)
            await session.commit()
            return await self._info(session, kb)
