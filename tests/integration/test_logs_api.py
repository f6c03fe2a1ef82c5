"""GET /logs and GET /logs/{log_id} against a real PostgreSQL, the router on real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.integration.admin_support import seed_log_rows
from tests.support import AgentProcess, RouterServer

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STATUSES = ("delivered", "partial", "dead_lettered", "interrupted", "in_flight")


def sample_rows() -> list[tuple[str, str, str, str, datetime]]:
    """23 rows over 5 instants (ties broken by log_id), 3 senders, 2 kinds, 5 statuses."""
    return [
        (
            f"log-{i:02d}",
            f"sender-{i % 3}",
            "solo" if i % 2 else "pair",
            STATUSES[i % 5],
            T0 + timedelta(minutes=i % 5),
        )
        for i in range(23)
    ]


def newest_first(rows: list[tuple[str, str, str, str, datetime]]) -> list[str]:
    return [r[0] for r in sorted(rows, key=lambda r: (r[4], r[0]), reverse=True)]


async def walk(router: RouterServer, query: str, limit: int) -> list[str]:
    """Every log_id of a listing, following next_cursor page by page."""
    seen: list[str] = []
    cursor = ""
    for _ in range(100):
        status, page = await router.get(f"/logs?{query}&limit={limit}&cursor={cursor}")
        assert status == 200, page
        assert len(page["items"]) <= limit
        seen += [item["log_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return seen
        cursor = page["next_cursor"]
    raise AssertionError("pagination did not end")


async def test_pages_walk_every_row_once_newest_first(router: RouterServer) -> None:
    """Keyset pages, with and without a filter, list every row exactly once, newest first."""
    rows = sample_rows()
    seed_log_rows(router.database_url, rows)
    assert await walk(router, "", 4) == newest_first(rows)
    assert await walk(router, "", 1000) == newest_first(rows)
    sender_1 = [r for r in rows if r[1] == "sender-1"]
    assert await walk(router, "sender_id=sender-1", 2) == newest_first(sender_1)
    status, page = await router.get("/logs")
    assert status == 200 and len(page["items"]) == 23 and page["next_cursor"] is None


async def test_filters_select_exactly_the_matching_rows(router: RouterServer) -> None:
    """sender_id, kind, status, since (inclusive) and until (exclusive) combine with AND."""
    rows = sample_rows()
    seed_log_rows(router.database_url, rows)
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    cases: list[tuple[str, list[tuple[str, str, str, str, datetime]]]] = [
        ("kind=solo", [r for r in rows if r[2] == "solo"]),
        ("status=partial", [r for r in rows if r[3] == "partial"]),
        ("status=in_flight&kind=pair", [r for r in rows if r[3] == "in_flight" and r[2] == "pair"]),
        (
            f"since={quote(since.isoformat())}&until={quote(until.isoformat())}",
            [r for r in rows if since <= r[4] < until],
        ),
        ("since=2026-11-23T10:04:00Z&sender_id=sender-2", [
            r for r in rows if r[4] >= T0 + timedelta(minutes=4) and r[1] == "sender-2"
        ]),
        ("until=2026-11-23t11:00:00%2B01:00", [r for r in rows if r[4] < T0]),
        ("sender_id=&kind=&status=&since=&until=", rows),
        ("sender_id=nobody", []),
        ("sender_id=" + quote("' OR '1'='1"), []),
    ]  # fmt: skip
    for query, expected in cases:
        assert await walk(router, query, 3) == newest_first(expected), query


async def test_log_item_has_the_contract_fields(
    router: RouterServer, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A routed signal's item carries every contract field, created_at as RFC 3339."""
    status, routed, _ = await router.route(
        {"sender_id": "user_9", "payload": {"message": "solo"}, "metadata": {"k": "v"}}
    )
    assert status == 200, routed
    status, item = await router.get(f"/logs/{routed['log_id']}")
    assert status == 200, item
    assert set(item) >= {
        "log_id", "sender_id", "kind", "status", "payload", "metadata", "routed_agents",
        "response", "trace_id", "attempts", "latency_ms", "created_at",
    }  # fmt: skip
    assert item["log_id"] == routed["log_id"] and item["sender_id"] == "user_9"
    assert (item["kind"], item["status"]) == ("solo", "delivered")
    assert item["payload"] == {"message": "solo"} and item["metadata"] == {"k": "v"}
    assert item["routed_agents"] == ["alpha"] and item["trace_id"] == routed["trace_id"]
    assert item["response"] == routed["agents"] and item["attempts"] == 1
    assert 0 < item["latency_ms"] < 10_000
    created = datetime.fromisoformat(item["created_at"])
    assert item["created_at"].endswith("Z")
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    _, page = await router.get("/logs?sender_id=user_9")
    assert page["items"] == [item]


