"""POST /route end to end: real agents over loopback, a real PostgreSQL, the router on real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import AgentProcess, RouterServer

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
