"""The DLQ API and replay, end to end: real agents, a real PostgreSQL, the router on real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from router.dispatch import Dispatcher
from router.http11_client import Http11Client
from router.replay import Replayer
from router.routing_file import load_routing_table
from router.store.dlq import DlqFilter
from router.store.pool import open_pool
from tests.integration.admin_support import admin, dlq_rows, log_rows, seed_dead_letters
from tests.support import API_KEY, AgentProcess, RouterServer, start_router

pytestmark = pytest.mark.asyncio


def signal(message: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "user_1", "payload": {"message": message}, **extra}


async def dead_letter(router: RouterServer, message: str, **extra: Any) -> dict[str, Any]:
    """Route a signal whose agents are down; its POST /route answer."""
    status, body, _ = await router.route(signal(message, **extra))
    assert status in (200, 202), body
    assert body["status"] in ("partial", "dead_lettered"), body
    answer: dict[str, Any] = body
    return answer


async def entry_of(router: RouterServer, log_id: str) -> dict[str, Any]:
    [(entry_id,)] = router.query("SELECT id FROM dlq WHERE log_id = %s", log_id)
    status, entry = await admin(router, "GET", f"/dlq/{entry_id}")
    assert status == 200, entry
    found: dict[str, Any] = entry
    return found


async def test_dead_lettered_signal_is_replayed_once_the_agent_is_back(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A signal dead-lettered while its agent was down reaches it again on replay, as sent."""
    alpha = fresh_agents["alpha"]
    alpha.behave(status=503)
    routed = await dead_letter(
        router, "solo outage", timestamp="2026-11-23T10:00:00Z", metadata={"m": 1}
    )
    assert routed["status"] == "dead_lettered"
    log_id = routed["log_id"]
    entry = await entry_of(router, log_id)
    assert entry["status"] == "pending" and entry["agents"] == ["alpha"]
    assert entry["mode"] == "all" and entry["replay_count"] == 0 and entry["attempts"] == 3
    assert "alpha: HTTP 503" in entry["last_error"]

    alpha.behave(status=None)
    alpha.reset()
    status, result = await admin(router, "POST", "/dlq/replay", {"ids": [entry["id"]]})
    assert status == 200, result
    assert result["replayed"] == 1 and result["resolved"] == 1
    assert result["failed"] == 0 and result["parked"] == 0 and result["skipped"] == []

    [received] = alpha.requests()
    assert received["idempotency_key"] == log_id
    assert received["body"] == {
        "log_id": log_id,
        "sender_id": "user_1",
        "kind": "solo",
        "payload": {"message": "solo outage"},
        "metadata": {"m": 1},
        "timestamp": "2026-11-23T10:00:00Z",
    }
    _, trace_id, span_id, _ = received["traceparent"].split("-")
    assert trace_id == routed["trace_id"] and span_id != "0" * 15 + "1"

    after = await entry_of(router, log_id)
    assert after["status"] == "resolved" and after["attempts"] == 4
    assert after["replay_count"] == 0 and after["last_attempt_at"] is not None
    status, row = await router.get(f"/logs/{log_id}")
    assert status == 200 and row["status"] == "delivered"
    [outcome] = row["response"]
    assert outcome["agent"] == "alpha" and outcome["ok"] is True and row["attempts"] == 4

    # Resolved: a replay by id reports it and dispatches nothing.
    status, again = await admin(router, "POST", "/dlq/replay", {"ids": [entry["id"]]})
    assert status == 200 and again["replayed"] == 0
    assert again["skipped"] == [{"id": entry["id"], "reason": "resolved"}]
    assert len(alpha.requests()) == 1


