""":class:`ResearchTools` on the platform: hybrid search and the graph service.

Every call is authorised like the REST API authorises it — a ``search`` decision of the
policy per knowledge base, audited — and runs as the caller's principal, so the tenant
filter of the search and graph layers is the caller's tenant.

The graph tools use ``runtime.graph`` (a ``GraphService``: neighbourhood, follow_reference,
section), looked up when a graph tool is called; where this server has no graph service the
tool answers 503 and the model reads that error like any other.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from llmflow.agents.tools import Passage
from llmflow.errors import ServiceUnavailable

if TYPE_CHECKING:
    from fastapi import Request

    from llmflow.auth.principal import Principal
    from llmflow.graph.base import Subgraph
    from llmflow.retrieve.hybrid import SearchResult
    from llmflow.runtime import Runtime


class GraphService(Protocol):
    """The operations of the graph service the agent relies on (``runtime.graph``)."""

    async def neighbourhood(
        self, principal: Principal, kb_names: Sequence[str], node: str, hops: int = 1,
        limit: int = 50,
    ) -> Subgraph: ...  # fmt: skip

    async def follow_reference(
        self, principal: Principal, kb_names: Sequence[str], chunk_id: str,
        reference: str | None = None,
    ) -> list[SearchResult]: ...  # fmt: skip

    async def section(
        self, principal: Principal, kb_names: Sequence[str], document_id: str,
        section: str | None = None,
    ) -> list[SearchResult]: ...  # fmt: skip


class RuntimeResearchTools:
    """The tools over a runtime; ``request`` (when an HTTP request runs them) ties their audit
    records to it."""

    def __init__(self, rt: Runtime, request: Request | None = None) -> None:
        self.rt = rt
        self.request = request

    async def _authorize(self, principal: Principal, kb_names: Sequence[str]) -> None:
        from llmflow.api.authz import authorize_kb

        for name in dict.fromkeys(kb_names):
            await authorize_kb(self.rt, principal, "search", name, request=self.request)

    async def _graph(self) -> GraphService:
        try:
            service: Any = getattr(self.rt, "graph", None)
        except ImportError:  # a build of the glue without the graph modules
            service = None
        if service is not None and inspect.iscoroutinefunction(service):
            service = await service()
        if service is None:
            raise ServiceUnavailable("the knowledge graph is not available on this server")
        graph: GraphService = service
        return graph

    async def knowledge_bases(self, principal: Principal) -> dict[str, str]:
        kbs = await self.rt.knowledge_bases.list(principal.tenant_id)
        return {kb.name: kb.classification for kb in kbs if principal.may_read(kb.name)}

    async def search(
        self, principal: Principal, kb_names: Sequence[str], query: str, top_k: int
    ) -> list[Passage]:
        await self._authorize(principal, kb_names)
        response = await self.rt.search.search(principal, kb_names, query, top_k=top_k)
        return [Passage.from_result(r) for r in response.results]

    async def neighbourhood(
        self, principal: Principal, kb_names: Sequence[str], node: str, hops: int, limit: int
    ) -> dict[str, Any]:
        await self._authorize(principal, kb_names)
        graph = await self._graph()
        subgraph = await graph.neighbourhood(principal, kb_names, node, hops=hops, limit=limit)
        return subgraph.to_dict()

    async def follow_reference(
        self, principal: Principal, kb_names: Sequence[str], chunk_id: str, reference: str | None
    ) -> list[Passage]:
        await self._authorize(principal, kb_names)
        graph = await self._graph()
        results = await graph.follow_reference(principal, kb_names, chunk_id, reference)
        return [Passage.from_result(r) for r in results]

    async def section(
        self, principal: Principal, kb_names: Sequence[str], document_id: str, section: str | None
    ) -> list[Passage]:
        await self._authorize(principal, kb_names)
        graph = await self._graph()
        results = await graph.section(principal, kb_names, document_id, section)
        return [Passage.from_result(r) for r in results]
