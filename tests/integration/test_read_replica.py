"""DATABASE_READ_URL: GET /logs and GET /stats read a real streaming replica, not the primary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chaos.cluster import Cluster
from router import migrate
from tests.support import AgentProcess, RouterServer, start_router

pytestmark = pytest.mark.asyncio


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[Cluster, Cluster]]:
    """A private primary with the router's database migrated, and its streaming standby (the
    test crashes the primary: never the machine's server)."""
    primary = Cluster()
    standby: Cluster | None = None
    try:
        primary.start()
        migrate.upgrade(primary.create_database("router"))
        standby = Cluster.standby_of(primary)
        standby.start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _sessions(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_activity").fetchall()
    return [name for (name,) in rows]


async def _until(router: RouterServer, path: str, count: int) -> list[dict[str, object]]:
    """GET `path` until it lists `count` items (the replica applies the WAL a moment later)."""
    items: list[dict[str, object]] = []
    for _ in range(100):
        status, body = await router.get(path)
        assert status == 200, body
        items = body["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} listed {len(items)} items, wanted {count}")


async def test_logs_and_stats_are_served_by_the_replica_when_the_primary_is_down(
    primary_and_standby: tuple[Cluster, Cluster],
    routes_file: Path,
    fresh_agents: dict[str, AgentProcess],
) -> None:
    """Rows routed through the primary appear in /logs and /stats from the replica, whose
    pool is the only one the reads open; with the primary crashed they still answer, while
    /route answers 503 database_unavailable (nothing dispatched)."""
    primary, standby = primary_and_standby
    primary_url, replica_url = primary.url("router"), standby.url("router")
    async with start_router(
        primary_url, routes_file, database_read_url=replica_url, stats_flush_s=0.2
    ) as router:
        for i in range(3):
            status, body, _ = await router.route(
                {"sender_id": "s", "payload": {"message": "solo"}, "log_id": f"rep-{i}"}
            )
            assert status == 200 and body["status"] == "delivered", body
        logs = await _until(router, "/logs", 3)
        assert {item["log_id"] for item in logs} == {"rep-0", "rep-1", "rep-2"}
        stats = await _until(router, "/stats", 1)
        assert sum(int(str(row["count"])) for row in stats) == 3
        assert "router-reads" in _sessions(replica_url)
        assert "router-reads" not in _sessions(primary_url)

        primary.crash()
        status, one = await router.get("/logs/rep-1")
        assert status == 200 and one["status"] == "delivered", one
        assert {item["log_id"] for item in await _until(router, "/logs", 3)} == {
            "rep-0",
            "rep-1",
            "rep-2",
        }
        assert len(await _until(router, "/stats", 1)) == len(stats)
        status, body, _ = await router.route(
            {"sender_id": "s", "payload": {"message": "solo"}, "log_id": "rep-down"}
        )
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
    assert fresh_agents["alpha"].stats()["keys"] == {f"rep-{i}": 1 for i in range(3)}
