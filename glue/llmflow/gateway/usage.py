"""Usage ledger and tenant quotas in PostgreSQL, shared by every gateway replica.

* Requests per minute: counted in memory and added to the tenant's shared counter for the
  minute every 100 ms (one atomic ``INSERT … ON CONFLICT … RETURNING`` per tenant with
  traffic), which also brings back the other replicas' counts. No database round trip on the
  request path; replicas can together overshoot a limit by what they admit within one sync
  interval. Without the background sync (``start()`` not called) every request is counted in
  the database directly.
* Tokens per day: usage is written by a background writer in batches (off the request
  path); the same transaction adds the tokens to the tenant's counter for the day, and the
  gate reads that counter through a cache refreshed every second in the background. A
  replica can therefore overshoot a daily limit by the tokens of the requests in flight —
  a day-long budget, not a hard real-time cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.gateway.backlog import Backlog
from llmflow.gateway.config import Quota
from llmflow.storage.bulk import copy_rows

log = logging.getLogger(__name__)


class QuotaExceeded(Exception):
    """A tenant is over its requests/minute or tokens/day quota."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class UsageRecord:
    tenant_id: str
    subject: str
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    status: int
    stream: bool
    error_code: str | None = None
    created_at: datetime | None = None


_BUMP = text(
    """
    INSERT INTO gateway_quota_counters (tenant_id, window_key, value)
    VALUES (:tenant, :window, :n)
    ON CONFLICT (tenant_id, window_key)
    DO UPDATE SET value = gateway_quota_counters.value + EXCLUDED.value
    RETURNING value
    """
)
_USAGE_COLUMNS = (
    "created_at", "tenant_id", "subject", "model", "backend", "prompt_tokens",
    "completion_tokens", "latency_ms", "ttft_ms", "status", "stream", "error_code",
)  # fmt: skip


_KEYS: dict[tuple[str, int], str] = {}


def _minute_key(now: datetime) -> str:
    """``m:YYYY-MM-DDTHH:MM`` of ``now`` (UTC); the string is made once per minute."""
    return _window_key("m", now, 60, "%Y-%m-%dT%H:%M")


def _day_key(now: datetime) -> str:
    """``d:YYYY-MM-DD`` of ``now`` (UTC)."""
    return _window_key("d", now, 86400, "%Y-%m-%d")


def _window_key(prefix: str, now: datetime, seconds: int, fmt: str) -> str:
    slot = int(now.timestamp()) // seconds
    key = _KEYS.get((prefix, slot))
    if key is None:
        if len(_KEYS) > 64:
            _KEYS.clear()
        key = _KEYS[(prefix, slot)] = prefix + ":" + now.astimezone(UTC).strftime(fmt)
    return key


