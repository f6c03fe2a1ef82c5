"""Faults on the route path: the database going away, the router killed mid-dispatch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support import (
    API_KEY,
    ROOT,
    AgentProcess,
    TcpProxy,
    free_port,
    router_env,
    router_processes,
    socket_target,
    start_router,
    wait_http,
    write_routes,
)

pytestmark = pytest.mark.asyncio


def signal_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "user_1", "payload": {"message": message}, **extra}


async def test_database_outage_is_503_fast_and_heals_without_restart(
    server_url: str, database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """PostgreSQL away: 503 + Retry-After within 2 s, nothing sent; back: routing resumes."""
    proxy = TcpProxy(socket_target(server_url))
    await proxy.start()
    db_name = urlsplit(database_url).path.lstrip("/")
    async with start_router(proxy.url(server_url, db_name), routes_file) as router:
        assert (await router.route(signal_body("solo")))[0] == 200
        await proxy.cut()
        for _ in range(3):
            started = time.monotonic()
            status, body, headers = await router.route(signal_body("solo"))
            assert time.monotonic() - started < 2.5
            assert status == 503, body
            assert body["error"]["code"] == "database_unavailable"
            assert headers["Retry-After"] == "1"
        status, ready = await router.get("/health/ready", key=None)
        assert status == 503 and "database" in ready["error"]["message"]
        assert fresh_agents["alpha"].stats()["received"] == 1

        await proxy.start()
        deadline = time.monotonic() + 15
        status = 0
        while status != 200 and time.monotonic() < deadline:
            status = (await router.route(signal_body("solo")))[0]
            if status != 200:
                await asyncio.sleep(0.2)
        assert status == 200
        assert (await router.get("/health/ready", key=None))[0] == 200
    await proxy.cut()
    assert fresh_agents["alpha"].stats()["received"] == 2


async def test_kill_9_under_load_loses_no_acknowledged_signal(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """SIGKILL mid-dispatch: every signal an agent got has a row, every acknowledged one its final
    row; abandoned claims are swept to the DLQ as interrupted and a retry gets 202 duplicate."""
    routes = write_routes(tmp_path / "routes.toml", fresh_agents)
    routes.write_text(routes.read_text().replace("deadline_ms = 5000", "deadline_ms = 1000"))
    fresh_agents["alpha"].behave(latency_ms=150)
    port = free_port()
    # A claim is abandoned after deadline + OUTCOME_TIMEOUT_MS + 5 s (router/budget.py): 8 s.
    env = router_env(database_url, routes, OUTCOME_TIMEOUT_MS="2000")
    cmd = [sys.executable, "-m", "router", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_http, f"{base}/health/ready", proc)
        acknowledged: list[str] = []

        async def post(session: aiohttp.ClientSession, i: int) -> None:
            body = signal_body("solo", log_id=f"k-{i}", timestamp="2026-11-23T00:00:00Z")
            try:
                async with session.post(
                    f"{base}/route", json=body, headers={"X-API-Key": API_KEY}
                ) as resp:
                    if resp.status in (200, 202):
                        acknowledged.append(f"k-{i}")
            except aiohttp.ClientError:
                pass  # the router died under us: not acknowledged

        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(post(session, i)) for i in range(200)]
            await asyncio.sleep(0.6)
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.gather(*tasks)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    received = set(fresh_agents["alpha"].stats()["keys"])
    rows = dict(_query(database_url, "SELECT log_id, status FROM signal_log"))
    assert acknowledged, "the router was killed before it answered anything"
    assert received - set(rows) == set(), "an agent received a signal the router has no row for"
    assert all(rows[log_id] == "delivered" for log_id in acknowledged)
    in_flight = sorted(k for k, v in rows.items() if v == "in_flight")
    assert in_flight, "the kill left no claim in flight; the test proved nothing"

    # A new router sweeps the abandoned claims once they expire (8 s after they were written).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_http, f"{base}/health/ready", proc)
        retry_id = in_flight[0]
        async with aiohttp.ClientSession() as session:
            body = signal_body("solo", log_id=retry_id, timestamp="2026-11-23T00:00:00Z")
            deadline = time.monotonic() + 25
            while True:
                async with session.post(
                    f"{base}/route", json=body, headers={"X-API-Key": API_KEY}
                ) as resp:
                    status, answer = resp.status, await resp.json()
                if status != 409 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
        assert status == 202, answer
        assert answer["status"] == "dead_lettered" and answer["duplicate"] is True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = _query(
                database_url, "SELECT count(*) FROM signal_log WHERE status = 'in_flight'"
            )
            if left == [(0,)]:
                break
            await asyncio.sleep(0.3)
        assert left == [(0,)]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    interrupted = _query(
        database_url,
        "SELECT d.status, d.last_error, d.agents FROM signal_log s JOIN dlq d USING (log_id)"
        " WHERE s.status = 'interrupted'",
    )
    assert len(interrupted) == len(in_flight)
    assert all(
        r[0] == "pending" and "interrupted" in r[1] and r[2] == ["alpha"] for r in interrupted
    )


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def test_idempotency_holds_across_router_processes(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Two router processes on one database, 40 concurrent posts of each of 5 log_ids split
    between them: each log_id reaches the agent exactly once."""
    fresh_agents["alpha"].behave(latency_ms=30)
    env = router_env(database_url, routes_file)
    async with router_processes(env, 2) as bases:

        async def post(session: aiohttp.ClientSession, base: str, log_id: str) -> str:
            body = signal_body("solo", log_id=log_id)
            async with session.post(
                f"{base}/route", json=body, headers={"X-API-Key": API_KEY}
            ) as resp:
                answer = await resp.json()
                return f"503 {answer['error']['code']}" if resp.status == 503 else str(resp.status)

        async with aiohttp.ClientSession() as session:
            statuses = await asyncio.gather(
                *(post(session, bases[i % 2], f"multi-{i % 5}") for i in range(200))
            )
    # A claim slower than its budget on a loaded machine is answered 503 database_unavailable,
    # which promises nothing was dispatched (the caller retries); nothing else may appear.
    assert set(statuses) <= {"200", "409", "503 database_unavailable"}, Counter(statuses)
    assert statuses.count("200") >= 5, Counter(statuses)
    assert fresh_agents["alpha"].stats()["keys"] == {f"multi-{i}": 1 for i in range(5)}
