"""A bounded in-memory queue written to PostgreSQL in batches, off the request path.

The gateway's usage ledger and its per-call audit events both work this way: a request only
puts its record on the queue; a background task writes what is queued every
``flush_interval_s``, ``batch_size`` records per transaction. Each batch is built and written
in its own step on the event loop, so a backlog never stalls the requests in flight for
long (one batch of a few hundred records held the loop for ~10 ms, which showed up as the
gateway's p99). When the loop is so busy that small batches fall behind (1,000 concurrent
streams: each round trip of a transaction waits its turn behind the streams' events), the
batches grow with the backlog, up to ``max_batch``, so the writer catches up instead of the
queue growing until it drops records. A batch that fails is kept, in order, for the next round; past
``max_queued`` the oldest are dropped and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from llmflow.gateway import metrics

T = TypeVar("T")
log = logging.getLogger(__name__)


class Backlog(Generic[T]):
    def __init__(
        self, name: str, batch_size: int = 50, max_queued: int = 100_000, max_batch: int = 1000
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.max_batch = max(batch_size, max_batch)
        self.max_queued = max_queued
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=max_queued)
        self._retry: list[T] = []

    def put(self, item: T) -> bool:
        """Queue ``item`` (never blocks); False, counted and logged, when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            metrics.OBSERVER_DROPPED.labels(self.name).inc()
            log.error("gateway %s queue full: a record was dropped", self.name)
            return False
        return True

    def __len__(self) -> int:
        return len(self._retry) + self._queue.qsize()

    async def drain(self, write: Callable[[list[T]], Awaitable[object]]) -> None:
        """Write what is queued now (not what arrives meanwhile) and what a failed round
        left, in batches; re-raises a failed write after keeping its batch."""
        todo = len(self)
        while todo > 0:
            size = min(self.max_batch, max(self.batch_size, len(self) // 4))
            batch, self._retry = self._retry[:size], self._retry[size:]
            while len(batch) < size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not batch:
                return
            todo -= len(batch)
            try:
                await write(batch)
            except BaseException:
                self._keep(batch + self._retry)
                raise
            await asyncio.sleep(0)  # the requests in flight run between two batches

    def _keep(self, items: list[T]) -> None:
        overflow = len(items) - self.max_queued
        if overflow > 0:
            metrics.OBSERVER_DROPPED.labels(self.name).inc(overflow)
            log.error("gateway %s backlog full: %d records dropped", self.name, overflow)
            items = items[overflow:]
        self._retry = items
