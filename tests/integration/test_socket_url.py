"""DATABASE_URL naming a local server's Unix socket: every pool of the router uses it."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support import AgentProcess, start_router

pytestmark = pytest.mark.asyncio


def _socket_url(database_url: str) -> str:
    """The same server and database through its Unix socket; skips when it has none here."""
    host = urlsplit(database_url).hostname
    if host not in (None, "", "127.0.0.1", "localhost", "::1"):
        pytest.skip(f"the test server ({host}) is not on this machine")
    with psycopg.connect(database_url) as conn:
        user, dbname, port = conn.info.user, conn.info.dbname, conn.info.port
        directories = conn.execute("SHOW unix_socket_directories").fetchone()
    assert directories is not None
    for directory in (d.strip() for d in str(directories[0]).split(",")):
        if directory and os.path.exists(os.path.join(directory, f".s.PGSQL.{port}")):
            return f"postgresql://{user}@/{dbname}?host={directory}&port={port}"
    pytest.skip("the test server listens on no Unix socket this process can reach")


async def test_the_route_path_and_its_reads_run_over_the_servers_unix_socket(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A signal is claimed, delivered and recorded, and read back, with DATABASE_URL on the
    socket; every session the router opened came over it (no client address)."""
    socket_url = _socket_url(database_url)
    async with start_router(socket_url, routes_file) as router:
        status, body, _ = await router.route(
            {"sender_id": "s", "payload": {"message": "solo"}, "log_id": "over-the-socket"}
        )
        assert status == 200 and body["status"] == "delivered", body
        status, item = await router.get("/logs/over-the-socket")
        assert status == 200 and item["status"] == "delivered", item
        with psycopg.connect(database_url) as conn:
            sessions = conn.execute(
                "SELECT application_name, client_addr::text FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
    assert sessions, "the router held no session"
    assert [name for name, address in sessions if address is not None] == [], sessions
    # Delivered once, to the solo rule's agent.
    assert [r["status"] for r in fresh_agents["alpha"].requests()] == [200]