async def test_partial_failure_replays_only_the_failed_agent(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A pair signal with beta down replays to beta alone and ends delivered."""
    alpha, beta = fresh_agents["alpha"], fresh_agents["beta"]
    beta.behave(status=503)
    routed = await dead_letter(router, "pair please")
    assert routed["status"] == "partial"
    entry = await entry_of(router, routed["log_id"])
    assert entry["agents"] == ["beta"]

    beta.behave(status=None)
    alpha.reset()
    beta.reset()
    status, result = await admin(router, "POST", "/dlq/replay", {})
    assert status == 200 and result["replayed"] == 1 and result["resolved"] == 1, result
    assert alpha.requests() == []
    assert [r["idempotency_key"] for r in beta.requests()] == [routed["log_id"]]
    _, row = await router.get(f"/logs/{routed['log_id']}")
    assert row["status"] == "delivered"
    assert {o["agent"]: o["ok"] for o in row["response"]} == {"alpha": True, "beta": True}


async def test_all_mode_replay_keeps_only_the_agents_still_failing(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """An all-mode entry drops the agents a replay delivered to; the next retries the rest."""
    alpha, beta = fresh_agents["alpha"], fresh_agents["beta"]
    alpha.behave(status=503)
    beta.behave(status=503)
    routed = await dead_letter(router, "pair both down")
    assert routed["status"] == "dead_lettered"

    alpha.behave(status=None)
    status, result = await admin(router, "POST", "/dlq/replay", {"kind": "pair"})
    assert status == 200 and result["failed"] == 1 and result["resolved"] == 0, result
    entry = await entry_of(router, routed["log_id"])
    assert entry["agents"] == ["beta"] and entry["status"] == "pending"
    assert entry["replay_count"] == 1 and entry["last_error"].startswith("beta: ")
    _, row = await router.get(f"/logs/{routed['log_id']}")
    assert row["status"] == "partial"

    beta.behave(status=None)
    alpha.reset()
    beta.reset()
    status, result = await admin(router, "POST", "/dlq/replay", {"agent": "beta"})
    assert status == 200 and result["resolved"] == 1, result
    assert alpha.requests() == [] and len(beta.requests()) == 1
    _, row = await router.get(f"/logs/{routed['log_id']}")
    assert row["status"] == "delivered"
    assert {o["agent"]: o["ok"] for o in row["response"]} == {"alpha": True, "beta": True}


async def test_first_success_entry_resolves_with_one_success(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A first_success entry is resolved as soon as one of its agents succeeds on replay."""
    alpha, beta = fresh_agents["alpha"], fresh_agents["beta"]
    alpha.behave(status=503)
    beta.behave(status=503)
    routed = await dead_letter(router, "race now")
    entry = await entry_of(router, routed["log_id"])
    assert entry["mode"] == "first_success" and entry["agents"] == ["alpha", "beta"]

    beta.behave(status=None)
    status, result = await admin(router, "POST", "/dlq/replay", {"ids": [entry["id"]]})
    assert status == 200 and result["resolved"] == 1, result
    assert (await entry_of(router, routed["log_id"]))["status"] == "resolved"
    _, row = await router.get(f"/logs/{routed['log_id']}")
    assert row["status"] == "delivered"


async def test_repeated_failure_parks_and_only_a_replay_by_id_retries_it(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """After DLQ_MAX_REPLAYS failed replays an entry is parked: bulk replays skip it, by id not."""
    alpha = fresh_agents["alpha"]
    async with start_router(database_url, routes_file, dlq_max_replays=2) as router:
        alpha.behave(status=503)
        routed = await dead_letter(router, "solo down")
        log_id = routed["log_id"]

        _, first = await admin(router, "POST", "/dlq/replay", {})
        assert (first["replayed"], first["failed"], first["parked"]) == (1, 1, 0)
        assert (await entry_of(router, log_id))["status"] == "pending"
        _, second = await admin(router, "POST", "/dlq/replay", {})
        assert (second["replayed"], second["failed"], second["parked"]) == (1, 1, 1)
        entry = await entry_of(router, log_id)
        assert entry["status"] == "parked" and entry["replay_count"] == 2

        alpha.reset()  # forgets what it received, and its behaviour too
        alpha.behave(status=503)
        _, bulk = await admin(router, "POST", "/dlq/replay", {"agent": "alpha"})
        assert bulk["replayed"] == 0 and alpha.requests() == []

        _, by_id = await admin(router, "POST", "/dlq/replay", {"ids": [entry["id"]]})
        assert (by_id["replayed"], by_id["failed"], by_id["parked"]) == (1, 1, 1)
        assert {r["idempotency_key"] for r in alpha.requests()} == {log_id}
        parked = await entry_of(router, log_id)
        assert parked["status"] == "parked" and parked["replay_count"] == 3

        alpha.behave(status=None)
        _, healed = await admin(router, "POST", "/dlq/replay", {"ids": [entry["id"]]})
        assert healed["resolved"] == 1
        assert (await entry_of(router, log_id))["status"] == "resolved"


async def test_discard_marks_the_entry_and_changes_nothing_else(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """DELETE /dlq/{id} marks that entry discarded, keeps it, and it is never replayed."""
    ids = seed_dead_letters(router.database_url, 2)
    dlq_before, logs_before = dlq_rows(router), log_rows(router)
    status, entry = await admin(router, "DELETE", f"/dlq/{ids[0]}")
    assert status == 200, entry
    assert entry["id"] == ids[0] and entry["status"] == "discarded"

    dlq_after = dlq_rows(router)
    status_column, closed_at_column = 13, 16
    changed = [
        (before, after)
        for before, after in zip(dlq_before, dlq_after, strict=True)
        if before != after
    ]
    [(before, after)] = changed
    assert after[0] == ids[0] and after[status_column] == "discarded"
    # Discarding closes the entry: it moves to the day's closed partition, for retention.
    assert before[closed_at_column] is None and after[closed_at_column] is not None
    kept = [i for i in range(len(before)) if i not in (status_column, closed_at_column)]
    assert [before[i] for i in kept] == [after[i] for i in kept]
    assert log_rows(router) == logs_before

    assert (await admin(router, "DELETE", f"/dlq/{ids[0]}"))[0] == 200  # again: a no-op
    _, result = await admin(router, "POST", "/dlq/replay", {"ids": [ids[0]]})
    assert result["replayed"] == 0 and result["skipped"] == [{"id": ids[0], "reason": "discarded"}]
    _, bulk = await admin(router, "POST", "/dlq/replay", {})
    assert bulk["replayed"] == 1  # only the other entry
    assert list(fresh_agents["alpha"].stats()["keys"]) == ["seed-2"]
    assert (await admin(router, "DELETE", f"/dlq/{ids[1]}"))[0] == 409  # resolved meanwhile
    assert (await admin(router, "DELETE", "/dlq/999999"))[0] == 404


async def test_dry_run_lists_what_would_be_replayed_and_changes_nothing(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A dry run, bulk or by id, answers the entries it would replay; no row or agent is touched."""
    ids = seed_dead_letters(router.database_url, 3)
    await admin(router, "DELETE", f"/dlq/{ids[2]}")
    dlq_before, logs_before = dlq_rows(router), log_rows(router)

    status, bulk = await admin(router, "POST", "/dlq/replay", {"dry_run": True, "limit": 10})
    assert status == 200, bulk
    assert bulk["dry_run"] is True and bulk["ids"] == ids[:2]
    assert [e["log_id"] for e in bulk["entries"]] == ["seed-1", "seed-2"]
    assert (bulk["replayed"], bulk["resolved"], bulk["failed"], bulk["parked"]) == (0, 0, 0, 0)

    _, by_id = await admin(
        router, "POST", "/dlq/replay", {"ids": [ids[1], ids[2]], "dry_run": True}
    )
    assert by_id["ids"] == [ids[1]]
    assert by_id["skipped"] == [{"id": ids[2], "reason": "discarded"}]

    assert dlq_rows(router) == dlq_before and log_rows(router) == logs_before
    assert fresh_agents["alpha"].stats()["received"] == 0


async def test_replay_request_errors_are_4xx_in_the_contract_format(router: RouterServer) -> None:
    """Malformed replay bodies get 400/422 naming the field; the key is checked before the body."""
    cases: list[tuple[bytes, int, str | None]] = [
        (b"not json", 400, None),
        (b"", 400, None),
        (b"[1, 2]", 422, None),
        (b'{"ids": [1], "agent": "alpha"}', 422, "ids"),
        (b'{"ids": [1], "limit": 5}', 422, "ids"),
        (b'{"ids": ["1"]}', 422, "ids.0"),
        (b'{"ids": [1.5]}', 422, "ids.0"),
        (b'{"ids": [0]}', 422, "ids.0"),
        (b'{"ids": [123456789012345678901234567890]}', 422, "ids.0"),
        (b'{"ids": []}', 422, "ids"),
        (b'{"ids": 5}', 422, "ids"),
        (b'{"limit": 0}', 422, "limit"),
        (b'{"limit": 100000}', 422, "limit"),
        (b'{"limit": true}', 422, "limit"),
        (b'{"dry_run": "yes"}', 422, "dry_run"),
        (b'{"agent": "al\\u0000pha"}', 422, "agent"),
        (b'{"kind": ""}', 422, "kind"),
        (b'{"bogus": 1}', 422, "bogus"),
    ]
    for raw, expected, field in cases:
        status, body = await admin(router, "POST", "/dlq/replay", raw=raw)
        assert status == expected, (raw, body)
        assert set(body["error"]) == {"code", "message", "field"}
        assert body["error"]["field"] == field, (raw, body)
    status, body = await admin(router, "POST", "/dlq/replay", raw=b"not json", key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_get_and_list_entries_with_filters_and_pagination(router: RouterServer) -> None:
    """GET /dlq pages newest first through every entry once; filters and bad input behave."""
    solo = seed_dead_letters(router.database_url, 5, prefix="solo")
    pair = seed_dead_letters(
        router.database_url, 4, prefix="pair", agents=("alpha", "beta"), kind="pair"
    )
    await admin(router, "DELETE", f"/dlq/{solo[0]}")
    every = sorted(solo + pair, reverse=True)

    seen: list[int] = []
    cursor = ""
    for _ in range(10):
        status, page = await admin(router, "GET", f"/dlq?limit=2&cursor={cursor}")
        assert status == 200, page
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == every

    _, page = await admin(router, "GET", "/dlq?agent=beta&limit=1000")
    assert [e["id"] for e in page["items"]] == sorted(pair, reverse=True)
    _, page = await admin(router, "GET", "/dlq?kind=solo&status=pending")
    assert [e["id"] for e in page["items"]] == sorted(solo[1:], reverse=True)
    _, page = await admin(router, "GET", "/dlq?status=discarded")
    assert [e["id"] for e in page["items"]] == [solo[0]]
    [item] = page["items"]
    _, one = await admin(router, "GET", f"/dlq?log_id={item['log_id']}")
    assert [e["id"] for e in one["items"]] == [solo[0]]  # a signal's entry, by its log_id
    assert set(item) >= {
        "id", "log_id", "sender_id", "kind", "agents", "mode", "payload", "last_error",
        "attempts", "replay_count", "status", "created_at", "last_attempt_at",
    }  # fmt: skip
    assert item["created_at"].endswith("Z")

    status, entry = await admin(router, "GET", f"/dlq/{pair[0]}")
    assert status == 200 and entry["agents"] == ["alpha", "beta"] and entry["kind"] == "pair"
    for path, expected, field in [
        ("/dlq/999999", 404, "id"),
        ("/dlq/abc", 422, "id"),
        ("/dlq/-1", 422, "id"),
        ("/dlq/99999999999999999999999", 422, "id"),
        ("/dlq?status=lost", 422, "status"),
        ("/dlq?limit=0", 422, "limit"),
        ("/dlq?limit=1001", 422, "limit"),
        ("/dlq?cursor=%%%", 400, "cursor"),
        ("/dlq?cursor=WyJsIiwgMV0", 400, "cursor"),
        ("/dlq?agent=a%00b", 422, "agent"),
    ]:
        status, body = await admin(router, "GET", path)
        assert status == expected, (path, body)
        assert body["error"]["field"] == field, (path, body)


async def test_concurrent_replayers_dispatch_every_entry_exactly_once(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Three replayers with their own pools and an API call at once deliver each entry once."""
    ids = seed_dead_letters(router.database_url, 300)
    table = load_routing_table(router.settings.routes_file)

    async def replayer() -> int:
        pool = await open_pool(router.database_url, min_size=1, max_size=3, wait=True)
        session = Http11Client()
        try:
            worker = Replayer(
                pool,
                Dispatcher(session, table.agents.values()),
                table,
                max_replays=5,
                batch_size=10,
                workers=2,
            )
            return (await worker.replay_pending(DlqFilter(), limit=None)).replayed
        finally:
            await session.close()
            await pool.close()

    async def api() -> int:
        status, result = await admin(router, "POST", "/dlq/replay", {"limit": 1000})
        assert status == 200, result
        return int(result["replayed"])

    counts = await asyncio.gather(replayer(), replayer(), replayer(), api())
    assert sum(counts) == len(ids)
    keys = fresh_agents["alpha"].stats()["keys"]
    assert len(keys) == len(ids) and set(keys.values()) == {1}
    assert router.query("SELECT status, count(*) FROM dlq GROUP BY 1") == [("resolved", 300)]
    assert router.query("SELECT DISTINCT status FROM signal_log") == [("delivered",)]


async def test_one_round_never_dispatches_a_failing_entry_twice(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Entries that fail stay pending, yet one round with several workers tries each just once."""
    alpha = fresh_agents["alpha"]
    alpha.behave(status=503)
    ids = seed_dead_letters(router.database_url, 30)
    status, result = await admin(router, "POST", "/dlq/replay", {"limit": 1000})
    assert status == 200 and result["replayed"] == 30 and result["failed"] == 30, result
    keys = alpha.stats()["keys"]
    # Three attempts each (max_attempts = 3), from one dispatch.
    assert len(keys) == len(ids) and set(keys.values()) == {3}
    assert router.query("SELECT DISTINCT status, replay_count FROM dlq") == [("pending", 1)]


async def test_missing_agent_parks_the_entry_instead_of_crashing(router: RouterServer) -> None:
    """An entry whose agent left the routing table is parked with a last_error naming it."""
    [entry_id] = seed_dead_letters(router.database_url, 1, agents=("zeta",))
    status, result = await admin(router, "POST", "/dlq/replay", {"ids": [entry_id]})
    assert status == 200, result
    assert (result["replayed"], result["failed"], result["parked"]) == (1, 1, 1)
    _, entry = await admin(router, "GET", f"/dlq/{entry_id}")
    assert entry["status"] == "parked" and "zeta" in entry["last_error"]
    assert "routing table" in entry["last_error"]


async def test_backlog_gauge_follows_replays_and_discards(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """dlq_backlog drops as soon as a replay resolves or a discard removes pending entries.

    The sweeper's periodic refresh is off (an hour), so only the replay path can update it.
    """
    async with start_router(database_url, routes_file, sweep_interval_s=3600) as router:
        fresh_agents["alpha"].behave(status=503)
        await dead_letter(router, "solo one")
        await dead_letter(router, "solo two")
        for _ in range(50):  # the route path has it refreshed within a second
            if await backlog(router) == 2:
                break
            await asyncio.sleep(0.1)
        assert await backlog(router) == 2
        fresh_agents["alpha"].behave(status=None)
        _, result = await admin(router, "POST", "/dlq/replay", {"limit": 1})
        assert result["resolved"] == 1
        assert await backlog(router) == 1
        [(entry_id,)] = router.query("SELECT id FROM dlq WHERE status = 'pending'")
        await admin(router, "DELETE", f"/dlq/{entry_id}")
        assert await backlog(router) == 0


async def backlog(router: RouterServer) -> float:
    status, text = await router.get("/metrics", key=None)
    assert status == 200
    [line] = [ln for ln in text.splitlines() if ln.startswith("dlq_backlog ")]
    return float(line.split()[1])


async def test_admin_endpoints_need_an_admin_key(router: RouterServer) -> None:
    """No or unknown key gets 401 and a route-only key 403 on every admin endpoint."""
    [entry_id] = seed_dead_letters(router.database_url, 1)
    endpoints = [
        ("GET", "/logs"),
        ("GET", "/logs/seed-1"),
        ("GET", "/dlq"),
        ("GET", f"/dlq/{entry_id}"),
        ("DELETE", f"/dlq/{entry_id}"),
        ("POST", "/dlq/replay"),
    ]
    for method, path in endpoints:
        for key, expected, code in [
            (None, 401, "unauthorized"),
            ("nope", 401, "unauthorized"),
            ("", 401, "unauthorized"),
            (API_KEY, 403, "forbidden"),
        ]:
            status, body = await admin(router, method, path, {"dry_run": True}, key=key)
            assert status == expected, (method, path, key, body)
            assert body["error"]["code"] == code
    assert router.query("SELECT status FROM dlq") == [("pending",)]
    status, _ = await admin(router, "GET", f"/dlq/{entry_id}")
    assert status == 200


async def test_route_keys_are_admin_keys_when_no_admin_key_is_set(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Without ADMIN_API_KEY the API_KEY keys may read /logs and use /dlq."""
    async with start_router(database_url, routes_file, admin_api_keys=frozenset()) as router:
        assert (await admin(router, "GET", "/dlq", key=API_KEY))[0] == 200
        assert (await admin(router, "GET", "/logs", key=API_KEY))[0] == 200
        assert (await admin(router, "GET", "/logs", key="admin-key"))[0] == 401


async def test_openapi_describes_the_admin_api(router: RouterServer) -> None:
    """/openapi.json lists every admin endpoint with its key, shapes and error codes."""
    status, spec = await router.get("/openapi.json", key=None)
    assert status == 200
    paths = spec["paths"]
    expected = {
        ("/logs", "get"): {"200", "400", "401", "403", "422", "503"},
        ("/logs/{log_id}", "get"): {"200", "401", "403", "404", "503"},
        ("/dlq", "get"): {"200", "400", "401", "403", "422", "503"},
        ("/dlq/{id}", "get"): {"200", "401", "403", "404", "422", "503"},
        ("/dlq/{id}", "delete"): {"200", "401", "403", "404", "409", "422", "503"},
        ("/dlq/replay", "post"): {"200", "400", "401", "403", "413", "422", "503"},
    }
    for (path, method), codes in expected.items():
        operation = paths[path][method]
        assert codes == set(operation["responses"]), (path, method)
        assert operation["security"] == [{"APIKeyHeader": []}]
    # The shapes themselves are checked against real answers in test_openapi_conformance.py.
    schemas = spec["components"]["schemas"]
    assert set(schemas["ReplayRequest"]["properties"]) == {
        "ids",
        "agent",
        "kind",
        "limit",
        "dry_run",
    }
    assert set(schemas["ReplayAnswer"]["required"]) >= {"replayed", "resolved", "failed", "parked"}
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


NASTY = [
    "", "%00", "%FF", "'", "%22", "\\", "9" * 50, "-1", "0", "1.5", "null", "[]", "%7B%7D",
    "%F0%9F%98%80", "a" * 5000, "1e9999", "NaN", "2026-11-23T10:00:00Z", "%ED%A0%80", "+",
]  # fmt: skip


PATHS = [("GET", "/logs/"), ("GET", "/dlq/"), ("DELETE", "/dlq/")]


async def test_no_parameter_or_body_gets_a_500(router: RouterServer) -> None:
    """Hostile values in every query parameter, path and replay body get a 2xx or a 4xx."""
    seed_dead_letters(router.database_url, 2)
    params = {
        "/logs": ["sender_id", "kind", "status", "since", "until", "limit", "cursor"],
        "/dlq": ["status", "agent", "kind", "limit", "cursor"],
    }
    requests = [
        ("GET", f"{path}?{name}={value}")
        for value in NASTY
        for path, names in params.items()
        for name in names
    ]
    requests += [(method, path + value) for value in NASTY for method, path in PATHS]
    # Concurrently: the answers are independent, and the test server's keep-alive is slow.
    answers = await asyncio.gather(*(admin(router, method, path) for method, path in requests))
    for (method, path), (status, body) in zip(requests, answers, strict=True):
        assert status < 500, (method, path[:80], body)
    bodies = [
        b"null", b'"x"', b"5", b"{}" * 2, b'{"ids": null}', b'{"agent": 5}', b'{"ids": [[1]]}',
        b'{"dry_run": null}', b"[" * 100_000, b'{"ids": [1, 1, 1], "dry_run": true}',
        b"\xff\xfe", b'{"kind": "' + b"k" * 300 + b'"}', b'{"agent": "zeta", "limit": 1}',
    ]  # fmt: skip
    for raw in bodies:
        status, body = await admin(router, "POST", "/dlq/replay", raw=raw)
        assert status < 500, (raw[:40], body)
