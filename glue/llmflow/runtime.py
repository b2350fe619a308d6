"""The composed platform of one process: stores, models and services, built from Settings.

Heavy parts (embedding model, Kiwi, Presidio, Milvus) are created on first use, so that a
command such as ``llmflow apikey create`` does not load a model. ``Runtime.open`` starts
(embedded) or connects to (cluster) PostgreSQL and migrates it; ``close`` releases
everything, stopping the embedded PostgreSQL when this process started it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from llmflow.auth.apikeys import ApiKeys
from llmflow.errors import ServiceUnavailable
from llmflow.index.lexical import KoreanAnalyzer
from llmflow.index.milvus import ChunkIndex, collection_name
from llmflow.ingest.jobs import IngestQueue
from llmflow.ingest.pipeline import IngestService
from llmflow.knowledge import KnowledgeBases
from llmflow.settings import Settings
from llmflow.storage.database import Database, open_database, session_factory
from llmflow.storage.migrate import migrate
from llmflow.storage.objectstore import ObjectStore, build_object_store

if TYPE_CHECKING:
    from llmflow.agents.service import ResearchAgents
    from llmflow.auth.jwt import JwtVerifier
    from llmflow.auth.policy.base import PolicyEngine
    from llmflow.gateway.service import GatewayService
    from llmflow.graph.base import GraphStore
    from llmflow.index.entities import EntityIndex
    from llmflow.models.embedding import Embedder
    from llmflow.models.rerank import Reranker
    from llmflow.observability.audit import AuditLog
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.engine import PiiEngine
    from llmflow.retrieve.graph import GraphService
    from llmflow.retrieve.hybrid import SearchService

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, db: Database, engine: AsyncEngine) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self.object_store: ObjectStore = build_object_store(settings)
        self.api_keys = ApiKeys(self.sessions)
        self.knowledge_bases = KnowledgeBases(
            self.sessions,
            embedding_model=settings.embedding.model,
            collection=collection_name(settings.milvus.collection_prefix, settings.embedding.model),
        )
        self.ingest = IngestService(self)
        self.jobs = IngestQueue(self)
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        db = await asyncio.to_thread(open_database, settings)
        await asyncio.to_thread(migrate, db)
        return cls(settings, db, db.async_engine(settings.database.pool_size))

    async def close(self) -> None:
        await self.jobs.close()
        if "embedder" in self._cache:
            await self._cache["embedder"].aclose()
        if "reranker" in self._cache:
            await self._cache["reranker"].aclose()
        if "jwt_verifier" in self._cache:
            await self._cache["jwt_verifier"].aclose()
        if "index" in self._cache:
            self._cache["index"].close()
        if "policy" in self._cache:
            await self._cache["policy"].aclose()
        facade_module = sys.modules.get("llmflow.dify.facade")  # only if this process used it
        if facade_module is not None:
            await facade_module.close_facade(self)
        if "agents" in self._cache:  # before the gateway and the database it uses
            await self._cache["agents"].close()
        if "gateway" in self._cache:
            await self._cache["gateway"].close()
        # After everything that records audit events: the gateway's writer flushes its last
        # per-call events, and the facade's draining runs audit their outcomes, on close.
        if "audit" in self._cache:
            await self._cache["audit"].aclose()
        if "graph_store" in self._cache:
            await self._cache["graph_store"].close()
        await self.engine.dispose()
        self.db.stop()

    async def _once(self, name: str, factory: Any) -> Any:
        if name in self._cache:
            return self._cache[name]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._cache:
                self._cache[name] = await factory()
        return self._cache[name]

    async def embedder(self) -> Embedder:
        async def make() -> Embedder:
            from llmflow.models.embedding import build_embedder

            embedder = build_embedder(self.settings.embedding)
            await embedder.warm_up()  # fail fast on a wrong model path or URL
            return embedder

        result: Embedder = await self._once("embedder", make)
        return result

    async def analyzer(self) -> KoreanAnalyzer:
        async def make() -> KoreanAnalyzer:
            return await asyncio.to_thread(KoreanAnalyzer)

        result: KoreanAnalyzer = await self._once("analyzer", make)
        return result

    async def pii_engine(self) -> PiiEngine:
        """The PII analyzer with the policy file's recognizers (built once, seconds)."""

        async def make() -> PiiEngine:
            from llmflow.pii.config import default_config_path, load_config
            from llmflow.pii.engine import PiiEngine

            settings = self.settings
            path = settings.pii.config or default_config_path(settings.policies_dir)
            config = load_config(path, settings.pii.score_threshold)
            return await asyncio.to_thread(PiiEngine, config)

        result: PiiEngine = await self._once("pii", make)
        return result

    async def gateway(self) -> GatewayService:
        """The LLM gateway: routing table, upstream pools, quotas and usage ledger."""

        async def make() -> GatewayService:
            from llmflow.gateway.authorize import ModelUsePolicy
            from llmflow.gateway.service import GatewayService
            from llmflow.gateway.usage import UsageLedger

            ledger = UsageLedger(self.sessions)
            ledger.start()
            service = GatewayService(
                self.settings.gateway,
                ModelUsePolicy(self).authorize,
                ledger,
                self.pii_guard,
            )
            from llmflow.gateway.calls import attach_observability

            await attach_observability(self, service)  # audit per call, traces, health checks
            return service

        result: GatewayService = await self._once("gateway", make)
        return result

    async def pii_guard(self) -> PiiGuard:
        """The PII policy applied (analysis + Presidio anonymizer); also the process-wide
        masker for logs."""

        async def make() -> PiiGuard:
            from llmflow.pii.anonymize import PiiGuard, set_default_guard

            guard = PiiGuard(await self.pii_engine(), self._pii_hash_salt())
            set_default_guard(guard)
            return guard

        result: PiiGuard = await self._once("pii_guard", make)
        return result

    def _pii_hash_salt(self) -> bytes:
        """The salt of the ``hash`` action: a secret from settings, else a random one kept in
        the data directory (an RRN has too few possible values for an unsalted hash)."""
        if self.settings.pii.hash_salt is not None:
            return self.settings.pii.hash_salt.get_secret_value().encode()
        path = self.settings.data_dir / "pii-hash-salt"
        if not path.exists():
            import os
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            if self.settings.profile.value == "cluster":
                log.warning(
                    "pii.hash_salt is not set: replicas hash PII with different salts; set "
                    "LLMFLOW_PII__HASH_SALT from a secret"
                )
        return path.read_text().strip().encode()

    async def index(self) -> ChunkIndex:
        async def make() -> ChunkIndex:
            from pymilvus.exceptions import MilvusException

            embedder = await self.embedder()
            try:
                return await asyncio.to_thread(
                    ChunkIndex, self.settings, embedder.dimension, self.settings.embedding.model
                )
            except MilvusException as exc:
                where = self.settings.milvus_uri
                hint = (
                    " A Milvus Lite file can be open in one process only: is `llmflow serve` "
                    "running on this data directory? Use its API, or stop it first."
                    if "://" not in where
                    else ""
                )
                raise ServiceUnavailable(
                    f"cannot open Milvus at {where}: {exc.message}.{hint}"
                ) from exc

        result: ChunkIndex = await self._once("index", make)
        return result

    async def graph_store(self) -> GraphStore:
        """The graph store of this mode: PostgreSQL tables (embedded) or Neo4j (cluster)."""

        async def make() -> GraphStore:
            if self.settings.graph.store == "neo4j":
                from llmflow.graph.neo4j import Neo4jGraphStore

                store: GraphStore = Neo4jGraphStore.from_settings(self.settings.graph)
            else:
                from llmflow.graph.postgres import PostgresGraphStore

                store = PostgresGraphStore(self.engine)
            await store.ensure_schema()
            return store

        result: GraphStore = await self._once("graph_store", make)
        return result

    async def entity_index(self) -> EntityIndex:
        async def make() -> EntityIndex:
            from llmflow.index.entities import EntityIndex

            return EntityIndex(await self.index())

        result: EntityIndex = await self._once("entity_index", make)
        return result

    @property
    def graph(self) -> GraphService:
        from llmflow.retrieve.graph import GraphService

        if "graph" not in self._cache:
            self._cache["graph"] = GraphService(self)
        result: GraphService = self._cache["graph"]
        return result

    async def reload_gateway(self) -> None:
        """Rebuild the gateway from ``settings.gateway`` on its next use (after the routing
        table changed, e.g. an adapter was deployed); the old one's connections close."""
        old = self._cache.pop("gateway", None)
        if old is not None:
            await old.close()

    def cached_index(self) -> ChunkIndex | None:
        """The index if this process has opened it (never opens Milvus just to ask)."""
        index: ChunkIndex | None = self._cache.get("index")
        return index

    def cached_gateway(self) -> GatewayService | None:
        """The gateway if this process has created it (never creates one just to ask)."""
        gateway: GatewayService | None = self._cache.get("gateway")
        return gateway

    async def reranker(self) -> Reranker:
        async def make() -> Reranker:
            from llmflow.models.rerank import build_reranker

            return build_reranker(self.settings.rerank)

        result: Reranker = await self._once("reranker", make)
        return result

    async def jwt_verifier(self) -> JwtVerifier:
        """The Keycloak access-token verifier (needs ``auth.issuer``); one JWKS client."""

        async def make() -> JwtVerifier:
            from llmflow.auth.jwt import JwtVerifier

            return JwtVerifier(self.settings.auth)

        result: JwtVerifier = await self._once("jwt_verifier", make)
        return result

    async def policy(self) -> PolicyEngine:
        """The authorization engine of ``settings.policy`` (Rego compiled once, or one OPA
        client): every allow/deny of the API goes through it (``llmflow.api.authz``)."""

        async def make() -> PolicyEngine:
            # imported here: the embedded engine loads kiwipiepy, then regopy (see embedded.py)
            from llmflow.auth.policy import build_policy_engine

            return await asyncio.to_thread(build_policy_engine, self.settings)

        result: PolicyEngine = await self._once("policy", make)
        return result

    async def audit(self) -> AuditLog:
        """The audit log (PostgreSQL, optional OpenSearch sink); string details are masked
        with the PII policy, loaded only when an event has text to mask."""

        async def mask(details: dict[str, Any], tenant: str) -> dict[str, Any]:
            from llmflow.pii.anonymize import mask_data

            await self.pii_guard()  # registers the runtime's guard as mask_data's masker
            masked: dict[str, Any] = await asyncio.to_thread(mask_data, details, tenant)
            return masked

        async def make() -> AuditLog:
            from llmflow.observability.audit import build_audit_log

            return build_audit_log(self.settings, self.sessions, mask)

        result: AuditLog = await self._once("audit", make)
        return result

    async def agents(self) -> ResearchAgents:
        """The LangGraph research agent (checkpoints in this runtime's PostgreSQL)."""

        async def make() -> ResearchAgents:
            from llmflow.agents.service import open_research_agents

            return await open_research_agents(self)

        result: ResearchAgents = await self._once("agents", make)
        return result

    @property
    def search(self) -> SearchService:
        from llmflow.retrieve.hybrid import SearchService

        if "search" not in self._cache:
            self._cache["search"] = SearchService(self)
        result: SearchService = self._cache["search"]
        return result
