"""The dead-letter queue table: pages and entries for the API, claims and settlements for replay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from router.model import DlqEntry, DlqStatus, LogStatus
from router.store.errors import connection
from router.store.jsonb import use_orjson
from router.store.queries import query
from router.store.reads import fetch_dicts


class EntryBusy(Exception):
    """A replayer holds this entry right now; try again once its replay has finished."""


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """GET /dlq and bulk-replay filters; None means "any"."""

    status: DlqStatus | None = None
    agent: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class SignalRow:
    """What a replay needs of the signal's log row to update it."""

    log_id: str
    status: LogStatus
    response: list[dict[str, Any]] | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EntryUpdate:
    """An entry after one replay: absolute values, the row being locked by its claim."""

    id: int
    status: DlqStatus
    agents: list[str]
    last_error: str | None
    attempts: int
    replay_count: int


@dataclass(frozen=True, slots=True)
class SignalUpdate:
    """A log row after one replay: its status, merged outcomes, and the attempts made; written
    only if the row is still as the replay read it (`read`), a compare-and-set."""

    log_id: str
    status: LogStatus
    response: str
    attempts: int
    read: SignalRow


class ClaimedBatch:
    """Entries locked by this transaction until `settle` commits (or the block exits)."""

    def __init__(
        self, conn: AsyncConnection, entries: list[DlqEntry], signals: dict[str, SignalRow]
    ) -> None:
        self._conn = conn
        self.entries = entries
        self.signals = signals

    async def settle(self, entries: Sequence[EntryUpdate], signals: Sequence[SignalUpdate]) -> None:
        """Write the outcomes; they commit when the claim's block exits."""
        if entries:
            await self._conn.execute(
                query("dlq_settle"),
                {
                    "id": [u.id for u in entries],
                    "status": [u.status for u in entries],
                    "agents": [orjson.dumps(u.agents).decode() for u in entries],
                    "last_error": [u.last_error for u in entries],
                    "attempts": [u.attempts for u in entries],
                    "replay_count": [u.replay_count for u in entries],
                },
            )
        if signals:
            await self._conn.execute(
                query("dlq_settle_signals"),
                {
                    "log_id": [u.log_id for u in signals],
                    "status": [u.status for u in signals],
                    "response": [u.response for u in signals],
                    "attempts": [u.attempts for u in signals],
                    "read_status": [u.read.status for u in signals],
                    "read_updated_at": [u.read.updated_at for u in signals],
                },
            )


async def fetch_page(
    pool: AsyncConnectionPool,
    filters: DlqFilter,
    *,
    limit: int,
    before_id: int | None,
    log_id: str | None = None,
) -> list[DlqEntry]:
    """Up to `limit` entries newest first (id DESC), below `before_id` when given; only the
    entry of `log_id` when given (a signal has at most one)."""
    params = _filter_params(filters) | {"before_id": before_id, "limit": limit, "log_id": log_id}
    async with connection(pool) as conn:
        return await _entries(conn, "dlq_page", params)


async def fetch_one(pool: AsyncConnectionPool, entry_id: int) -> DlqEntry | None:
    """The entry `entry_id`, or None."""
    async with connection(pool) as conn:
        rows = await _entries(conn, "dlq_one", {"id": entry_id})
    return rows[0] if rows else None


async def discard(pool: AsyncConnectionPool, entry_id: int) -> DlqEntry | None:
    """Mark a pending or parked entry discarded; the entry as it now is, None when absent.

    A resolved entry is returned unchanged. Raises EntryBusy while a replayer holds it:
    waiting for its dispatch to end could take the whole signal deadline.
    """
    async with connection(pool) as conn:
        try:
            async with conn.transaction():
                rows = await _entries_moving(conn, "dlq_one_for_discard", {"id": entry_id})
                if not rows:
                    return None
                entry = rows[0]
                if entry.status in ("pending", "parked"):
                    await conn.execute(query("dlq_discard"), {"id": entry_id})
                    entry.status = "discarded"
                return entry
        except psycopg.errors.LockNotAvailable:
            # Caught before connection() would map it: busy, not the database failing.
            raise EntryBusy(EntryBusy.__doc__) from None


