"""FastAPI app factory: every router of the glue data plane in one app (embedded mode)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from llmflow import __version__
from llmflow.api import (
    problems,
    routes_agents,
    routes_apps,
    routes_audit,
    routes_datasets,
    routes_dify_sso,
    routes_gateway,
    routes_health,
    routes_kb,
    routes_pii,
    routes_search,
    routes_tools,
    routes_training,
)
from llmflow.api.http_metrics import HttpMetrics
from llmflow.runtime import Runtime
from llmflow.settings import Settings

log = logging.getLogger(__name__)


class GlueAPI(FastAPI):
    """The glue API: FastAPI, with the gateway's proxy routes answered ahead of its
    middleware stack (:func:`llmflow.api.routes_gateway.answer`).

    FastAPI's own OpenTelemetry instrumentation, when a process-wide provider is configured,
    covers only requests that go through FastAPI, so the proxy routes take the FastAPI path
    then. The gateway's traces go to Langfuse through its own provider either way.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.root_path:  # first, as FastAPI.__call__ does: fast_route reads it
            scope["root_path"] = self.root_path
        spec = routes_gateway.fast_route(scope)  # None for all but the proxy routes' POSTs
        if spec is not None:
            telemetry = getattr(self, "_native_telemetry", None)
            if telemetry is None or not telemetry.enabled():
                scope["app"] = self
                await routes_gateway.answer(spec, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _refresh_adapter_routes(rt: Runtime, every_s: float = 30.0) -> None:
    """Keep the gateway's routing table in step with the adapters deployed by any replica
    (``llmflow train deploy`` writes them to PostgreSQL)."""
    from llmflow.training.deploy import refresh_gateway

    while True:
        try:
            await refresh_gateway(rt)
        except Exception:  # the database may be restarting; the next round retries
            log.warning("refreshing the adapter routes failed", exc_info=True)
        await asyncio.sleep(every_s)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; opens (and on shutdown closes) a Runtime unless one is handed in."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or await Runtime.open(settings)
        app.state.runtime = rt
        if owned and settings.pii.mask_logs:
            from llmflow.pii.anonymize import install_log_masking

            await rt.pii_guard()  # registers the process-wide masker before the first log
            install_log_masking()
        worker: asyncio.Task[None] | None = None
        if settings.jobs.in_process_worker:
            worker = asyncio.create_task(rt.jobs.run_forever(), name="ingest-worker")
        routes: asyncio.Task[None] | None = None
        if owned:  # a serving process: deployed adapters and training jobs of earlier runs
            from llmflow.training.jobs import training_service

            await training_service(rt).recover()
            from llmflow.dify.facade import start_facade_recovery

            # ERP facade async runs of dead processes (docs/erp-facade.md, "Restarts")
            await start_facade_recovery(rt)
            routes = asyncio.create_task(_refresh_adapter_routes(rt), name="adapter-routes")
        if owned:
            # Start-up imported the PII engine, Presidio and their dependencies: over a
            # million long-lived objects that every full garbage collection would walk
            # again, a pause of tens of milliseconds charged to whichever request allocates
            # at that moment. Freezing moves them out of the collector's generations.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if routes is not None:
                from llmflow.training.jobs import training_service

                routes.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await routes
                await training_service(rt).aclose()
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker
            if owned:
                await rt.close()

    app = GlueAPI(
        title="LLMFlow glue API",
        version=__version__,
        summary="Korean-aware ingestion, hybrid retrieval and Dify External Knowledge API",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    problems.install(app)
    app.include_router(routes_health.router)
    app.include_router(routes_kb.router)
    app.include_router(routes_search.router)
    app.include_router(routes_pii.router)
    app.include_router(routes_gateway.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_agents.router)
    app.include_router(routes_tools.router)
    app.include_router(routes_apps.router)
    app.include_router(routes_dify_sso.router)
    app.include_router(routes_training.router)
    app.include_router(routes_datasets.router)

    app.add_middleware(HttpMetrics)
    return app