class UsageLedger:
    """Quota gate + batched usage writer. ``start()`` the writer, ``close()`` flushes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_interval_s: float = 0.5,
        batch_size: int = 50,
        cache_ttl_s: float = 1.0,
        sync_interval_s: float = 0.1,
    ) -> None:
        self.sessions = sessions
        self.flush_interval_s = flush_interval_s
        self.cache_ttl_s = cache_ttl_s
        self._backlog: Backlog[UsageRecord] = Backlog("usage", batch_size)
        self._writer: asyncio.Task[None] | None = None
        self._day_tokens: dict[str, tuple[float, int]] = {}
        self._day_reads: dict[str, asyncio.Lock] = {}
        """One read of a tenant's day counter at a time: the requests that find no value yet
        wait for that read instead of each making their own."""
        self._day_refresh: dict[str, asyncio.Task[None]] = {}
        self.sync_interval_s = sync_interval_s
        self._syncer: asyncio.Task[None] | None = None
        self._minute_pending: dict[str, tuple[str, int]] = {}
        self._minute_seen: dict[str, tuple[str, int]] = {}
        self._minute_syncing: dict[str, tuple[str, int]] = {}
        """Counts a running sync has taken from ``_minute_pending`` and not yet seen come
        back in ``_minute_seen``: they still count, or requests during that round trip would
        slip past the limit."""
        self._stale_pending: list[tuple[str, str, int]] = []

    # -- quotas ---------------------------------------------------------------------
    async def check(self, tenant: str, quota: Quota) -> None:
        """Count this request against the tenant's minute; raise when over a limit."""
        now = datetime.now(UTC)
        if quota.tokens_per_day is not None:
            used = await self.tokens_today(tenant, now)
            if used >= quota.tokens_per_day:
                midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
                raise QuotaExceeded(
                    f"tenant {tenant!r} used {used:,} of {quota.tokens_per_day:,} tokens today",
                    retry_after_s=midnight,
                )
        limit = quota.requests_per_minute
        if limit is None:
            return
        window = _minute_key(now)
        if self._syncer is None:  # no background sync: count in the database right away
            async with self.sessions() as session:
                count = (
                    await session.execute(_BUMP, {"tenant": tenant, "window": window, "n": 1})
                ).scalar_one()
                await session.commit()
        else:
            seen_window, seen = self._minute_seen.get(tenant, (window, 0))
            pending_window, pending = self._minute_pending.get(tenant, (window, 0))
            syncing_window, syncing = self._minute_syncing.get(tenant, (window, 0))
            count = (seen if seen_window == window else 0) + 1
            count += pending if pending_window == window else 0
            count += syncing if syncing_window == window else 0
            if count <= limit:
                if pending_window != window and pending:
                    self._stale_pending.append((tenant, pending_window, pending))
                    pending = 0
                self._minute_pending[tenant] = (window, pending + 1)
        if count > limit:
            raise QuotaExceeded(
                f"tenant {tenant!r} is over {limit} requests per minute",
                retry_after_s=60 - now.second,
            )

    async def sync_minutes(self) -> None:
        """Add this replica's uncounted requests to the shared minute counters and learn the
        other replicas' counts (one round trip per tenant with traffic)."""
        now = datetime.now(UTC)
        window = _minute_key(now)
        stale, self._stale_pending = self._stale_pending, []
        pending = {t: n for t, (w, n) in self._minute_pending.items() if w == window and n}
        for tenant, n in pending.items():  # taken before the await: requests meanwhile count anew
            self._minute_pending[tenant] = (window, 0)
            self._minute_syncing[tenant] = (window, n)
        tenants = sorted(
            set(pending) | {t for t, (w, _) in self._minute_seen.items() if w == window}
        )
        if not tenants and not stale:
            return
        totals: dict[str, int] = {}
        try:
            async with self.sessions() as session:
                for tenant, old_window, n in stale:
                    await session.execute(_BUMP, {"tenant": tenant, "window": old_window, "n": n})
                for tenant in tenants:
                    total = (
                        await session.execute(
                            _BUMP,
                            {"tenant": tenant, "window": window, "n": pending.get(tenant, 0)},
                        )
                    ).scalar_one()
                    totals[tenant] = int(total)
                await session.commit()
        except BaseException:
            # nothing was counted: the taken counts go with the next round
            self._stale_pending = stale + self._stale_pending
            for tenant, n in pending.items():
                pending_window, now_pending = self._minute_pending.get(tenant, (window, 0))
                if pending_window == window:
                    self._minute_pending[tenant] = (window, now_pending + n)
                else:  # the minute turned meanwhile: counted into its own window
                    self._stale_pending.append((tenant, window, n))
            raise
        finally:
            for tenant in pending:
                self._minute_syncing.pop(tenant, None)
        for tenant, total in totals.items():  # no await since the pop: one step for check()
            self._minute_seen[tenant] = (window, total)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            try:
                await self.sync_minutes()
            except Exception:  # the counts stay pending and go with the next round
                log.exception("syncing gateway quota counters failed")

    async def tokens_today(self, tenant: str, now: datetime | None = None) -> int:
        """The tenant's tokens today as last read: at most ``cache_ttl_s`` old, or one read
        older while the next read is under way. Only a tenant's first request waits for
        PostgreSQL; a request that finds the value expired starts the read and goes on with
        the last value (a blocking read every second put one database round trip into the
        gateway's p99)."""
        cached = self._day_tokens.get(tenant)
        if cached is None:
            return await self._read_day_tokens(tenant, now)
        if time.monotonic() - cached[0] >= self.cache_ttl_s and tenant not in self._day_refresh:
            task = asyncio.create_task(self._refresh_day_tokens(tenant))
            self._day_refresh[tenant] = task
            task.add_done_callback(lambda _: self._day_refresh.pop(tenant, None))
        return cached[1]

    async def _refresh_day_tokens(self, tenant: str) -> None:
        try:
            await self._read_day_tokens(tenant)
        except Exception:  # the last value serves until a read succeeds
            log.warning("reading the day's token counter of %s failed", tenant, exc_info=True)

    async def _read_day_tokens(self, tenant: str, now: datetime | None = None) -> int:
        async with self._day_reads.setdefault(tenant, asyncio.Lock()):
            cached = self._fresh_day_tokens(tenant)
            if cached is not None:
                return cached  # read by the request this one waited for
            async with self.sessions() as session:
                value = (
                    await session.execute(
                        text(
                            "SELECT value FROM gateway_quota_counters "
                            "WHERE tenant_id = :tenant AND window_key = :window"
                        ),
                        {"tenant": tenant, "window": _day_key(now or datetime.now(UTC))},
                    )
                ).scalar_one_or_none()
        used = int(value or 0)
        self._day_tokens[tenant] = (time.monotonic(), used)
        return used

    def _fresh_day_tokens(self, tenant: str) -> int | None:
        cached = self._day_tokens.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1]
        return None

    # -- ledger ---------------------------------------------------------------------
    def record(self, rec: UsageRecord) -> None:
        """Queue a record for the writer (never blocks the request)."""
        rec.created_at = rec.created_at or datetime.now(UTC)
        self._backlog.put(rec)

    def start(self) -> None:
        """Start the usage writer and the quota counter sync (requests per minute are then
        counted in memory and added to the shared counters every ``sync_interval_s``)."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="gateway-usage-writer")
        if self._syncer is None:
            self._syncer = asyncio.create_task(self._sync_loop(), name="gateway-quota-sync")

    async def flush(self) -> None:
        """Write everything queued now (and what a failed round left), in batches."""
        await self._backlog.drain(self._write)

    async def close(self) -> None:
        for task in list(self._day_refresh.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
            await self.sync_minutes()
            self._syncer = None
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.flush()

    async def _run(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
                if time.monotonic() - last_prune > 600:
                    await self._prune()
                    last_prune = time.monotonic()
            except Exception:  # the next round retries what is still queued
                log.exception("writing gateway usage failed")

    async def _prune(self) -> None:
        """Drop minute counters older than five minutes and day counters older than 40 days
        (ISO keys compare as strings)."""
        now = datetime.now(UTC)
        async with self.sessions() as session:
            await session.execute(
                text(
                    "DELETE FROM gateway_quota_counters WHERE "
                    "(window_key LIKE 'm:%' AND window_key < :minute) OR "
                    "(window_key LIKE 'd:%' AND window_key < :day)"
                ),
                {
                    "minute": _minute_key(now - timedelta(minutes=5)),
                    "day": _day_key(now - timedelta(days=40)),
                },
            )
            await session.commit()

    async def _write(self, batch: list[UsageRecord]) -> None:
        rows = [
            (r.created_at, r.tenant_id, r.subject, r.model, r.backend, r.prompt_tokens,
             r.completion_tokens, r.latency_ms, r.ttft_ms, r.status, r.stream, r.error_code)
            for r in batch
        ]  # fmt: skip
        per_day: dict[tuple[str, str], int] = {}
        for r in batch:
            assert r.created_at is not None
            key = (r.tenant_id, _day_key(r.created_at))
            per_day[key] = per_day.get(key, 0) + r.prompt_tokens + r.completion_tokens
        totals: dict[str, int] = {}
        today = _day_key(datetime.now(UTC))
        async with self.sessions() as session:
            await copy_rows(session, "gateway_usage", _USAGE_COLUMNS, rows)
            for (tenant, window), n in sorted(per_day.items()):
                if n:
                    total = (
                        await session.execute(_BUMP, {"tenant": tenant, "window": window, "n": n})
                    ).scalar_one()
                    if window == today:
                        totals[tenant] = int(total)
            await session.commit()
        for tenant, _ in per_day:
            # the counter as the commit left it, every replica's tokens included: the gate
            # need not read it again
            if tenant in totals:
                self._day_tokens[tenant] = (time.monotonic(), totals[tenant])
            else:
                self._day_tokens.pop(tenant, None)

    # -- reports --------------------------------------------------------------------
    async def report(
        self,
        tenant: str,
        since: datetime,
        until: datetime | None = None,
        model: str | None = None,
        group_by: str = "day",
    ) -> list[dict[str, Any]]:
        """Usage grouped by day (or hour) and model: requests, tokens, errors, latency."""
        bucket = {"day": "day", "hour": "hour"}.get(group_by)
        if bucket is None:
            raise ValueError("group_by must be 'day' or 'hour'")
        sql = (
            f"SELECT date_trunc('{bucket}', created_at) AS period, model, "
            "count(*) AS requests, sum(prompt_tokens) AS prompt_tokens, "
            "sum(completion_tokens) AS completion_tokens, "
            "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms "
            "FROM gateway_usage WHERE tenant_id = :tenant AND created_at >= :since "
            "AND (CAST(:until AS timestamptz) IS NULL OR created_at < :until) "
            "AND (CAST(:model AS text) IS NULL OR model = :model) "
            "GROUP BY period, model ORDER BY period, model"
        )
        async with self.sessions() as session:
            result = await session.execute(
                text(sql), {"tenant": tenant, "since": since, "until": until, "model": model}
            )
            return [
                {
                    "period": row.period.isoformat(),
                    "tenant": tenant,
                    "model": row.model,
                    "requests": int(row.requests),
                    "prompt_tokens": int(row.prompt_tokens or 0),
                    "completion_tokens": int(row.completion_tokens or 0),
                    "errors": int(row.errors),
                    "latency_p50_ms": round(float(row.latency_p50_ms or 0), 2),
                    "latency_p95_ms": round(float(row.latency_p95_ms or 0), 2),
                }
                for row in result
            ]
