"""Tests of per-clock-minute quotas must not straddle a minute boundary."""

from __future__ import annotations

import asyncio
import time


async def same_minute_ahead(seconds: float = 15.0) -> None:
    """Return when at least ``seconds`` remain in the current clock minute (waiting for the
    next minute if needed), so that the requests that follow are counted in one window."""
    left = 60 - time.time() % 60
    if left < seconds:
        await asyncio.sleep(left + 0.5)
