"""Shared fixtures: a real PostgreSQL (DATABASE_URL or embedded), one database per test
cloned from a migrated template, real agent processes, and the router on real HTTP."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from router import migrate
from router.embedded_db import embedded_database_url
from router.settings import normalize_database_url
from router.store import partitions
from tests.support import (
    AgentProcess,
    RouterServer,
    start_agent,
    start_router,
    with_database,
    write_routes,
)

ROOT = Path(__file__).resolve().parent.parent
SEEDED_SINCE = date(2026, 11, 1)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The PostgreSQL server the tests use: DATABASE_URL, else an embedded one under .router/."""
    given = os.environ.get("DATABASE_URL")
    if given:
        return normalize_database_url(given)
    return embedded_database_url(ROOT / ".router" / "test")


async def make_past_partitions(url: str) -> None:
    """Tests seed rows dated since 2026-11-01: partitions for those days (a live database
    gets its rows on today's partition, made ahead by maintenance)."""
    today = datetime.now(UTC).date()
    days = [SEEDED_SINCE + timedelta(days=i) for i in range((today - SEEDED_SINCE).days)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for parent in partitions.PARENTS:
            await partitions.create_days(conn, parent, days)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """A database migrated to head, cloned by every test that needs one."""
    name = f"router_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    migrate.upgrade(url)
    asyncio.run(make_past_partitions(url))
    yield name
    _drop(server_url, name)


@pytest.fixture
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for this test alone (CREATE DATABASE … TEMPLATE)."""
    name = f"router_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_database(server_url, name)
    _drop(server_url, name)


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentProcess]]:
    """Three real agent processes on free loopback ports, shared by the session."""
    procs = {name: start_agent(name) for name in ("alpha", "beta", "gamma")}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
def fresh_agents(agents: dict[str, AgentProcess]) -> dict[str, AgentProcess]:
    """The session's agents, with their records cleared and normal behaviour restored."""
    for agent in agents.values():
        agent.reset()
    return agents


@pytest.fixture
def routes_file(tmp_path: Path, fresh_agents: dict[str, AgentProcess]) -> Path:
    """The test routing table, pointing at the session's agents."""
    return write_routes(tmp_path / "routes.toml", fresh_agents)


@pytest_asyncio.fixture
async def router(database_url: str, routes_file: Path) -> AsyncIterator[RouterServer]:
    """The router app served by uvicorn on a loopback port, on its own database."""
    async with start_router(database_url, routes_file) as server:
        yield server
