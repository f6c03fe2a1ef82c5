"""The route path's statements use their indexes on a log of realistic size."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from router.store import dlq, logs
from router.store.partitions import partition_name
from router.store.pool import open_pool
from router.store.queries import LOG_TABLE, finish_query, finish_statement, numbered, query
from router.store.writer_pool import LANE_PLANNER_SETTINGS

SEED_LOG = """
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, routed_agents,
                        trace_id, payload_hash)
SELECT 'seed-' || g, 's', 'k', 'delivered', 'all', '{}', '["a"]', 't', 'h'
FROM generate_series(1, 20000) AS g
"""
SEED_DLQ = """
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, status, closed_at)
SELECT 'seed-' || g, 's', 'k', '["a"]', 'all', '{}', 't',
       CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'resolved' END,
       CASE WHEN g % 2 = 0 THEN NULL ELSE now() END
FROM generate_series(1, 5000) AS g
"""


def _scanned_whole(plan: str) -> set[str]:
    """The tables the plan reads by sequential scan."""
    return set(re.findall(r"Seq Scan on (\w+)", plan))


def _plan(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, object]) -> str:
    rows = conn.execute("EXPLAIN " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


def _as_a_lane(conn: psycopg.Connection[Any]) -> None:
    """The planner settings the writer's lanes run with (writer_pool.LANE_PLANNER_SETTINGS)."""
    for name, value in LANE_PLANNER_SETTINGS.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))


def _unkeyed_reads(plan: str) -> list[str]:
    """Each read of signal_log that is not one row found by its address: anything but a TID
    scan on a ctid equality."""
    lines = plan.splitlines()
    unkeyed = []
    for i, line in enumerate(lines):
        if not re.search(r"Scan\b.* on signal_log", line):
            continue
        cond = lines[i + 1] if i + 1 < len(lines) else ""
        if "Tid Scan" not in line or "TID Cond: (ctid = " not in cond:
            unkeyed.append(line.strip())
    return unkeyed


def _todays_partition() -> str:
    """The partition the route path's claims of today land in (and their outcomes go to)."""
    return partition_name(LOG_TABLE, datetime.now(UTC).date())


