"""What the logs and DLQ readers share: composing a filtered SELECT and fetching rows as dicts."""

from __future__ import annotations

from datetime import UTC
from typing import Any, LiteralString

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from router.store.jsonb import use_orjson


def compose_select(
    select: LiteralString, where: list[sql.SQL], tail: LiteralString | None
) -> sql.Composed:
    """`select` + `WHERE` the fixed fragments joined with AND + `tail` (order, limit)."""
    parts: list[sql.Composable] = [sql.SQL(select)]
    if where:
        parts += [sql.SQL("WHERE"), sql.SQL(" AND ").join(where)]
    if tail is not None:
        parts.append(sql.SQL(tail))
    return sql.SQL("\n").join(parts)


async def fetch_dicts(
    conn: AsyncConnection,
    statement: sql.Composed,
    params: dict[str, Any],
    times: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Rows as dicts, jsonb read with orjson, the `times` columns in UTC (the API speaks UTC;
    the session's time zone is the server's)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        use_orjson(cur)
        await cur.execute(statement, params)
        rows = await cur.fetchall()
    for row in rows:
        for name in times:
            if row[name] is not None:
                row[name] = row[name].astimezone(UTC)
    return rows
