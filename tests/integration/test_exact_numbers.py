"""Numbers through the real router: kept exactly end to end, or refused before anything happens."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support import AgentProcess, RouterServer

pytestmark = pytest.mark.asyncio


async def test_integer_beyond_64_bits_is_refused_and_nothing_is_recorded_or_sent(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """18446744073709551617 would become 1.8446744073709552e+19: 422 naming it, no row, no call."""
    raw = (
        b'{"sender_id":"user_1","log_id":"big-1",'
        b'"payload":{"message":"solo","items":[1,2,{"n":18446744073709551617}]}}'
    )
    status, body, headers = await router.route(raw)
    assert status == 422, body
    assert headers["Content-Type"] == "application/json"
    error = body["error"]
    assert (error["code"], error["field"]) == ("inexact_number", "payload.items[2].n")
    assert "18446744073709551617" in error["message"]
    assert all(agent.requests() == [] for agent in fresh_agents.values())
    assert router.query("SELECT count(*) FROM signal_log") == [(0,)]
    assert router.query("SELECT count(*) FROM dlq") == [(0,)]


async def test_numbers_within_reach_are_stored_and_forwarded_exactly(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """2**53 + 1 (not a double), the 64-bit bounds and 17-digit doubles arrive as written."""
    raw = (
        b'{"sender_id":"user_1","payload":{"message":"solo","id":9007199254740993,'
        b'"max":18446744073709551615,"min":-9223372036854775808,"ratio":0.30000000000000004},'
        b'"metadata":{"seq":9007199254740993}}'
    )
    status, body, _ = await router.route(raw)
    assert status == 200, body
    [received] = fresh_agents["alpha"].requests()
    payload = received["body"]["payload"]
    assert payload == {
        "message": "solo",
        "id": 9007199254740993,
        "max": 18446744073709551615,
        "min": -9223372036854775808,
        "ratio": 0.30000000000000004,
    }
    assert type(payload["id"]) is int and received["body"]["metadata"] == {"seq": 9007199254740993}
    # As PostgreSQL holds them (jsonb numbers are exact decimals).
    [row] = router.query(
        "SELECT payload->>'id', payload->>'max', payload->>'min', payload->>'ratio',"
        " metadata->>'seq' FROM signal_log WHERE log_id = %s",
        body["log_id"],
    )
    assert [Decimal(v) for v in row] == [
        Decimal("9007199254740993"),
        Decimal("18446744073709551615"),
        Decimal("-9223372036854775808"),
        Decimal("0.30000000000000004"),
        Decimal("9007199254740993"),
    ]
