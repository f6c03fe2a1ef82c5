"""Retention by partition and idempotency across partitions, on real PostgreSQL and routers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import psycopg
import pytest

from router import migrate
from tests.support import (
    API_KEY,
    ROOT,
    AgentProcess,
    router_env,
    router_processes,
    with_database,
)

LOG_ROW = (
    "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, routed_agents,"
    " trace_id, payload_hash, created_at)"
    " SELECT %(prefix)s || g, 's', 'solo', 'delivered', 'all', '{}', '[\"alpha\"]', 't', 'h',"
    " now() - %(days)s * interval '1 day' - g * interval '1 second'"
    " FROM generate_series(1, %(count)s) AS g"
)
DLQ_ROW = (
    "INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, status,"
    " created_at, closed_at)"
    " VALUES (%(log_id)s, 's', 'solo', '[\"alpha\"]', 'all', '{}', 't', %(status)s,"
    " now() - %(days)s * interval '1 day',"
    " CASE WHEN %(status)s IN ('resolved', 'discarded') THEN now() - %(days)s * interval '1 day'"
    " END)"
)


@pytest.fixture
def scratch_db(server_url: str) -> Iterator[str]:
    name = f"router_ret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_moves_a_populated_table_into_daily_partitions(scratch_db: str) -> None:
    """0003 → 0004 on a log of 20 days and a DLQ: every row lands on its day, ids are kept,
    and a log_id stored before the move is still found by lock_log_id."""
    migrate.upgrade(scratch_db, "0003")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload,"
            " routed_agents, trace_id, payload_hash, created_at)"
            " SELECT 'old-' || g, 's', 'k', 'delivered', 'all', '{}', '[]', 't', 'h',"
            " now() - g * interval '1 hour' FROM generate_series(1, 480) AS g"
        )
        conn.execute(
            "INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, status,"
            " created_at, last_attempt_at)"
            " SELECT 'old-' || g, 's', 'k', '[]', 'all', '{}', 't',"
            " (ARRAY['pending', 'parked', 'resolved', 'discarded'])[1 + g % 4],"
            " now() - g * interval '1 hour', now() - g * interval '1 hour'"
            " FROM generate_series(1, 40) AS g"
        )
        before = conn.execute("SELECT id, log_id, status FROM dlq ORDER BY id").fetchall()
    migrate.upgrade(scratch_db)
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        misplaced = conn.execute(
            "SELECT count(*) FROM signal_log WHERE tableoid::regclass::text"
            " <> 'signal_log_p' || to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        ).fetchone()
        assert misplaced == (0,)
        assert conn.execute("SELECT count(DISTINCT log_id) FROM signal_log").fetchone() == (480,)
        after = conn.execute("SELECT id, log_id, status FROM dlq ORDER BY id").fetchall()
        assert after == before
        places: dict[str, str] = dict(
            conn.execute("SELECT status, min(tableoid::regclass::text) FROM dlq GROUP BY 1")
        )
        assert places["pending"] == places["parked"] == "dlq_open"
        assert places["resolved"].startswith("dlq_closed_p")
        new_id = conn.execute(
            "INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id)"
            " VALUES ('new', 's', 'k', '[]', 'all', '{}', 't') RETURNING id"
        ).fetchone()
        assert new_id is not None and new_id[0] > max(r[0] for r in before)
        found = conn.execute("SELECT lock_log_id('old-400') IS NOT NULL").fetchone()
        assert found == (True,)


def _maintain(database_url: str, retention: str) -> dict[str, object]:
    env = router_env(database_url, Path("unused.toml"), LOG_RETENTION=retention)
    done = subprocess.run(
        [sys.executable, "-m", "router", "maintain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = orjson.loads(done.stdout)
    return result


def test_retention_drops_whole_partitions_and_keeps_every_open_entry(database_url: str) -> None:
    """`router maintain` with LOG_RETENTION=14d drops the days older than 14 days (their rows
    go with them, none deleted one by one), keeps younger days, makes the coming days, and
    never touches a pending or parked entry however old."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(LOG_ROW, {"prefix": "old-", "days": 20, "count": 50})
        conn.execute(LOG_ROW, {"prefix": "young-", "days": 2, "count": 50})
        for log_id, status, days in (
            ("old-1", "pending", 20),
            ("old-2", "parked", 20),
            ("old-3", "resolved", 20),
            ("old-4", "discarded", 20),
            ("young-1", "resolved", 2),
        ):
            conn.execute(DLQ_ROW, {"log_id": log_id, "status": status, "days": days})
    done = _maintain(database_url, "14d")
    assert done["skipped"] is False
    dropped = done["dropped"]
    assert isinstance(dropped, list) and dropped
    with psycopg.connect(database_url, autocommit=True) as conn:
        left: dict[str, int] = dict(
            conn.execute(
                "SELECT split_part(log_id, '-', 1), count(*) FROM signal_log GROUP BY 1"
            ).fetchall()
        )
        assert left == {"young": 50}
        entries: dict[str, str] = dict(conn.execute("SELECT log_id, status FROM dlq").fetchall())
        assert entries == {"old-1": "pending", "old-2": "parked", "young-1": "resolved"}
        tables = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r'")}
        assert not {str(name) for name in dropped} & tables  # dropped, not emptied
        deleted = conn.execute(
            "SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables"
            " WHERE relname LIKE 'signal_log%' OR relname LIKE 'dlq%'"
        ).fetchone()
        assert deleted == (0,)
        ahead = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname = 'signal_log_p'"
            " || to_char(now() AT TIME ZONE 'UTC' + interval '7 days', 'YYYYMMDD')"
        ).fetchone()
        assert ahead == (1,)
    assert _maintain(database_url, "14d") == {"created": [], "dropped": [], "skipped": False}


