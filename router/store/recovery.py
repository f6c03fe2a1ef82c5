"""Abandoned claims and the DLQ backlog: the periodic work every worker does."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from psycopg_pool import AsyncConnectionPool

from router.store.errors import StoreError, connection
from router.store.observer import StoreObserver
from router.store.queries import query

log = structlog.get_logger("router.store.recovery")

SWEEP_BATCH = 500


async def sweep_abandoned(pool: AsyncConnectionPool, *, limit: int = SWEEP_BATCH) -> int:
    """Move claims past their deadline (router died) to the DLQ as interrupted; count them."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("sweep_abandoned"), {"limit": limit})
        return len(await cur.fetchall())


async def dlq_backlog(pool: AsyncConnectionPool) -> int:
    """Pending DLQ entries (an index-only count over the partial pending index)."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("dlq_backlog"))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def run_maintenance(
    pool: AsyncConnectionPool,
    metrics: StoreObserver | None,
    *,
    interval_s: float,
    backlog_changed: asyncio.Event | None = None,
    backlog_refresh_s: float = 1.0,
) -> None:
    """Sweep abandoned claims every `interval_s`; refresh dlq_backlog then, and within
    `backlog_refresh_s` of `backlog_changed` being set (one count, never one per request)."""
    next_sweep = 0.0
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        changed = backlog_changed is not None and backlog_changed.is_set()
        if now >= next_sweep or changed:
            if backlog_changed is not None:
                backlog_changed.clear()
            with contextlib.suppress(StoreError):
                if now >= next_sweep:
                    next_sweep = now + interval_s
                    await _sweep_all(pool, metrics)
                if metrics is not None:
                    metrics.dlq_backlog.set(await dlq_backlog(pool))
        if metrics is not None:
            metrics.observe_pool(pool.get_stats())
        await asyncio.sleep(min(backlog_refresh_s, max(0.0, next_sweep - loop.time())))


async def _sweep_all(pool: AsyncConnectionPool, metrics: StoreObserver | None) -> None:
    swept = batch = await sweep_abandoned(pool)
    while batch == SWEEP_BATCH:  # a backlog after a crash: keep going
        batch = await sweep_abandoned(pool)
        swept += batch
    if swept:
        log.warning("abandoned_claims_swept", count=swept)
        if metrics is not None:
            metrics.dlq_total.inc(swept)
