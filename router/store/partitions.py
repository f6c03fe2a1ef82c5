"""Retention by partition: daily partitions made ahead, expired ones detached and dropped.

Runs in every router (one process at a time: a session advisory lock) and as `router
maintain`. Rows are never deleted one by one; pending and parked DLQ entries live in
`dlq_open`, which is not time-partitioned, so retention cannot reach them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import structlog
from psycopg import AsyncConnection, sql

from router.store.errors import StoreError, wrap_database_errors
from router.store.queries import query

log = structlog.get_logger("router.store.partitions")

# The time-partitioned tables: the log by created_at, closed DLQ entries by closed_at.
PARENTS = ("signal_log", "dlq_closed")
DAYS_AHEAD = 7
# Any fixed key distinct from lock_log_id's hashes (a 2^-64 chance to share one).
MAINTENANCE_LOCK = 0x5167_6E61_6C5F_6D74
# DDL waits at most this for its lock: queued behind a long transaction, an ATTACH would
# hold up every insert queued behind it; better to try again at the next run.
LOCK_TIMEOUT = "500ms"
# Each router runs maintenance this often (and at start); after a failure, sooner.
INTERVAL_S = 3600.0
RETRY_S = 60.0


@dataclass(slots=True)
class Maintained:
    """What one maintenance run did; `skipped` when another process holds the lock."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: bool = False


async def maintain(url: str, *, retention: timedelta, days_ahead: int = DAYS_AHEAD) -> Maintained:
    """Create the partitions of the next `days_ahead` days, drop those past `retention`."""
    done = Maintained()
    with wrap_database_errors():
        conn = await AsyncConnection.connect(url, autocommit=True, application_name="maintain")
        async with conn:
            cur = await conn.execute(query("maintenance_try_lock"), {"key": MAINTENANCE_LOCK})
            row = await cur.fetchone()
            if row is None or not row[0]:
                done.skipped = True
                return done
            try:
                await conn.execute(sql.SQL("SET lock_timeout = {}").format(LOCK_TIMEOUT))
                for parent in PARENTS:
                    done.created += await _create_ahead(conn, parent, days_ahead)
                for parent in PARENTS:
                    done.dropped += await _drop_expired(conn, parent, retention)
            finally:
                await conn.execute(query("maintenance_unlock"), {"key": MAINTENANCE_LOCK})
    if done.created or done.dropped:
        log.info("partitions_maintained", created=done.created, dropped=done.dropped)
    return done


async def keep_partitions(url: str, *, retention: timedelta) -> None:
    """maintain() at start and every INTERVAL_S, for as long as the router runs."""
    while True:
        try:
            await maintain(url, retention=retention)
            delay = INTERVAL_S
        except StoreError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # psycopg can surface a cancelled connect as a closed connection
            log.warning("partition_maintenance_failed", error=str(exc), retry_in_s=RETRY_S)
            delay = RETRY_S
        await asyncio.sleep(delay)


async def _bounds(conn: AsyncConnection, parent: str) -> list[tuple[str, datetime, datetime, bool]]:
    cur = await conn.execute(query("partition_bounds"), {"parent": parent})
    return [(r[0], r[1], r[2], bool(r[3])) for r in await cur.fetchall()]


async def _create_ahead(conn: AsyncConnection, parent: str, days_ahead: int) -> list[str]:
    cur = await conn.execute(query("partition_days_ahead"), {"days": days_ahead})
    return await create_days(conn, parent, [row[0] for row in await cur.fetchall()])


async def create_days(conn: AsyncConnection, parent: str, days: list[date]) -> list[str]:
    """A partition of `parent` for each UTC day in `days` no partition covers yet; the names
    created. Each is an empty table attached: ATTACH locks the parent only against DDL (a
    CREATE … PARTITION OF would lock out every insert meanwhile)."""
    existing = await _bounds(conn, parent)
    created: list[str] = []
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        if any(lo < end and start < hi for _, lo, hi, _ in existing):
            continue  # that day is covered, whatever the partition is called
        name = partition_name(parent, day)
        table, parent_id = sql.Identifier(name), sql.Identifier(parent)
        async with conn.transaction():
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(table, parent_id)
            )
            await conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    parent_id, table, sql.Literal(start), sql.Literal(end)
                )
            )
        created.append(name)
    return created


async def _drop_expired(conn: AsyncConnection, parent: str, retention: timedelta) -> list[str]:
    """Detach (concurrently: inserts and reads go on) and drop each partition whose every row
    is older than `retention`."""
    cur = await conn.execute(query("retention_cutoff"), {"retention_s": retention.total_seconds()})
    row = await cur.fetchone()
    assert row is not None
    cutoff: datetime = row[0]
    dropped: list[str] = []
    parent_id = sql.Identifier(parent)
    for name, _, upper, detach_pending in await _bounds(conn, parent):
        if upper > cutoff:
            continue
        table = sql.Identifier(name)
        # A detach interrupted half way (the process died) is finished, not restarted.
        how = sql.SQL("FINALIZE") if detach_pending else sql.SQL("CONCURRENTLY")
        await conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(parent_id, table, how)
        )
        await conn.execute(sql.SQL("DROP TABLE {}").format(table))
        dropped.append(name)
    return dropped


def partition_name(parent: str, day: date) -> str:
    """The daily partition's name, as migration 0004 names them: signal_log_p20261203."""
    return f"{parent}_p{day:%Y%m%d}"
