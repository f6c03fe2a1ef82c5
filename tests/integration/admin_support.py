"""Helpers of the admin API tests: requests with a key, rows seeded straight into the tables."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

from tests.support import ADMIN_KEY, RouterServer


async def admin(
    router: RouterServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = ADMIN_KEY,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """An admin request; (status, parsed JSON body)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with router.session.request(
        method, f"{router.base}{path}", data=data, headers=headers
    ) as resp:
        text = await resp.read()
        return resp.status, json.loads(text) if text else None


def seed_dead_letters(
    database_url: str,
    count: int,
    *,
    prefix: str = "seed",
    agents: tuple[str, ...] = ("alpha",),
    kind: str = "solo",
    mode: str = "all",
    status: str = "pending",
) -> list[int]:
    """`count` dead-lettered signals with their DLQ entries; the entries' ids, oldest first."""
    agents_json = json.dumps(list(agents))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, metadata,"
            " event_time, routed_agents, response, trace_id, attempts, payload_hash)"
            " SELECT %(prefix)s || '-' || i, 'sender-' || mod(i, 7), %(kind)s, 'dead_lettered',"
            " %(mode)s, jsonb_build_object('n', i), NULL, '2026-11-23T10:00:00Z',"
            " %(agents)s::jsonb, '[]'::jsonb, lpad(to_hex(i), 32, 'a'), 3, 'h'"
            " FROM generate_series(1, %(count)s) AS i",
            {"prefix": prefix, "kind": kind, "mode": mode, "agents": agents_json, "count": count},
        )
        rows = conn.execute(
            "INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, metadata,"
            " event_time, trace_id, last_error, attempts, status, closed_at)"
            " SELECT log_id, sender_id, kind, routed_agents, mode, payload, metadata, event_time,"
            " trace_id, 'seeded', 3, %(status)s, CASE WHEN %(status)s IN ('resolved', 'discarded')"
            " THEN now() END FROM signal_log"
            " WHERE log_id LIKE %(prefix)s || '-%%' ORDER BY (split_part(log_id, '-', 2))::int"
            " RETURNING id",
            {"prefix": prefix, "status": status},
        ).fetchall()
    return [r[0] for r in rows]


def dlq_rows(router: RouterServer) -> list[tuple[Any, ...]]:
    """Every DLQ row, every column, by id."""
    return router.query("SELECT * FROM dlq ORDER BY id")


def log_rows(router: RouterServer) -> list[tuple[Any, ...]]:
    """Every signal_log row, every column, by log_id."""
    return router.query("SELECT * FROM signal_log ORDER BY log_id")


def seed_log_rows(
    database_url: str, rows: list[tuple[str, str, str, str, datetime]], *, payload: str = "{}"
) -> None:
    """signal_log rows (log_id, sender_id, kind, status, created_at) with a given payload."""
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload,"
            " routed_agents, trace_id, payload_hash, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, 'all', %s::jsonb, '[\"alpha\"]', %s, 'h', %s, %s)",
            [
                (log_id, sender, kind, status, payload, "ab" * 16, created, created)
                for log_id, sender, kind, status, created in rows
            ],
        )
