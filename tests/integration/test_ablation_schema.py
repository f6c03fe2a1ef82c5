"""benches.ablation's log without read indexes: outcomes become HOT there, and it is put back."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from benches.ablation import READ_INDEXES, without_read_indexes

CLAIM = """
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, routed_agents,
                        trace_id, payload_hash, claim_expires_at)
VALUES (%(log_id)s, 's', 'k', 'in_flight', 'all', '{"message": "m"}', '["a"]', 't', 'h',
        now() + interval '30 seconds')
RETURNING tableoid
"""
# The columns finish_signals' DO UPDATE sets.
OUTCOME = """
UPDATE signal_log
SET status = 'delivered', response = '[]', attempts = 1, latency_ms = 1.5,
    claim_expires_at = NULL, updated_at = now()
WHERE log_id = %(log_id)s
"""


def _schema(conn: psycopg.Connection[Any]) -> tuple[list[tuple[str, str]], list[Any]]:
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'signal_log%'"
        " ORDER BY indexname"
    ).fetchall()
    options = conn.execute(
        "SELECT c.reloptions FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'signal_log'::regclass ORDER BY c.relname"
    ).fetchall()
    return [(r[0], r[1]) for r in indexes], [r[0] for r in options]


def _hot_updates(database_url: str, log_id: str) -> int:
    """Claim a row, write its outcome, in one transaction: how many of its updates were HOT.

    A connection of its own: a backend's pending statistics, which the xact counters read,
    carry its earlier transactions until they are flushed.
    """
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = conn.execute(CLAIM, {"log_id": log_id}).fetchone()
        assert row is not None
        conn.execute(OUTCOME, {"log_id": log_id})
        hot = conn.execute("SELECT pg_stat_get_xact_tuples_hot_updated(%s)", [row[0]]).fetchone()
    assert hot is not None
    return int(hot[0])


def test_outcomes_are_hot_only_without_the_read_indexes_and_the_log_is_put_back(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = _schema(conn)
        assert _hot_updates(database_url, "as-migrated") == 0  # status is in an index
        with without_read_indexes(database_url):
            indexes = _schema(conn)[0]
            assert not {name for name, _ in indexes} & set(READ_INDEXES)
            # Nor their copies on the partitions: no index left holds a column an outcome sets.
            assert not [d for _, d in indexes if "status" in d or "sender_id" in d], indexes
            assert _hot_updates(database_url, "without-read-indexes") == 1
        assert _schema(conn) == before
        assert _hot_updates(database_url, "put-back") == 0


def test_a_log_without_its_read_indexes_is_refused(database_url: str) -> None:
    """Not a migrated log: nothing is dropped, so nothing can be put back wrongly."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {READ_INDEXES[0]}")
        before = _schema(conn)
        with (
            pytest.raises(RuntimeError, match="not a migrated log"),
            without_read_indexes(database_url),
        ):
            pass
        assert _schema(conn) == before
