"""Durable ingest jobs on PostgreSQL with procrastinate.

Each ingest job is one procrastinate task carrying our ``IngestJob`` id; the task looks the
job up, so a retry after a crash redoes exactly the same work (the original is already in
the object store). Embedded mode runs the worker inside the API/CLI process (Milvus Lite is
a single-process file store); cluster mode runs ``llmflow worker`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import procrastinate
from procrastinate import JobContext, RetryStrategy

if TYPE_CHECKING:
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)
TASK_NAME = "llmflow.ingest_document"
FLUSH_INTERVAL_S = 5.0
FINAL_STATES = frozenset({"succeeded", "failed", "skipped"})


class IngestQueue:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        settings = runtime.settings.jobs
        self.queue = settings.queue
        self.max_attempts = settings.max_attempts
        self.in_process = settings.in_process_worker
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=runtime.db.conninfo)
        )

        @self.app.task(
            name=TASK_NAME,
            queue=self.queue,
            pass_context=True,
            retry=RetryStrategy(max_attempts=self.max_attempts - 1, exponential_wait=2),
        )
        async def ingest_document(context: JobContext, job_id: str) -> None:
            attempts = context.job.attempts if context.job else 0
            final = attempts >= self.max_attempts - 1
            await self.rt.ingest.process(job_id, final_attempt=final)

        self._task = ingest_document
        self._opened = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._lock:
            if not self._opened:
                await self.app.open_async()
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.app.close_async()
            self._opened = False

    async def defer_ingest(self, job_id: str) -> None:
        await self.open()
        await self._task.defer_async(job_id=job_id)

    async def _flush_index(self) -> None:
        index = self.rt.cached_index()
        if index is not None:
            await index.flush_pending()

    async def drain(self) -> None:
        """Process queued jobs until none is left (CLI in embedded mode)."""
        await self.open()
        try:
            await self.app.run_worker_async(
                queues=[self.queue],
                wait=False,
                concurrency=self.rt.settings.jobs.concurrency,
                install_signal_handlers=False,
                listen_notify=False,
            )
        finally:
            await self._flush_index()

    async def wait(
        self,
        tenant_id: str,
        job_ids: list[str],
        progress: Callable[[int, int], None] | None = None,
        poll_s: float = 0.3,
    ) -> list[dict[str, Any]]:
        """Wait until every job has ended; returns their views.

        With the in-process worker (embedded mode) this process works the queue meanwhile;
        otherwise the cluster's ``llmflow worker`` processes do and we only watch.
        """
        worker = asyncio.create_task(self.drain()) if self.in_process else None
        try:
            while True:
                jobs = await self.rt.ingest.jobs(tenant_id, job_ids)
                finished = sum(1 for j in jobs if j["status"] in FINAL_STATES)
                if progress is not None:
                    progress(finished, len(job_ids))
                if finished == len(job_ids):
                    return jobs
                if worker is not None and worker.done():
                    worker.result()  # surfaces a crashed worker
                    worker = asyncio.create_task(self.drain())
                await asyncio.sleep(poll_s)
        finally:
            if worker is not None:
                await worker

    async def run_forever(self, **options: Any) -> None:
        """Worker loop (``llmflow worker`` or the API's in-process worker)."""
        await self.open()

        async def flush_when_idle() -> None:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                try:
                    await self._flush_index()
                except Exception:  # the next round retries; searches still see the rows
                    log.warning("index flush failed", exc_info=True)

        flusher = asyncio.create_task(flush_when_idle(), name="index-flusher")
        try:
            await self.app.run_worker_async(
                queues=[self.queue],
                wait=True,
                concurrency=self.rt.settings.jobs.concurrency,
                install_signal_handlers=options.get("install_signal_handlers", False),
            )
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
