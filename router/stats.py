"""Per-minute latency statistics: counted in memory as signals are answered, added to the
latency_stats table once a minute (and at shutdown) by a background task.

The request path only finds a cell and bumps four numbers per agent; the database write, the
merging with other processes and the percentiles are the flush's and the reader's. Counts are
of the route path's deliveries (one per signal and agent, retries included in its latency), not
of replays, so /stats says what the clients' traffic met.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from psycopg_pool import AsyncConnectionPool

from router.model import AgentOutcome
from router.store import stats as store
from router.store.errors import StoreError
from router.store.stats import BOUNDS_MS, StatsCell

log = structlog.get_logger("router.stats")

# Cells kept while the database is away: two hours of a busy table, then the oldest go.
MAX_PENDING_CELLS = 20_000


class LatencyStats:
    """This process's cells since the last flush, by (minute, kind, agent)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cells: dict[tuple[int, str, str], StatsCell] = {}

    def record(self, kind: str, outcomes: Sequence[AgentOutcome]) -> None:
        """Count one signal's deliveries in the current minute."""
        minute = int(self._clock() // 60)
        cells = self._cells
        for outcome in outcomes:
            key = (minute, kind, outcome.agent)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = StatsCell(
                    datetime.fromtimestamp(minute * 60, UTC), kind, outcome.agent
                )
            cell.count += 1
            cell.errors += not outcome.ok
            cell.sum_ms += outcome.latency_ms
            cell.buckets[min(bisect_left(BOUNDS_MS, outcome.latency_ms), len(BOUNDS_MS) - 1)] += 1

    def take(self) -> list[StatsCell]:
        """Every cell so far; counting starts afresh."""
        cells, self._cells = self._cells, {}
        return list(cells.values())

    def give_back(self, cells: list[StatsCell]) -> None:
        """Cells a flush could not write: merged into what was counted since, oldest dropped
        beyond MAX_PENDING_CELLS."""
        for cell in cells:
            key = (int(cell.minute.timestamp() // 60), cell.kind, cell.agent)
            mine = self._cells.get(key)
            if mine is None:
                self._cells[key] = cell
                continue
            mine.count += cell.count
            mine.errors += cell.errors
            mine.sum_ms += cell.sum_ms
            mine.buckets = [a + b for a, b in zip(mine.buckets, cell.buckets, strict=True)]
        if len(self._cells) > MAX_PENDING_CELLS:
            dropped = sorted(self._cells)[: len(self._cells) - MAX_PENDING_CELLS]
            for key in dropped:
                del self._cells[key]
            log.warning("stats_dropped", cells=len(dropped))


class StatsFlusher:
    """The background task: flush every `interval_s`, expire rows past `retention`, and flush
    once more at close."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        stats: LatencyStats,
        *,
        interval_s: float,
        retention: timedelta,
    ) -> None:
        self._pool = pool
        self._stats = stats
        self._interval_s = interval_s
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the flush loop in the current event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stats-flush")

    async def close(self) -> None:
        """Stop the loop and write what was counted since its last flush."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> bool:
        """Add this process's cells into latency_stats; on failure keep them for the next."""
        cells = self._stats.take()
        if not cells:
            return True
        try:
            await store.add(self._pool, cells)
        except StoreError as exc:
            self._stats.give_back(cells)
            log.warning("stats_flush_failed", cells=len(cells), error=str(exc))
            return False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if await self.flush():
                with contextlib.suppress(StoreError):
                    await store.expire(self._pool, datetime.now(UTC) - self._retention)
