"""The route path's promises under the faults of issue 9, each against real processes: a lost
claim, a stall, an outage during the outcome commit, a replay racing a changed row, and the
edges (a kind gone from the table, a non-ASCII key, metrics that count signals)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.dispatch import Dispatcher
from router.http11_client import Http11Client
from router.replay import Replayer
from router.routing_file import load_routing_table
from router.store.pool import open_pool
from tests.integration.admin_support import seed_dead_letters
from tests.support import (
    AgentProcess,
    RouterServer,
    TcpProxy,
    socket_target,
    start_router,
)

pytestmark = pytest.mark.asyncio


def signal(message: str, log_id: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "user_1", "payload": {"message": message}, "log_id": log_id, **extra}


async def wait_for_row(router: RouterServer, log_id: str, status: str) -> None:
    deadline = time.monotonic() + 5
    while not router.query(
        "SELECT 1 FROM signal_log WHERE log_id = %s AND status = %s", log_id, status
    ):
        assert time.monotonic() < deadline, f"no {status} row for {log_id}"
        await asyncio.sleep(0.01)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_final_row_stands_when_the_claim_was_lost(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A claim gone mid-dispatch (what a crash does to an unflushed claim): the answer is 200
    and the durable row is the whole signal, not an UPDATE that matched nothing."""
    fresh_agents["alpha"].behave(latency_ms=400)
    task = asyncio.create_task(router.route(signal("solo", "lost-claim", metadata={"m": 2})))
    await wait_for_row(router, "lost-claim", "in_flight")
    router.query("DELETE FROM signal_log WHERE log_id = 'lost-claim' RETURNING log_id")
    status, body, _ = await task
    assert status == 200 and body["status"] == "delivered", body
    [row] = router.query(
        "SELECT status, sender_id, kind, payload, metadata, routed_agents, response IS NOT NULL"
        " FROM signal_log WHERE log_id = 'lost-claim'"
    )
    assert row == ("delivered", "user_1", "solo", {"message": "solo"}, {"m": 2}, ["alpha"], True)


