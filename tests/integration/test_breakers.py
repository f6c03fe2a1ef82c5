"""Breakers, retry budgets, auto-replay and sender limits, against real agents and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from router.agent_health import MIN_RETRIES_IN_FLIGHT
from router.rate_limit import RateLimit
from tests.support import AgentProcess, RouterServer, start_router

pytestmark = pytest.mark.asyncio

TABLE = """
[defaults]
timeout_ms = 300
deadline_ms = 3000
max_attempts = {max_attempts}
backoff_initial_ms = 1
backoff_max_ms = 5
breaker_failures = {failures}
breaker_open_ms = 600
retry_budget = {budget}

[agents.alpha]
url = "{alpha}"

[agents.beta]
url = "{beta}"
auto_replay = {beta_auto_replay}

[[rules]]
kind = "solo"
keywords = ["solo"]
agents = ["alpha"]

[[rules]]
kind = "other"
keywords = ["other"]
agents = ["beta"]

[[rules]]
kind = "general"
default = true
agents = ["beta"]
"""


def table(
    path: Path,
    agents: dict[str, AgentProcess],
    *,
    failures: int = 2,
    max_attempts: int = 1,
    budget: float = 0.2,
    beta_auto_replay: bool = True,
) -> Path:
    path.write_text(
        TABLE.format(
            alpha=agents["alpha"].url,
            beta=agents["beta"].url,
            failures=failures,
            max_attempts=max_attempts,
            budget=budget,
            beta_auto_replay=str(beta_auto_replay).lower(),
        )
    )
    return path


def signal(word: str, n: int) -> dict[str, Any]:
    return {"sender_id": "s", "payload": {"text": f"{word} {n}"}, "log_id": f"{word}-{n}"}


async def metric(router: RouterServer, name: str) -> float:
    _, text = await router.get("/metrics", key=None)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_an_open_breaker_fails_fast_then_recovery_replays_the_backlog_once(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A hung agent: two timeouts open its breaker; then answers in ms with circuit_open, the
    other agent unaffected; once it is back, its probe closes the breaker and every entry is
    replayed exactly once, with no operator."""
    alpha = fresh_agents["alpha"]
    routes = table(tmp_path / "routes.toml", fresh_agents)
    alpha.behave(hang=True)
    with structlog.testing.capture_logs() as logs:
        await _hang_then_recover(database_url, routes, alpha)
    # One log line per state change, from closed through the failed probes back to closed.
    changes = [
        (e["agent"], e["previous"], e["state"]) for e in logs if e["event"] == "agent_breaker"
    ]
    assert changes[0] == ("alpha", "closed", "open") and changes[-1][2] == "closed", changes
    assert all(previous != state for _, previous, state in changes), changes


async def _hang_then_recover(database_url: str, routes: Path, alpha: AgentProcess) -> None:
    async with start_router(database_url, routes) as router:
        for n in range(2):
            status, body, _ = await router.route(signal("solo", n))
            assert status == 202 and body["agents"][0]["error"].startswith("timeout")
        fast = []
        for n in range(2, 12):
            started = time.monotonic()
            status, body, _ = await router.route(signal("solo", n))
            fast.append(time.monotonic() - started)
            [outcome] = body["agents"]
            assert status == 202 and body["status"] == "dead_lettered"
            assert (outcome["ok"], outcome["attempts"], outcome["error"]) == (
                False,
                0,
                "circuit_open",
            )
        assert max(fast) < 0.25, fast  # no timeout was spent
        assert (await router.route(signal("other", 0)))[0] == 200  # beta is not slowed
        status, ready = await router.get("/health/ready", key=None)
        assert status == 200 and ready["open_breakers"] == ["alpha"]
        assert await metric(router, 'agent_breaker_open{agent="alpha"}') == 1
        rows = router.query("SELECT count(*) FROM dlq WHERE status = 'pending'")
        assert rows == [(12,)]
        # The route path sent only the two attempts that timed out (probes are replays).
        assert len([r for r in alpha.requests() if not r["replay"]]) == 2

        alpha.behave(hang=False)

        async def drained() -> bool:
            return router.query("SELECT count(*) FROM dlq WHERE status = 'pending'") == [(0,)]

        await wait_for(drained)
        assert router.query("SELECT count(*) FROM dlq WHERE status = 'resolved'") == [(12,)]
        statuses = router.query("SELECT DISTINCT status FROM signal_log WHERE kind = 'solo'")
        assert statuses == [("delivered",)]
        # Failed probes were sent too; each entry was delivered by exactly one replay.
        delivered = [r for r in alpha.requests() if r["replay"] and r["status"] == 200]
        assert sorted(r["idempotency_key"] for r in delivered) == sorted(
            f"solo-{n}" for n in range(12)
        )
        assert await metric(router, 'auto_replayed_total{agent="alpha"}') >= 12
        assert await metric(router, 'agent_breaker_open{agent="alpha"}') == 0
        assert (await router.get("/health/ready", key=None))[1]["open_breakers"] == []


