"""Reading the signal log: one row by log_id, or a keyset page of rows newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from router.model import LogItem
from router.store.errors import connection
from router.store.queries import query
from router.store.reads import compose_select, fetch_dicts


@dataclass(frozen=True, slots=True)
class LogFilter:
    """GET /logs filters; None means "any"."""

    sender_id: str | None = None
    kind: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def page_query(
    filters: LogFilter, *, limit: int, after: tuple[datetime, str] | None
) -> tuple[sql.Composed, dict[str, Any]]:
    """The page's SQL, joined from fixed fragments, and its parameters."""
    params: dict[str, Any] = {"limit": limit}
    where: list[sql.SQL] = []
    for name, value in (
        ("sender", filters.sender_id),
        ("kind", filters.kind),
        ("status", filters.status),
        ("since", filters.since),
        ("until", filters.until),
    ):
        if value is not None:
            where.append(sql.SQL(query(f"logs_where_{name}")))
    params.update(
        sender_id=filters.sender_id,
        kind=filters.kind,
        status=filters.status,
        since=filters.since,
        until=filters.until,
    )
    if after is not None:
        where.append(sql.SQL(query("logs_where_after_cursor")))
        params.update(cursor_created_at=after[0], cursor_log_id=after[1])
    return compose_select(query("logs_select"), where, query("logs_order_newest")), params


async def fetch_page(
    pool: AsyncConnectionPool,
    filters: LogFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[LogItem]:
    """Up to `limit` rows newest first, after the cursor position when one is given."""
    statement, params = page_query(filters, limit=limit, after=after)
    async with connection(pool) as conn:
        return await _rows(conn, statement, params)


async def fetch_one(pool: AsyncConnectionPool, log_id: str) -> LogItem | None:
    """The row of `log_id`, or None."""
    statement = compose_select(query("logs_select"), [sql.SQL(query("logs_where_log_id"))], None)
    async with connection(pool) as conn:
        rows = await _rows(conn, statement, {"log_id": log_id})
    return rows[0] if rows else None


async def _rows(
    conn: AsyncConnection, statement: sql.Composed, params: dict[str, Any]
) -> list[LogItem]:
    # logs_select's columns are LogItem's keys; the OpenAPI conformance test holds them to it.
    rows = await fetch_dicts(conn, statement, params, ("created_at", "updated_at"))
    return cast(list[LogItem], rows)
