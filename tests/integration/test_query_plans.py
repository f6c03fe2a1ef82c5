"""The route path's statements use their indexes on a log of realistic size."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from router.store.queries import query

SEED_LOG = """
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, routed_agents,
                        trace_id, payload_hash)
SELECT 'seed-' || g, 's', 'k', 'delivered', 'all', '{}', '["a"]', 't', 'h'
FROM generate_series(1, 20000) AS g
"""
SEED_DLQ = """
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, status)
SELECT 'seed-' || g, 's', 'k', '["a"]', 'all', '{}', 't',
       CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'resolved' END
FROM generate_series(1, 5000) AS g
"""


def _plan(conn: psycopg.Connection, sql: str, params: dict[str, object]) -> str:
    rows = conn.execute("EXPLAIN " + sql, params).fetchall()  # type: ignore[arg-type]
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("plan_mode", ["auto", "force_generic_plan"])
def test_outcome_flush_touches_rows_by_index(database_url: str, plan_mode: str) -> None:
    """finish_signals updates the log by primary key and resolves DLQ entries by log_id,
    never scanning either table, whether the plan is custom or generic (prepared)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
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
        plan = _plan(conn, query("finish_signals"), params)
    assert "Seq Scan on signal_log" not in plan, plan
    assert "Seq Scan on dlq" not in plan, plan
    assert "signal_log_pkey" in plan, plan
    assert "dlq_log_id_key" in plan, plan