async def test_probes_repeat_until_the_agent_is_back(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """An agent down through several probe rounds: each failed probe schedules the next, so
    the backlog drains once it is back though no new signal ever arrives for it."""
    alpha = fresh_agents["alpha"]
    routes = table(tmp_path / "routes.toml", fresh_agents, failures=1)
    alpha.behave(status=503)
    async with start_router(database_url, routes) as router:
        for n in range(5):
            assert (await router.route(signal("solo", n)))[0] == 202

        async def probes() -> int:
            return len([r for r in alpha.requests() if r["replay"]])

        async def three_failed_probes() -> bool:
            return await probes() >= 3

        await wait_for(three_failed_probes)  # open_ms is 600 ms: about 2 s
        assert router.query("SELECT count(*) FROM dlq WHERE status = 'pending'") == [(5,)]
        alpha.behave(status=None)

        async def drained() -> bool:
            return router.query("SELECT count(*) FROM dlq WHERE status = 'pending'") == [(0,)]

        await wait_for(drained)
        delivered = [r for r in alpha.requests() if r["replay"] and r["status"] == 200]
        assert sorted(r["idempotency_key"] for r in delivered) == [f"solo-{n}" for n in range(5)]


async def test_two_routers_auto_replay_each_entry_once(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Each process has its own breaker; both drain a 1,000-entry backlog through SKIP LOCKED,
    every entry delivered once, with no command run."""
    alpha = fresh_agents["alpha"]
    routes = table(tmp_path / "routes.toml", fresh_agents, failures=1)
    alpha.behave(status=503)
    backlog = 1000
    async with (
        start_router(database_url, routes) as one,
        start_router(database_url, routes) as two,
    ):
        for start in range(0, backlog, 50):
            answers = await asyncio.gather(
                *(
                    (one if n % 2 else two).route(signal("solo", n))
                    for n in range(start, start + 50)
                )
            )
            assert {status for status, _, _ in answers} == {202}
        assert one.query("SELECT count(*) FROM dlq WHERE status = 'pending'") == [(backlog,)]
        alpha.behave(status=None)
        recovered = time.monotonic()

        async def drained() -> bool:
            return one.query("SELECT count(*) FROM dlq WHERE status <> 'resolved'") == [(0,)]

        await wait_for(drained, timeout=60)
        print(f"{backlog} entries drained {time.monotonic() - recovered:.1f} s after recovery")
        delivered = [r for r in alpha.requests() if r["replay"] and r["status"] == 200]
        keys = sorted(r["idempotency_key"] for r in delivered)
        assert keys == sorted(f"solo-{n}" for n in range(backlog))  # once each, across both
        counts = [await metric(router, "auto_replayed_total") for router in (one, two)]
        # Which process replays an entry is a race (both usually take about half); that each
        # is delivered once whoever took it is the guarantee.
        assert sum(counts) >= backlog, counts


async def test_auto_replay_stays_within_the_agents_concurrency(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A backlog of 30 slow entries drains with never more than `concurrency` at once."""
    alpha = fresh_agents["alpha"]
    routes = table(tmp_path / "routes.toml", fresh_agents, failures=1)
    text = routes.read_text().replace("[agents.alpha]\n", "[agents.alpha]\nconcurrency = 3\n")
    routes.write_text(text)
    alpha.behave(status=503)
    async with start_router(database_url, routes) as router:
        for n in range(30):
            assert (await router.route(signal("solo", n)))[0] == 202
        alpha.reset()  # also restores the healthy behaviour
        alpha.behave(latency_ms=50)

        async def drained() -> bool:
            return router.query("SELECT count(*) FROM dlq WHERE status <> 'resolved'") == [(0,)]

        await wait_for(drained, timeout=20)
    stats = alpha.stats()
    assert stats["succeeded"] >= 30 and stats["max_in_flight"] == 3, stats


async def test_auto_replay_false_leaves_the_backlog_to_an_operator(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """With auto_replay = false the breaker still opens and closes, but nothing is replayed."""
    beta = fresh_agents["beta"]
    routes = table(tmp_path / "routes.toml", fresh_agents, failures=1, beta_auto_replay=False)
    beta.behave(status=503)
    async with start_router(database_url, routes) as router:
        for n in range(3):
            assert (await router.route(signal("other", n)))[0] == 202
        beta.behave(status=None)
        await asyncio.sleep(0.8)  # past breaker_open_ms: a new signal is the probe
        assert (await router.route(signal("other", 9)))[0] == 200
        await asyncio.sleep(1.0)
        assert router.query("SELECT count(*) FROM dlq WHERE status = 'pending'") == [(3,)]
        assert not [r for r in beta.requests() if r["replay"]]


async def test_the_retry_budget_caps_retries_to_a_failing_agent(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Every attempt fails slowly: with a budget of 0.2 the retries are a fraction of what a
    budget of 1 (none) sends, and the refused ones say why."""
    alpha = fresh_agents["alpha"]
    retries: dict[float, int] = {}
    elapsed: dict[float, float] = {}
    for budget in (1.0, 0.2):
        alpha.reset()
        alpha.behave(status=503, latency_ms=100)
        routes = table(tmp_path / "routes.toml", fresh_agents, failures=0, max_attempts=5)
        routes.write_text(
            routes.read_text().replace("retry_budget = 0.2", f"retry_budget = {budget}")
        )
        async with start_router(database_url, routes) as router:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    router.route({**signal("solo", n), "log_id": f"b{budget}-{n}"})
                    for n in range(100)
                )
            )
            elapsed[budget] = time.monotonic() - started
        requests = alpha.requests()
        assert len([r for r in requests if r["attempt"] == 1]) == 100
        retries[budget] = len(requests) - 100
        errors = [body["agents"][0]["error"] for _, body, _ in answers]
        exhausted = [e for e in errors if e.startswith("retry budget exhausted after HTTP 503")]
        assert bool(exhausted) == (budget < 1)
    assert retries[1.0] == 400  # every signal used its 5 attempts
    # The budget's bound: retries <= 0.2 of all attempts, plus what the floor of 3 retries in
    # flight can send regardless: 3 per 100 ms attempt for as long as the storm lasted.
    floor = MIN_RETRIES_IN_FLIGHT * (elapsed[0.2] / 0.1 + 1)
    assert retries[0.2] <= 0.2 * (100 + retries[0.2]) + floor, (retries, elapsed)
    assert retries[0.2] < 0.25 * retries[1.0], retries


async def test_a_sender_over_its_rate_gets_429_and_nothing_is_recorded(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """SENDER_RATE_LIMIT: the burst passes, the next is 429 with Retry-After; others unaffected."""
    routes = table(tmp_path / "routes.toml", fresh_agents)
    limit = RateLimit.parse("1/min", "3")
    async with start_router(database_url, routes, sender_rate_limit=limit) as router:
        for n in range(3):
            assert (await router.route(signal("other", n)))[0] == 200
        status, body, headers = await router.route(signal("other", 3))
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert int(headers["Retry-After"]) >= 1
        other = {"sender_id": "t", "payload": {"text": "other"}}
        assert (await router.route(other))[0] == 200
        assert router.query("SELECT count(*) FROM signal_log WHERE log_id = 'other-3'") == [(0,)]
        assert await metric(router, "rate_limited_total") == 1
        assert await metric(router, 'route_responses_total{code="429"}') == 1
