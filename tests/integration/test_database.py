"""The schema's migrations and the embedded PostgreSQL, against real servers."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from router import migrate
from router.embedded_db import embedded_database_url, stop_embedded
from tests.support import with_database

# The tables themselves, not their partitions.
TABLES = (
    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
)


def test_upgrade_downgrade_upgrade(server_url: str) -> None:
    """Migrations run up, all the way down, and up again on a real database."""
    name = f"router_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        migrate.upgrade(url)
        with psycopg.connect(url) as conn:
            assert [r[0] for r in conn.execute(TABLES)] == [
                "alembic_version",
                "dlq",
                "latency_stats",
                "signal_log",
            ]
        migrate.downgrade(url, "base")
        with psycopg.connect(url) as conn:
            assert [r[0] for r in conn.execute(TABLES)] == ["alembic_version"]
        migrate.upgrade(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)
            indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert {
            "signal_log_sender_created",
            "signal_log_kind_created",
            "dlq_pending_oldest",
        } <= indexes
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_embedded_server_from_a_fresh_folder(tmp_path: Path) -> None:
    """A fresh data folder: start, migrate, write, read, stop; a second start reuses the data."""
    data_dir = tmp_path / "data"
    url = embedded_database_url(data_dir)
    try:
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
        migrate.upgrade(url)
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload,"
                " routed_agents, trace_id, payload_hash)"
                " VALUES ('e1', 's', 'k', 'delivered', 'all', '{\"a\": 1}', '[]', 't', 'h')"
            )
        again = embedded_database_url(data_dir)
        with psycopg.connect(again) as conn:
            assert conn.execute(
                "SELECT payload FROM signal_log WHERE log_id = 'e1'"
            ).fetchone() == ({"a": 1},)
    finally:
        stop_embedded(data_dir)
    try:
        psycopg.connect(url, connect_timeout=2).close()
        raise AssertionError("the embedded server still answers after stop")
    except psycopg.OperationalError:
        pass