@pytest.mark.asyncio
async def test_a_log_id_straddling_midnight_is_claimed_once_by_two_routers(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Today's partition is split at a boundary 3 s ahead (a midnight, brought forward); two
    router processes then post each log_id at once, and again a second later, across that
    boundary: every log_id has one row in one partition and reached the agent once."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.relname, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',"
            " now() + interval '3 seconds',"
            " (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'"
            " FROM pg_class AS c WHERE c.relname = 'signal_log_p'"
            " || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')"
        ).fetchone()
        assert row is not None
        today, start, boundary, end = row
        conn.execute(f"ALTER TABLE signal_log DETACH PARTITION {today}")
        conn.execute(f"DROP TABLE {today}")
        for name, lo, hi in (("before", start, boundary), ("after", boundary, end)):
            conn.execute(
                f"CREATE TABLE signal_log_{name} PARTITION OF signal_log"
                f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            )
    fresh_agents["alpha"].behave(latency_ms=5)
    env = router_env(database_url, routes_file)
    async with router_processes(env, 2) as bases:

        async def post(session: aiohttp.ClientSession, base: str, log_id: str) -> str:
            body = {"sender_id": "user_1", "payload": {"message": "solo"}, "log_id": log_id}
            async with session.post(
                f"{base}/route", json=body, headers={"X-API-Key": API_KEY}
            ) as resp:
                answer = await resp.json()
                return f"503 {answer['error']['code']}" if resp.status == 503 else str(resp.status)

        answers: list[asyncio.Task[str]] = []
        ids = [f"straddle-{i}" for i in range(120)]
        async with aiohttp.ClientSession() as session:
            # One log_id every 50 ms for 6 s, the boundary 3 s in; each posted to both
            # routers at once, and 1 s later again (after the boundary for the later half).
            for i, log_id in enumerate(ids):
                for base in bases:
                    answers.append(asyncio.create_task(post(session, base, log_id)))
                if i >= 20:
                    answers.append(asyncio.create_task(post(session, bases[i % 2], ids[i - 20])))
                await asyncio.sleep(0.05)
            statuses = await asyncio.gather(*answers)
    # 409: the same log_id still in flight on the other router (the contract's answer).
    assert set(statuses) <= {"200", "409", "503 database_unavailable"}, Counter(statuses)
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT log_id, count(*), min(tableoid::regclass::text) FROM signal_log GROUP BY 1"
        ).fetchall()
    assert all(count == 1 for _, count, _ in rows), [r for r in rows if r[1] > 1]
    sides = Counter(place for _, _, place in rows)
    assert sides["signal_log_before"] > 0 and sides["signal_log_after"] > 0, sides
    stored = {log_id for log_id, _, _ in rows}
    assert fresh_agents["alpha"].stats()["keys"] == {log_id: 1 for log_id in stored}