async def test_claim_stalled_past_its_budget_never_lands(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A lock stalls the claim: 503 within the contract's 2 s, and when the lock goes the
    claim is not inserted behind the caller's back, so nothing is ever dispatched."""
    with psycopg.connect(router.database_url) as locker:
        locker.execute("LOCK TABLE signal_log IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, body, headers = await router.route(signal("solo", "stalled"))
        assert time.monotonic() - started < 2.5
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
        assert headers["Retry-After"] == "1"
        await asyncio.sleep(1.5)  # the stall outlasts the claim statement
        locker.rollback()
    await asyncio.sleep(1.0)
    assert router.query("SELECT status FROM signal_log WHERE log_id = 'stalled'") == []
    assert fresh_agents["alpha"].requests() == []
    # The router heals at once: the same signal, retried, is delivered.
    assert (await router.route(signal("solo", "stalled")))[0] == 200


async def test_claim_expiry_outlasts_everything_a_live_request_can_do(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """While a signal is dispatched, its claim expires no sooner than claim wait + deadline +
    outcome timeout: a retry meanwhile gets 409, never a take-over."""
    fresh_agents["alpha"].behave(latency_ms=300)
    task = asyncio.create_task(router.route(signal("solo", "live")))
    await wait_for_row(router, "live", "in_flight")
    [(lifetime,)] = router.query(
        "SELECT extract(epoch FROM claim_expires_at - created_at) FROM signal_log"
        " WHERE log_id = 'live'"
    )
    # deadline 5 s (tests/support.py) + the default outcome timeout of 10 s.
    assert lifetime >= 5 + 10
    again = await router.route(signal("solo", "live"))
    assert again[0] == 409, again[1]
    assert (await task)[0] == 200


async def test_outcome_commit_rides_out_a_database_outage(
    server_url: str, database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """PostgreSQL goes away mid-dispatch and comes back within the outcome timeout: the
    caller still gets 200 and the row is durable, instead of 503 outcome_not_recorded."""
    proxy = TcpProxy(socket_target(server_url))
    await proxy.start()
    db_name = urlsplit(database_url).path.lstrip("/")
    fresh_agents["alpha"].behave(latency_ms=600)
    try:
        async with start_router(proxy.url(server_url, db_name), routes_file) as router:
            task = asyncio.create_task(router.route(signal("solo", "outage")))
            await asyncio.sleep(0.25)
            await proxy.cut()
            await asyncio.sleep(1.5)
            await proxy.start()
            status, body, _ = await task
            assert status == 200 and body["status"] == "delivered", body
    finally:
        await proxy.cut()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status FROM signal_log WHERE log_id = 'outage'").fetchall()
    assert rows == [("delivered",)]
    assert len(fresh_agents["alpha"].requests()) == 1


async def test_replay_settle_never_overwrites_a_row_that_changed(
    router: RouterServer, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A replay that fails writes its outcome only if the log row is still as it read it: a
    row that became delivered meanwhile stays delivered, with its response."""
    [entry_id] = seed_dead_letters(router.database_url, 1, prefix="cas")
    fresh_agents["alpha"].behave(latency_ms=300, status=503)
    table = load_routing_table(routes_file)
    pool = await open_pool(router.database_url, min_size=1, max_size=2, wait=True)
    session = Http11Client()
    try:
        replayer = Replayer(pool, Dispatcher(session, table.agents.values()), table, max_replays=5)
        replay = asyncio.create_task(replayer.replay_ids([entry_id]))
        deadline = time.monotonic() + 5
        while not fresh_agents["alpha"].requests():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        router.query(
            "UPDATE signal_log SET status = 'delivered', response = '[{\"agent\": \"x\"}]',"
            " updated_at = now() WHERE log_id = 'cas-1' RETURNING 1"
        )
        result = await replay
    finally:
        await session.close()
        await pool.close()
    assert result.failed == 1
    assert router.query("SELECT status, response FROM signal_log WHERE log_id = 'cas-1'") == [
        ("delivered", [{"agent": "x"}])
    ]


async def test_a_stored_kind_no_longer_in_the_table_is_answered(
    database_url: str, tmp_path: Path, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Re-posting a log_id whose kind was removed from the routing table gets its stored
    outcome (200, duplicate), not a 500 from the latency metric."""
    async with start_router(database_url, routes_file) as router:
        assert (await router.route(signal("solo", "old-kind")))[0] == 200
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(routes_file.read_text().replace('kind = "solo"', 'kind = "single"'))
    async with start_router(database_url, renamed) as router:
        status, body, headers = await router.route(signal("solo", "old-kind"))
        assert status == 200, body
        assert body["duplicate"] is True and body["kind"] == "solo"
        assert headers["Idempotent-Replayed"] == "true"


async def _raw_request(base: str, method: str, path: str, key: bytes, body: bytes) -> int:
    """One HTTP/1.1 request written by hand, so the key goes out as the raw bytes given."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    writer.write(head + b"X-API-Key: " + key + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def test_a_non_ascii_key_is_the_same_key_everywhere(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A UTF-8 key sent as its UTF-8 bytes routes and reads the admin API alike; the same key
    mangled is refused by both."""
    key = "clé-ü"
    async with start_router(
        database_url, routes_file, api_keys=frozenset({key}), admin_api_keys=frozenset()
    ) as router:
        body = b'{"sender_id": "u", "payload": {"message": "solo"}}'
        assert await _raw_request(router.base, "POST", "/route", key.encode(), body) == 200
        assert await _raw_request(router.base, "GET", "/logs", key.encode(), b"") == 200
        latin = key.encode("latin-1")
        assert await _raw_request(router.base, "POST", "/route", latin, body) == 401
        assert await _raw_request(router.base, "GET", "/logs", latin, b"") == 401


async def test_signals_received_counts_signals_not_answers(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A duplicate, a 409 and a refused body add nothing to signals_received_total."""
    fresh_agents["alpha"].behave(latency_ms=300)
    first = asyncio.create_task(router.route(signal("solo", "counted")))
    await wait_for_row(router, "counted", "in_flight")
    assert (await router.route(signal("solo", "counted")))[0] == 409
    assert (await first)[0] == 200
    assert (await router.route(signal("solo", "counted")))[0] == 200  # duplicate
    assert (await router.route(signal("solo other", "counted")))[0] == 422
    text = (await router.get("/metrics", key=None))[1]
    assert samples(text, "signals_received_total")[(("kind", "solo"),)] == 1


async def test_api_replays_do_not_feed_the_route_paths_metrics(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Retries and failed deliveries of a replay are not counted as the route path's, as
    with `router replay-dlq`, and the agent is told the delivery is a replay."""
    fresh_agents["alpha"].behave(status=503)
    status, body, _ = await router.route(signal("solo", "replayed"))
    assert status == 202, body
    before = (await router.get("/metrics", key=None))[1]
    status, replay_body = await router.get("/dlq", key="admin-key")
    assert status == 200 and len(replay_body["items"]) == 1
    async with router.session.post(
        f"{router.base}/dlq/replay", json={}, headers={"X-API-Key": "admin-key"}
    ) as resp:
        result = await resp.json()
    assert result["replayed"] == 1 and result["failed"] == 1, result
    after = (await router.get("/metrics", key=None))[1]
    for name in ("retry_attempts_total", "routing_errors_total"):
        assert samples(after, name) == samples(before, name), name
    assert samples(before, "retry_attempts_total")[(("agent", "alpha"),)] == 2
    assert len(fresh_agents["alpha"].requests()) == 6  # 3 routed, 3 replayed


async def test_a_late_outcome_never_overwrites_a_sweep_nor_counts_twice(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Should a claim be swept while its request still runs (here forced by moving its
    expiry), the request's outcome is not written over the sweep: the caller hears 503
    outcome_not_recorded (never a 2xx), the row stays interrupted with one pending DLQ entry,
    and dlq_total counts that entry once."""
    fresh_agents["alpha"].behave(latency_ms=400, status=503)
    task = asyncio.create_task(router.route(signal("solo", "swept-live")))
    await wait_for_row(router, "swept-live", "in_flight")
    router.query(
        "UPDATE signal_log SET claim_expires_at = now() - interval '1 second'"
        " WHERE log_id = 'swept-live' RETURNING 1"
    )
    await wait_for_row(router, "swept-live", "interrupted")
    status, body, _ = await task
    assert status == 503 and body["error"]["code"] == "outcome_not_recorded", body
    assert router.query("SELECT status FROM signal_log WHERE log_id = 'swept-live'") == [
        ("interrupted",)
    ]
    assert router.query("SELECT status FROM dlq WHERE log_id = 'swept-live'") == [("pending",)]
    text = (await router.get("/metrics", key=None))[1]
    assert samples(text, "dlq_total")[()] == 1
