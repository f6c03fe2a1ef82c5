"""What the logs and DLQ readers share: fetching rows as dicts, planned per execution."""

from __future__ import annotations

from datetime import UTC
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from router.store.jsonb import use_orjson


async def fetch_dicts(
    conn: AsyncConnection,
    statement: LiteralString,
    params: dict[str, Any],
    times: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Rows as dicts, jsonb read with orjson, the `times` columns in UTC (the API speaks UTC;
    the session's time zone is the server's).

    Never prepared: a prepared statement may get a generic plan, which cannot drop the NULL
    filters of logs_page or dlq_page and so cannot pick their index; planned per execution,
    each gets the plan of the filters it was given.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        use_orjson(cur)
        await cur.execute(statement, params, prepare=False)
        rows = await cur.fetchall()
    for row in rows:
        for name in times:
            if row[name] is not None:
                row[name] = row[name].astimezone(UTC)
    return rows
