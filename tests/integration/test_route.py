"""POST /route end to end: real agents over loopback, a real PostgreSQL, the router on real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.support import API_KEY, AgentProcess, RouterServer

pytestmark = pytest.mark.asyncio


def signal(message: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "user_1", "payload": {"message": message}, **extra}


async def test_delivered_signal_reaches_agent_and_is_logged(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A solo signal reaches its agent once, as the contract says, and its row commits."""
    status, body, _ = await router.route(
        signal("solo please", metadata={"m": 1}, timestamp="2026-11-23T10:00:00Z"),
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert status == 200, body
    assert body["status"] == "delivered" and body["kind"] == "solo"
    assert body["duplicate"] is False
    assert body["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    [outcome] = body["agents"]
    assert outcome["agent"] == "alpha" and outcome["ok"] is True
    assert outcome["status_code"] == 200 and outcome["attempts"] == 1

    [received] = fresh_agents["alpha"].requests()
    assert received["idempotency_key"] == body["log_id"]
    assert str(received["attempt"]) == "1"
    assert received["traceparent"].split("-")[1] == body["trace_id"]
    assert received["body"] == {
        "log_id": body["log_id"],
        "sender_id": "user_1",
        "kind": "solo",
        "payload": {"message": "solo please"},
        "metadata": {"m": 1},
        "timestamp": "2026-11-23T10:00:00Z",
    }
    [row] = router.query(
        "SELECT status, kind, payload, metadata, routed_agents, attempts, latency_ms, trace_id"
        " FROM signal_log WHERE log_id = %s",
        body["log_id"],
    )
    assert row[:6] == ("delivered", "solo", {"message": "solo please"}, {"m": 1}, ["alpha"], 1)
    assert 0 < row[6] < 10_000
    assert row[7] == body["trace_id"]
    assert router.query("SELECT count(*) FROM dlq") == [(0,)]


async def test_repeat_of_same_body_returns_stored_outcome_without_dispatch(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A repeat of a seen log_id and body answers the stored outcome and calls no agent."""
    body = signal("solo", log_id="order-1", metadata={"b": 2, "a": 1})
    first_status, first, first_headers = await router.route(body)
    # Same JSON value, different key order and whitespace.
    raw = b'{ "metadata": {"a":1,"b":2}, "payload": {"message":"solo"}, "log_id":"order-1",'
    raw += b' "sender_id":"user_1"}'
    status, again, headers = await router.route(raw)
    assert (first_status, status) == (200, 200)
    assert "Idempotent-Replayed" not in first_headers
    assert headers["Idempotent-Replayed"] == "true"
    assert again["duplicate"] is True and first["duplicate"] is False
    assert {k: again[k] for k in ("log_id", "kind", "status", "trace_id")} == {
        k: first[k] for k in ("log_id", "kind", "status", "trace_id")
    }
    assert again["agents"] == first["agents"]
    assert fresh_agents["alpha"].stats()["received"] == 1


async def test_same_log_id_with_another_body_is_422(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Reusing a log_id for a different body is a client bug: 422 naming log_id, no dispatch."""
    assert (await router.route(signal("solo", log_id="x-1")))[0] == 200
    status, body, _ = await router.route(signal("solo but different", log_id="x-1"))
    assert status == 422
    assert body["error"]["code"] == "log_id_conflict" and body["error"]["field"] == "log_id"
    status, body, _ = await router.route(signal("solo", log_id="x-1", metadata={"k": 1}))
    assert status == 422
    assert fresh_agents["alpha"].stats()["received"] == 1


async def test_same_log_id_while_in_flight_is_409(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """While the first request is still dispatching, the same log_id gets 409."""
    fresh_agents["alpha"].behave(latency_ms=400)
    first = asyncio.create_task(router.route(signal("solo", log_id="slow-1")))
    await asyncio.sleep(0.15)
    status, body, _ = await router.route(signal("solo", log_id="slow-1"))
    assert status == 409 and body["error"]["code"] == "in_flight"
    assert (await first)[0] == 200
    assert fresh_agents["alpha"].stats()["received"] == 1


async def test_concurrent_identical_requests_reach_the_agent_once(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Twenty concurrent posts of one log_id: one winner, and the agent hears it once."""
    fresh_agents["alpha"].behave(latency_ms=50)
    results = await asyncio.gather(
        *(router.route(signal("solo", log_id="race-1")) for _ in range(20))
    )
    statuses = sorted(r[0] for r in results)
    winners = [r for r in results if r[0] == 200 and r[1]["duplicate"] is False]
    assert len(winners) == 1
    assert set(statuses) <= {200, 409}
    assert fresh_agents["alpha"].stats()["keys"] == {"race-1": 1}


async def test_retries_5xx_then_delivers_with_attempt_headers(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """An agent failing twice with 503 is retried; the third attempt delivers."""
    fresh_agents["alpha"].behave(fail_first=2)
    status, body, _ = await router.route(signal("solo"))
    assert status == 200 and body["status"] == "delivered"
    assert body["agents"][0]["attempts"] == 3
    seen = fresh_agents["alpha"].requests()
    assert [str(r["attempt"]) for r in seen] == ["1", "2", "3"]
    assert {r["idempotency_key"] for r in seen} == {body["log_id"]}
    assert [r["status"] for r in seen] == [503, 503, 200]
    metrics = (await router.get("/metrics", key=None))[1]
    assert 'retry_attempts_total{agent="alpha"} 2.0' in metrics


async def test_other_4xx_fails_at_once_and_dead_letters(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A 400 from the only agent is not retried: 202 dead_lettered and a pending DLQ entry."""
    fresh_agents["alpha"].behave(status=400)
    status, body, _ = await router.route(signal("solo"))
    assert status == 202 and body["status"] == "dead_lettered"
    assert body["agents"][0]["attempts"] == 1 and body["agents"][0]["ok"] is False
    assert fresh_agents["alpha"].stats()["received"] == 1
    [row] = router.query(
        "SELECT status, agents, last_error, mode FROM dlq WHERE log_id = %s", body["log_id"]
    )
    assert row[0] == "pending" and row[1] == ["alpha"] and row[3] == "all"
    assert "alpha" in row[2] and "400" in row[2]
    assert router.query("SELECT status FROM signal_log WHERE log_id = %s", body["log_id"]) == [
        ("dead_lettered",)
    ]


async def test_all_mode_partial_failure_parks_only_the_failed_agent(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """`all` mode with one agent down: 200 partial, the DLQ entry lists only that agent."""
    fresh_agents["beta"].behave(status=503)
    status, body, _ = await router.route(signal("pair"))
    assert status == 200 and body["status"] == "partial"
    outcomes = {a["agent"]: a for a in body["agents"]}
    assert outcomes["alpha"]["ok"] is True
    assert outcomes["beta"]["ok"] is False and outcomes["beta"]["attempts"] == 3
    assert router.query("SELECT agents FROM dlq WHERE log_id = %s", body["log_id"]) == [(["beta"],)]
    metrics = (await router.get("/metrics", key=None))[1]
    assert 'routing_errors_total{agent="beta"} 1.0' in metrics
    assert 'routing_errors_total{agent="alpha"} 0.0' in metrics


async def test_first_success_cancels_the_slower_agent(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """first_success: the fast agent wins, the slow one is cancelled, nothing is parked."""
    fresh_agents["beta"].behave(latency_ms=1500)
    started = asyncio.get_running_loop().time()
    status, body, _ = await router.route(signal("race"))
    elapsed = asyncio.get_running_loop().time() - started
    assert status == 200 and body["status"] == "delivered"
    outcomes = {a["agent"]: a for a in body["agents"]}
    assert outcomes["alpha"]["ok"] is True
    assert outcomes["beta"]["ok"] is False and outcomes["beta"]["error"] == "cancelled"
    assert elapsed < 1.2
    assert router.query("SELECT count(*) FROM dlq") == [(0,)]


async def test_first_success_with_no_success_dead_letters_every_agent(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """first_success where every agent fails: 202 dead_lettered, both agents in the DLQ entry."""
    fresh_agents["alpha"].behave(status=500)
    fresh_agents["beta"].behave(status=503)
    status, body, _ = await router.route(signal("race"))
    assert status == 202 and body["status"] == "dead_lettered"
    [(agents,)] = router.query("SELECT agents FROM dlq WHERE log_id = %s", body["log_id"])
    assert sorted(agents) == ["alpha", "beta"]


async def test_dead_lettered_repeat_answers_202_duplicate(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A repeat of a dead-lettered signal gets the stored 202, duplicate=true, no dispatch."""
    fresh_agents["alpha"].behave(status=503)
    body = signal("solo", log_id="dl-1")
    assert (await router.route(body))[0] == 202
    fresh_agents["alpha"].behave(status=None)
    status, again, headers = await router.route(body)
    assert status == 202 and again["duplicate"] is True and again["status"] == "dead_lettered"
    assert headers["Idempotent-Replayed"] == "true"
    assert fresh_agents["alpha"].stats()["received"] == 3


async def test_auth_keys(router: RouterServer, fresh_agents: dict[str, AgentProcess]) -> None:
    """No key or an unknown key: 401 in the contract's format; an admin key may route too."""
    status, body, _ = await router.route(signal("solo"), key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body, _ = await router.route(signal("solo"), key="nope")
    assert status == 401
    assert (await router.route(signal("solo"), key="admin-key"))[0] == 200
    assert fresh_agents["alpha"].stats()["received"] == 1


async def test_bad_input_is_refused_before_dispatch(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Malformed and unstorable bodies get 400/422 with the field named, and no agent is called."""
    cases = [
        (b"{not json", 400, None),
        (b'{"sender_id": "u"}', 422, "payload"),
        (b'{"sender_id": "u", "payload": {}, "kind": "urgent"}', 422, "kind"),
        (b'{"sender_id": "it\'s", "payload": {"q": "\\u0000"}}', 422, "payload.q"),
        (
            b'{"sender_id": "u", "payload": {}, "timestamp": "2026-02-30T00:00:00Z"}',
            422,
            "timestamp",
        ),
    ]
    for raw, expected, field in cases:
        status, body, _ = await router.route(raw)
        assert status == expected, raw
        assert body["error"]["field"] == field
        assert body["error"]["message"]
    assert sum(a.stats()["received"] for a in fresh_agents.values()) == 0
    assert router.query("SELECT count(*) FROM signal_log") == [(0,)]


async def test_sql_metacharacters_are_data(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Quotes and SQL in sender_id and payload are stored verbatim (parameters only)."""
    sender = "x'); DROP TABLE signal_log; --"
    status, body, _ = await router.route(
        {"sender_id": sender, "payload": {"message": "solo ' OR '1'='1"}}
    )
    assert status == 200
    assert router.query("SELECT sender_id FROM signal_log WHERE log_id = %s", body["log_id"]) == [
        (sender,)
    ]


async def test_body_over_the_limit_is_413_before_parsing(
    database_url: str, routes_file: Any, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Bodies over MAX_BODY_BYTES get 413, with or without Content-Length; nothing is sent."""
    from tests.support import start_router

    async with start_router(database_url, routes_file, max_body_bytes=2000) as router:
        big = signal("solo " + "x" * 3000)
        status, body, _ = await router.route(big)
        assert status == 413 and body["error"]["code"] == "body_too_large"

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 500

        async with router.session.post(
            f"{router.base}/route", data=chunks(), headers={"X-API-Key": "test-key"}
        ) as resp:
            assert resp.status == 413
        assert (await router.route(signal("solo")))[0] == 200
    assert fresh_agents["alpha"].stats()["received"] == 1


async def test_errors_and_openapi_for_unknown_paths(router: RouterServer) -> None:
    """Unknown paths and methods answer in the error format; /openapi.json lists /route."""
    status, body = await router.get("/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"
    async with router.session.get(f"{router.base}/route") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
    status, spec = await router.get("/openapi.json", key=None)
    route = spec["paths"]["/route"]["post"]
    assert {"200", "202", "401", "409", "413", "422", "503"} <= set(route["responses"])
    body = route["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SignalBody"}
    assert spec["components"]["schemas"]["SignalBody"]["required"] == ["sender_id", "payload"]


async def test_health_and_metrics_series_exist_from_start(router: RouterServer) -> None:
    """/health and /health/ready answer 200; every kind and agent has its series at zero."""
    assert await router.get("/health", key=None) == (200, {"status": "ok"})
    status, ready = await router.get("/health/ready", key=None)
    assert status == 200 and ready["checks"] == {"database": "ok", "routing_table": "ok"}
    status, text = await router.get("/metrics", key=None)
    for kind in ("solo", "pair", "race", "general"):
        assert f'signals_received_total{{kind="{kind}"}} 0.0' in text
        assert f'router_latency_seconds_bucket{{kind="{kind}",le="0.005"}} 0.0' in text
    for agent in ("alpha", "beta", "gamma"):
        assert f'routing_errors_total{{agent="{agent}"}} 0.0' in text
        assert f'retry_attempts_total{{agent="{agent}"}} 0.0' in text
    assert "dlq_total 0.0" in text and "dlq_backlog" in text


def _lane_counts(text: str) -> dict[str, tuple[float, float]]:
    """(commits, rows) per writer lane, read off /metrics."""
    counts: dict[str, tuple[float, float]] = {}
    for lane in ("claim", "outcome"):
        commits = rows = None
        for line in text.splitlines():
            if line.startswith(f'log_commit_duration_seconds_count{{lane="{lane}"}} '):
                commits = float(line.split()[-1])
            elif line.startswith(f'log_commit_batch_rows_sum{{lane="{lane}"}} '):
                rows = float(line.split()[-1])
        assert commits is not None and rows is not None, f"no series for the {lane} lane"
        counts[lane] = (commits, rows)
    return counts


async def test_commit_metrics_tell_the_two_lanes_apart(router: RouterServer) -> None:
    """One routed signal is one claim row and one outcome row, each counted on its own lane."""
    before = _lane_counts((await router.get("/metrics", key=None))[1])
    status, body, _ = await router.route(signal("solo, counted per lane"))
    assert status == 200, body
    after = _lane_counts((await router.get("/metrics", key=None))[1])
    assert after["claim"] == (before["claim"][0] + 1, before["claim"][1] + 1)
    assert after["outcome"] == (before["outcome"][0] + 1, before["outcome"][1] + 1)


async def test_the_protocols_route_and_the_asgi_route_answer_alike(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A plain POST is served by the server's protocol, a chunked one through ASGI: the same
    signal and its repeat answer the same either way, once dispatched and once logged."""
    raw = orjson.dumps(signal("solo, door one", log_id="doors-1"))
    host, port = router.base.removeprefix("http://").split(":")

    async def chunked(raw: bytes) -> tuple[int, dict[str, str], Any]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /route HTTP/1.1\r\nHost: t\r\nX-API-Key: " + API_KEY.encode()
            + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n" % len(raw) + raw + b"\r\n0\r\n\r\n"
        )  # fmt: skip
        data = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, orjson.loads(body)

    status, first, first_headers = await router.route(raw)
    again_status, again_headers, again = await chunked(raw)
    assert (status, again_status) == (200, 200)
    assert first["status"] == again["status"] == "delivered"
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert "Idempotent-Replayed" not in first_headers
    assert again_headers["idempotent-replayed"] == "true"
    assert again_headers["content-type"] == first_headers["Content-Type"] == "application/json"

    other = orjson.dumps(signal("solo, door two", log_id="doors-2"))
    status, _, answer = await chunked(other)
    repeat_status, repeat, repeat_headers = await router.route(other)
    assert (status, answer["status"], answer["duplicate"]) == (200, "delivered", False)
    assert (repeat_status, repeat["duplicate"]) == (200, True)
    assert repeat_headers["Idempotent-Replayed"] == "true"
    assert fresh_agents["alpha"].stats()["received"] == 2
    rows = router.query(
        "SELECT log_id, status FROM signal_log WHERE log_id IN ('doors-1', 'doors-2')"
        " ORDER BY log_id"
    )
    assert rows == [("doors-1", "delivered"), ("doors-2", "delivered")]
