"""The latency_stats table: adding a process's per-minute buckets, reading merged rows, expiry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from psycopg_pool import AsyncConnectionPool

from router.model import StatsItem
from router.store.errors import connection
from router.store.queries import query
from router.store.reads import fetch_dicts

# Upper bounds of the histogram buckets, ms: four per doubling from 0.25 ms (each ~19 % wider
# than the last), up to a day, the longest timeout a table may set. A bucket array's i-th count
# is of latencies in (BOUNDS_MS[i-1], BOUNDS_MS[i]].
BOUNDS_MS: tuple[float, ...] = tuple(
    round(0.25 * 2 ** (i / 4), 4) for i in range(math.ceil(4 * math.log2(86_400_000 / 0.25)) + 1)
)


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """GET /stats filters; None means "any"."""

    kind: str | None = None
    agent: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(slots=True)
class StatsCell:
    """One process's counts for one minute, kind and agent, not yet added to the table."""

    minute: datetime
    kind: str
    agent: str
    count: int = 0
    errors: int = 0
    sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BOUNDS_MS))

    def as_row(self) -> dict[str, Any]:
        """The stats_add JSON shape."""
        return {
            "minute": self.minute.isoformat(),
            "kind": self.kind,
            "agent": self.agent,
            "count": self.count,
            "errors": self.errors,
            "sum_ms": self.sum_ms,
            "buckets": self.buckets,
        }


async def add(pool: AsyncConnectionPool, cells: list[StatsCell]) -> None:
    """Add the cells' counts and buckets into their rows, in one statement."""
    rows = orjson.dumps([cell.as_row() for cell in cells]).decode()
    async with connection(pool) as conn:
        await conn.execute(query("stats_add"), {"rows": rows})


async def fetch_page(
    pool: AsyncConnectionPool, filters: StatsFilter, *, limit: int
) -> list[StatsItem]:
    """Up to `limit` rows newest first, percentiles from their merged buckets."""
    params = {
        "kind": filters.kind,
        "agent": filters.agent,
        "since": filters.since,
        "until": filters.until,
        "limit": limit,
    }
    async with connection(pool) as conn:
        rows = await fetch_dicts(conn, query("stats_page"), params, ("minute",))
    return cast(list[StatsItem], rows)


async def expire(pool: AsyncConnectionPool, cutoff: datetime) -> int:
    """Delete the rows of minutes before `cutoff`; how many went."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("stats_expire"), {"cutoff": cutoff})
        return cur.rowcount
