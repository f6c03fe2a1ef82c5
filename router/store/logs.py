"""Reading the signal log: one row by log_id, or a keyset page of rows newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from router.model import LogItem
from router.store.errors import connection
from router.store.queries import query
from router.store.reads import fetch_dicts


@dataclass(frozen=True, slots=True)
class LogFilter:
    """GET /logs filters; None means "any"."""

    sender_id: str | None = None
    kind: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def page_params(
    filters: LogFilter, *, limit: int, after: tuple[datetime, str] | None
) -> dict[str, Any]:
    """logs_page's parameters: None drops a filter."""
    cursor_at, cursor_id = after if after is not None else (None, None)
    return {
        "sender_id": filters.sender_id,
        "kind": filters.kind,
        "status": filters.status,
        "since": filters.since,
        "until": filters.until,
        "cursor_created_at": cursor_at,
        "cursor_log_id": cursor_id,
        "limit": limit,
    }


async def fetch_page(
    pool: AsyncConnectionPool,
    filters: LogFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[LogItem]:
    """Up to `limit` rows newest first, after the cursor position when one is given."""
    async with connection(pool) as conn:
        return await _rows(conn, "logs_page", page_params(filters, limit=limit, after=after))


async def fetch_one(pool: AsyncConnectionPool, log_id: str) -> LogItem | None:
    """The row of `log_id`, or None."""
    async with connection(pool) as conn:
        rows = await _rows(conn, "logs_one", {"log_id": log_id})
    return rows[0] if rows else None


async def _rows(conn: AsyncConnection, name: str, params: dict[str, Any]) -> list[LogItem]:
    rows = await fetch_dicts(conn, query(name), params, ("created_at", "updated_at"))
    return [LogItem(**row) for row in rows]