@pytest.mark.parametrize("plan_mode", ["auto", "force_generic_plan"])
def test_outcome_flush_touches_rows_by_index(database_url: str, plan_mode: str) -> None:
    """finish_signals updates the log by primary key and resolves DLQ entries by log_id,
    never scanning either table, whether the plan is custom or generic (prepared), written
    into the claims' partition as the writer does or through the parent; the check that the
    claim's row is there reads it at its ctid."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as_a_lane(conn)
        conn.execute(SEED_LOG)
        conn.execute(SEED_DLQ)
        conn.execute("ANALYZE signal_log")
        conn.execute("ANALYZE dlq")
        conn.execute(f"SET plan_cache_mode = {plan_mode}")
        outcomes = [
            {"log_id": "seed-2", "status": "delivered", "response": [], "attempts": 1,
             "latency_ms": 1.0, "dl_agents": None, "dl_last_error": None, "dl_attempts": None},
            {"log_id": "seed-3", "status": "partial", "response": [], "attempts": 2,
             "latency_ms": 1.0, "dl_agents": ["b"], "dl_last_error": "b: HTTP 503",
             "dl_attempts": 3},
        ]  # fmt: skip
        params = {
            "rows": orjson.dumps(outcomes).decode(),
            "log_ids": ["seed-2", "seed-3"],
            "delivered_ids": ["seed-2"],
        }
        partition = conn.execute(
            "SELECT tableoid::regclass::text FROM signal_log WHERE log_id = 'seed-2'"
        ).fetchone()
        assert partition is not None and partition[0] == _todays_partition()
        plans = {
            table: _plan(conn, finish_query(table, lettering=True), params)
            for table in (LOG_TABLE, partition[0])
        }
    for table, plan in plans.items():
        assert not _unkeyed_reads(plan), plan
        assert "Seq Scan on dlq" not in plan, plan
        assert f"{table}_pkey" in plan, plan  # the arbiter: the key of the table written
        assert "dlq_open_log_id_key" in plan, plan


@pytest.mark.parametrize(
    "name", ["claim_signals", "finish", "finish_lettering", "finish_of_unrepeatable_log_ids"]
)
def test_route_writes_stay_keyed_with_statistics_of_an_empty_log(
    database_url: str, name: str
) -> None:
    """The route path's two writes, prepared and planned generically (as asyncpg's cached
    statements are) with the lanes' settings while the log was analyzed empty, then run
    against 20,000 rows with no new statistics (autovacuum can be off): the claim reads
    signal_log through no scan at all, the outcome only to find its claim's row at its ctid.

    An UPDATE joined to the batch fails this: planned on empty statistics, it reads the
    whole partition for every flush from then on. So does the outcome's check of its claim's
    row by its key: planned on empty statistics, a hashed read of the whole partition."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as_a_lane(conn)
        conn.execute("ANALYZE signal_log")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        statement = (
            numbered(name).sql
            if name == "claim_signals"
            else finish_statement(
                _todays_partition(),
                name == "finish_lettering",
                name != "finish_of_unrepeatable_log_ids",
            ).sql
        )
        conn.execute(f"PREPARE write(jsonb) AS {statement}")
        conn.execute(sql.SQL("EXPLAIN EXECUTE write({})").format(sql.Literal("[]")))
        conn.execute(SEED_LOG)
        rows = conn.execute(
            sql.SQL("EXPLAIN EXECUTE write({})").format(sql.Literal("[]"))
        ).fetchall()
    plan = "\n".join(r[0] for r in rows)
    assert not _unkeyed_reads(plan), plan
    if name in ("claim_signals", "finish_of_unrepeatable_log_ids"):
        assert not re.search(r"Scan\b.* on signal_log", plan), plan
    else:
        assert f"Tid Scan on {_todays_partition()} " in plan, plan


SEED_SPREAD_LOG = """
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, routed_agents,
                        trace_id, payload_hash, created_at)
SELECT 'log-' || g, 'sender-' || (g % 500), 'kind-' || (g % 20),
       CASE WHEN g % 100 = 0 THEN 'partial' ELSE 'delivered' END, 'all', '{}', '["a"]', 't',
       'h', now() - g * interval '1 second'
FROM generate_series(1, 20000) AS g
"""
SEED_SPREAD_DLQ = """
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, status, created_at,
                 closed_at)
SELECT 'log-' || g, 's', 'kind-' || (g % 20),
       CASE WHEN g % 200 = 2 THEN '["rare"]' ELSE '["a"]' END::jsonb, 'all', '{}', 't',
       CASE WHEN g % 4 = 0 THEN 'pending' WHEN g % 50 = 1 THEN 'parked' ELSE 'resolved' END,
       now() - g * interval '1 second',
       CASE WHEN g % 4 <> 0 AND g % 50 <> 1 THEN now() - g * interval '1 second' END
FROM generate_series(1, 20000) AS g
"""
SEED_SPREAD_STATS = """
INSERT INTO latency_stats (minute, kind, agent, count, errors, sum_ms, buckets)
SELECT date_trunc('minute', now()) - g * interval '1 minute', 'kind-' || (g % 20),
       'agent-' || (g % 10), 1, 0, 1.0, '{1}'
FROM generate_series(1, 20000) AS g
"""
STATS_PAGE = {"kind": None, "agent": None, "since": None, "until": None, "limit": 1000}
LOG_PAGE = {"sender_id": None, "kind": None, "status": None, "since": None, "until": None,
            "cursor_created_at": None, "cursor_log_id": None, "limit": 51}  # fmt: skip
DLQ_PAGE = {"status": None, "agent": None, "kind": None, "before_id": None, "limit": 51,
            "log_id": None}  # fmt: skip