async def count_pending(pool: AsyncConnectionPool, filters: DlqFilter) -> int:
    """Pending entries matching `filters` (agent, kind) right now."""
    params = _filter_params(filters)
    async with connection(pool) as conn:
        cur = await conn.execute(query("dlq_pending_count"), params, prepare=False)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def round_clock(pool: AsyncConnectionPool) -> datetime:
    """The database's current time: the start of a replay round."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("dlq_round_clock"))
        row = await cur.fetchone()
    assert row is not None
    started: datetime = row[0]
    return started


async def list_claimable(
    pool: AsyncConnectionPool, filters: DlqFilter, *, round_started: datetime, limit: int
) -> list[DlqEntry]:
    """What a bulk round would claim now, without claiming it (dry run)."""
    params = _round_params(filters, round_started, limit, None)
    async with connection(pool) as conn:
        return await _entries(conn, "dlq_claimable", params)


async def fetch_replayable(pool: AsyncConnectionPool, ids: Sequence[int]) -> list[DlqEntry]:
    """The entries among `ids` a replay by id would dispatch, oldest first (dry run)."""
    async with connection(pool) as conn:
        return await _entries(conn, "dlq_replayable_ids", {"ids": list(ids)})


async def statuses(pool: AsyncConnectionPool, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of `ids` that exists."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("dlq_statuses"), {"ids": list(ids)})
        return {int(r[0]): str(r[1]) for r in await cur.fetchall()}


@contextlib.asynccontextmanager
async def claim_pending(
    pool: AsyncConnectionPool,
    filters: DlqFilter,
    *,
    round_started: datetime,
    limit: int,
    hold_s: float,
    after: tuple[datetime, int] | None = None,
) -> AsyncIterator[ClaimedBatch]:
    """Lock up to `limit` pending entries of this round, oldest first (past `after`, the
    (created_at, id) where its previous claims ended), for the block's length."""
    params = _round_params(filters, round_started, limit, after)
    async with _claim(pool, "dlq_claim_round", params, hold_s) as b:
        yield b


@contextlib.asynccontextmanager
async def claim_ids(
    pool: AsyncConnectionPool, ids: Sequence[int], *, hold_s: float
) -> AsyncIterator[ClaimedBatch]:
    """Lock the pending or parked entries among `ids` that no other replayer holds."""
    async with _claim(pool, "dlq_claim_ids", {"ids": list(ids)}, hold_s) as b:
        yield b


@contextlib.asynccontextmanager
async def _claim(
    pool: AsyncConnectionPool, name: str, params: dict[str, Any], hold_s: float
) -> AsyncIterator[ClaimedBatch]:
    async with connection(pool) as conn, conn.transaction():
        # The batch stays locked while it is dispatched; a replayer that hangs instead
        # of dying must not hold its entries forever.
        await conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
            (f"{int(hold_s * 1000)}ms",),
        )
        entries = await _entries_moving(conn, name, params)
        signals: dict[str, SignalRow] = {}
        if entries:
            async with conn.cursor() as cur:
                use_orjson(cur)
                await cur.execute(
                    query("dlq_signal_rows"), {"log_ids": [e.log_id for e in entries]}
                )
                signals = {r[0]: SignalRow(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()}
        yield ClaimedBatch(conn, entries, signals)


def _filter_params(filters: DlqFilter) -> dict[str, Any]:
    agent = None if filters.agent is None else orjson.dumps([filters.agent]).decode()
    return {"status": filters.status, "agent": agent, "kind": filters.kind}


def _round_params(
    filters: DlqFilter, started: datetime, limit: int, after: tuple[datetime, int] | None
) -> dict[str, Any]:
    after_at, after_id = after if after is not None else (None, None)
    return _filter_params(filters) | {
        "round_started": started,
        "limit": limit,
        "after_created_at": after_at,
        "after_id": after_id,
    }


# Closing an entry moves its row to another partition. A statement that read the row before
# that commit and then locks it fails with a serialization error (PostgreSQL cannot follow a
# row across partitions); run again, it sees the entry where it now is.
MOVED_RETRIES = 3


async def _entries_moving(
    conn: AsyncConnection, name: str, params: dict[str, Any]
) -> list[DlqEntry]:
    """_entries for a locking statement, inside a transaction: run again (each try in its own
    savepoint) when a concurrent close moved a row it was about to lock."""
    for attempt in range(MOVED_RETRIES):
        try:
            async with conn.transaction():
                return await _entries(conn, name, params)
        except psycopg.errors.SerializationFailure:
            if attempt == MOVED_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _entries(conn: AsyncConnection, name: str, params: dict[str, Any]) -> list[DlqEntry]:
    rows = await fetch_dicts(conn, query(name), params, ("created_at", "last_attempt_at"))
    return [DlqEntry(**row) for row in rows]
