"""A writer lane's kept connection (store/writer_pool.LaneConnection) against a real PostgreSQL:
kept between statements, and replaced after the server drops it."""

from __future__ import annotations

import psycopg
import pytest

from router.store.errors import DatabaseUnavailable
from router.store.writer_pool import LaneConnection, open_writer_pool

pytestmark = pytest.mark.asyncio

PID = "SELECT pg_backend_pid()"


async def test_a_lane_keeps_its_connection_and_replaces_a_dropped_one(database_url: str) -> None:
    pool = await open_writer_pool(database_url, max_size=2, statement_timeout_s=3.0, name="lane")
    lane = LaneConnection(pool)
    try:
        [(first,)] = await lane.fetch(PID)
        [(again,)] = await lane.fetch(PID)
        assert again == first  # one backend for every statement: nothing acquired or released
        assert pool.get_idle_size() == 0  # held by the lane, not back in the pool

        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # The statement on the dropped connection fails as the database being away...
        with pytest.raises(DatabaseUnavailable):
            await lane.fetch(PID)
        # ...and the next one runs on a new connection.
        [(fresh,)] = await lane.fetch(PID)
        assert fresh != first
    finally:
        await lane.close()
        assert pool.get_idle_size() == pool.get_size()  # close() handed it back
        await pool.close()


async def test_a_refused_statement_hands_its_connection_back(database_url: str) -> None:
    pool = await open_writer_pool(database_url, max_size=2, statement_timeout_s=3.0, name="lane")
    lane = LaneConnection(pool)
    try:
        [(first,)] = await lane.fetch(PID)
        with pytest.raises(Exception, match="division by zero"):
            await lane.fetch("SELECT 1 / 0")
        assert pool.get_idle_size() == 1  # released, not leaked
        [(after,)] = await lane.fetch(PID)
        assert after == first  # asyncpg kept the healthy connection; the lane took it again
    finally:
        await lane.close()
        await pool.close()