ROUND = {"round_started": "2100-01-01T00:00:00Z", "limit": 20, "agent": None, "kind": None,
         "after_created_at": None, "after_id": None}  # fmt: skip
# Half-way down the seeded log (its rows are one second apart, back from now).
MIDDLE = datetime.now(UTC) - timedelta(seconds=10_000)
CURSOR = {"cursor_created_at": MIDDLE, "cursor_log_id": "log-10000"}
AFTER = {"after_created_at": "2000-01-01T00:00:00Z", "after_id": 10}

# Each named read and claim, with the filters a caller gives it, and the index it must use.
# The partitions' own index names (PostgreSQL names each leaf's copy of a partitioned index).
LOG_PKEY = r"signal_log_p\d{8}_pkey"
LOG_CREATED = r"signal_log_p\d{8}_created_at_log_id_idx"
LOG_SENDER = r"signal_log_p\d{8}_sender_id_created_at_log_id_idx"
LOG_KIND = r"signal_log_p\d{8}_kind_created_at_log_id_idx"
LOG_STATUS = r"signal_log_p\d{8}_status_created_at_log_id_idx"
DLQ_ID = r"dlq_(open|closed_p\d{8})_id_idx"
DLQ_STATUS = r"dlq_(open|closed_p\d{8})_status_id_idx"
DLQ_AGENTS = r"dlq_(open|closed_p\d{8})_agents_idx"
DLQ_LOG_ID = r"dlq_open_log_id_key|dlq_(open|closed_p\d{8})_log_id_idx"
DLQ_PENDING = r"dlq_open_created_at_id_idx"
PLANS: list[tuple[str, Mapping[str, object], str]] = [
    ("logs_one", {"log_id": "log-7"}, LOG_PKEY),
    ("logs_page", LOG_PAGE, LOG_CREATED),
    ("logs_page", {**LOG_PAGE, "sender_id": "sender-7"}, LOG_SENDER),
    ("logs_page", {**LOG_PAGE, "sender_id": "sender-7", **CURSOR}, LOG_SENDER),
    ("logs_page", {**LOG_PAGE, "kind": "kind-3"}, LOG_KIND),
    ("logs_page", {**LOG_PAGE, "status": "partial"}, LOG_STATUS),
    ("logs_page", {**LOG_PAGE, "since": MIDDLE}, LOG_CREATED),
    ("dlq_one", {"id": 7}, DLQ_ID),
    ("dlq_one_for_discard", {"id": 7}, DLQ_ID),
    ("dlq_page", DLQ_PAGE, DLQ_ID),
    ("dlq_page", {**DLQ_PAGE, "before_id": 900}, DLQ_ID),
    # Pending entries are dlq_open alone (pruned by status): its id index serves the page.
    ("dlq_page", {**DLQ_PAGE, "status": "pending"}, DLQ_ID),
    ("dlq_page", {**DLQ_PAGE, "status": "resolved"}, DLQ_ID + "|" + DLQ_STATUS),
    ("dlq_page", {**DLQ_PAGE, "agent": '["rare"]'}, DLQ_AGENTS),
    ("dlq_page", {**DLQ_PAGE, "log_id": "log-77"}, DLQ_LOG_ID),
    ("dlq_claimable", ROUND, DLQ_PENDING),
    # A kind among the pending ones: the oldest-first index, filtered (dlq_open is all open).
    ("dlq_claimable", {**ROUND, "kind": "kind-4", **AFTER}, DLQ_PENDING + "|" + DLQ_STATUS),
    ("dlq_claim_round", ROUND, DLQ_PENDING),
    ("dlq_claim_round", {**ROUND, "agent": '["a"]', **AFTER}, DLQ_PENDING),
    ("dlq_replayable_ids", {"ids": [5, 50, 51]}, DLQ_ID),
    ("dlq_claim_ids", {"ids": [5, 50, 51]}, DLQ_ID),
    ("stats_page", STATS_PAGE, "latency_stats_pkey"),
    ("stats_page", {**STATS_PAGE, "since": MIDDLE}, "latency_stats_pkey"),
    ("stats_page", {**STATS_PAGE, "kind": "kind-3"}, "latency_stats_kind_minute"),
    ("stats_page", {**STATS_PAGE, "agent": "agent-3"}, "latency_stats_agent_minute"),
    # Retention deletes the oldest few minutes of each flush (the table goes back 20,000).
    (
        "stats_expire",
        {"cutoff": datetime.now(UTC) - timedelta(minutes=19_900)},
        "latency_stats_pkey",
    ),
]