async def test_a_claim_in_flight_is_listed_as_in_flight(router: RouterServer) -> None:
    """A signal still being dispatched is found by log_id with status in_flight."""
    seed_log_rows(router.database_url, [("claim-1", "s", "solo", "in_flight", T0)])
    status, item = await router.get("/logs/claim-1")
    assert status == 200 and item["status"] == "in_flight" and item["response"] is None


async def test_unknown_and_impossible_log_ids_are_404(router: RouterServer) -> None:
    """A log_id that is absent, too long, or holds characters a log_id cannot is a 404."""
    for log_id in ("absent", "a" * 201, "x%00y", "with%20space", "%C3%A9t%C3%A9", "'%3B--"):
        status, body = await router.get(f"/logs/{log_id}")
        assert status == 404, (log_id, body)
        assert body["error"] == {
            "code": "not_found",
            "message": "no signal with this log_id",
            "field": "log_id",
        }


async def test_bad_parameters_are_4xx_naming_the_field(router: RouterServer) -> None:
    """Bad limits, statuses, times and cursors get 400/422 in the contract's format."""
    seed_log_rows(router.database_url, sample_rows())
    _, dlq_page = await router.get("/dlq?limit=1")
    cases = [
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("limit=-5", 422, "limit"),
        ("limit=abc", 422, "limit"),
        ("limit=" + "9" * 40, 422, "limit"),
        ("status=lost", 422, "status"),
        ("status=DELIVERED", 422, "status"),
        ("since=yesterday", 422, "since"),
        ("since=2026-11-23T10:00:00", 422, "since"),  # no offset: ambiguous
        ("until=2026-13-01T00:00:00Z", 422, "until"),
        ("sender_id=a%00b", 422, "sender_id"),
        ("kind=" + "k" * 1001, 422, "kind"),
        ("cursor=not-a-cursor!", 400, "cursor"),
        ("cursor=WyJsIl0", 400, "cursor"),  # ["l"]: the right tag, nothing after it
        ("cursor=" + "A" * 5000, 400, "cursor"),
    ]
    if dlq_page["next_cursor"] is None:
        cases.append(("cursor=WyJkIiwgNV0", 400, "cursor"))  # a /dlq cursor: ["d", 5]
    for query, expected, field in cases:
        status, body = await router.get(f"/logs?{query}")
        assert status == expected, (query, body)
        assert set(body["error"]) == {"code", "message", "field"}
        assert body["error"]["field"] == field, (query, body)


async def test_stored_values_json_cannot_round_trip_still_answer(router: RouterServer) -> None:
    """jsonb numbers beyond 64-bit integers and doubles are answered, not a 500."""
    seed_log_rows(
        router.database_url,
        [("big-1", "s", "solo", "delivered", T0)],
        payload='{"big": 123456789012345678901234567890, "huge": 1e400}',
    )
    status, item = await router.get("/logs/big-1")
    assert status == 200, item
    assert item["payload"] == {"big": 1.2345678901234568e29, "huge": None}
    status, page = await router.get("/logs")
    assert status == 200 and page["items"][0]["payload"] == item["payload"]