@pytest.fixture
def spread_database(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SEED_SPREAD_LOG)
        conn.execute(SEED_SPREAD_DLQ)
        conn.execute(SEED_SPREAD_STATS)
        conn.execute("ANALYZE signal_log")
        conn.execute("ANALYZE dlq")
        conn.execute("ANALYZE latency_stats")
    return database_url


def test_every_read_and_claim_uses_its_index(spread_database: str) -> None:
    """Each named query, planned as the store runs it (unprepared: with its values, so the
    NULL filters fold away), scans the index it is written for and never the whole table."""
    with psycopg.connect(spread_database, autocommit=True) as conn:
        # A partition of a few thousand rows or fewer may rightly be read whole (the seed's
        # seconds straddle midnight for the first ~5.5 hours of each UTC day, leaving up to a
        # few thousand rows in yesterday's: 1,228 at 05:05 were read whole for a rare agent);
        # a big table never. Of each seeded table one partition always holds over 5,000.
        filled = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE reltuples > 4000")}
        for name, params, index in PLANS:
            plan = _plan(conn, query(name), params)
            assert re.search(index, plan), (name, params, plan)
            assert not _scanned_whole(plan) & filled, (name, params, plan)
            if name in ("dlq_claim_round", "dlq_claim_ids", "dlq_one_for_discard"):
                assert "LockRows" in plan, (name, plan)


@pytest.mark.asyncio
async def test_reads_are_never_prepared(spread_database: str) -> None:
    """A prepared statement could get a generic plan, which keeps every NULL filter and loses
    the index: the store's reads run unprepared however often they run."""
    pool = await open_pool(spread_database, min_size=1, max_size=1, wait=True)
    try:
        for _ in range(12):  # psycopg prepares after 5 executions of one statement
            await logs.fetch_page(pool, logs.LogFilter(kind="kind-3"), limit=5, after=None)
            await dlq.fetch_page(pool, dlq.DlqFilter(status="pending"), limit=5, before_id=None)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in await cur.fetchall()]
    finally:
        await pool.close()
    assert not [s for s in prepared if "FROM signal_log" in s or "FROM dlq" in s], prepared


def test_log_id_lookup_skips_the_days_ahead(database_url: str) -> None:
    """lock_log_id's lookup, as the database holds it, prunes the empty partitions made ahead
    of today when its cached plan starts, so a claim probes only days that can hold a row.
    (Partitions are named by UTC day; one is pruned when it starts after now() + 1 day.)"""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'lock_log_id'").fetchone()
        assert row is not None
        found = re.search(r"\(SELECT (.*?LIMIT 1)\)", row[0], re.S)
        assert found is not None, row[0]
        lookup = found.group(1).replace("= id", "= $1")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE lookup(text) AS SELECT {lookup}")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE lookup('x')"))
        ahead = conn.execute(
            "SELECT count(*) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'signal_log'::regclass AND c.relname ~ '^signal_log_p[0-9]{8}$'"
            " AND to_date(substr(c.relname, 13), 'YYYYMMDD')"
            "     > (now() AT TIME ZONE 'UTC' + interval '1 day')::date"
        ).fetchone()
    assert ahead is not None and ahead[0] >= 5, plan  # maintenance keeps 7 days ahead
    assert f"Subplans Removed: {ahead[0]}" in plan, plan
