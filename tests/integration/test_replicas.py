"""Agents as replica sets: three real agent processes behind one agent of the routing table."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from router.model import Balance
from tests.support import AgentProcess, RouterServer, start_router

pytestmark = pytest.mark.asyncio

TABLE = """
[defaults]
timeout_ms = 1000
max_attempts = {max_attempts}
backoff_initial_ms = 1
backoff_max_ms = 5
breaker_failures = {failures}
breaker_open_ms = 60000
retry_budget = 1.0

[agents.scoring]
urls = [{urls}]
balance = "{balance}"

[[rules]]
kind = "general"
default = true
agents = ["scoring"]
"""


def table(
    path: Path,
    replicas: list[AgentProcess],
    *,
    balance: Balance = "round_robin",
    max_attempts: int = 1,
    failures: int = 0,
) -> Path:
    urls = ", ".join(f'"{r.url}"' for r in replicas)
    path.write_text(
        TABLE.format(urls=urls, balance=balance, max_attempts=max_attempts, failures=failures)
    )
    return path


def signal(n: int) -> dict[str, Any]:
    return {"sender_id": "s", "payload": {"text": f"hello {n}"}, "log_id": f"r-{n}"}


def replicas(agents: dict[str, AgentProcess]) -> list[AgentProcess]:
    return [agents["alpha"], agents["beta"], agents["gamma"]]


async def send(
    router: RouterServer, count: int, *, at_once: int = 1, start: int = 0
) -> Counter[str]:
    """Route `count` signals, `at_once` at a time; the answers' statuses."""
    statuses: Counter[str] = Counter()
    for first in range(start, start + count, at_once):
        answers = await asyncio.gather(
            *(router.route(signal(n)) for n in range(first, min(first + at_once, start + count)))
        )
        statuses.update(body["status"] for _, body, _ in answers)
    return statuses


async def attempt_counts(router: RouterServer) -> dict[str, int]:
    """agent_attempt_seconds_count by replica label, every outcome summed."""
    _, text = await router.get("/metrics", key=None)
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith('agent_attempt_seconds_count{agent="scoring"'):
            replica = line.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] += int(float(line.rsplit(" ", 1)[1]))
    return dict(counts)


async def test_round_robin_spreads_attempts_and_labels_them_by_replica(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """30 signals over three replicas: ten each, seen by the agents and by the metric."""
    reps = replicas(fresh_agents)
    async with start_router(database_url, table(tmp_path / "r.toml", reps)) as router:
        assert await send(router, 30) == Counter(delivered=30)
        counts = await attempt_counts(router)
    assert [len(r.requests()) for r in reps] == [10, 10, 10]
    assert counts == {f"127.0.0.1:{r.port}": 10 for r in reps}


async def test_a_retry_goes_to_a_replica_it_has_not_tried(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """One replica answers 503: every signal still succeeds, never retried on that replica."""
    reps = replicas(fresh_agents)
    reps[0].behave(status=503)
    routes = table(tmp_path / "r.toml", reps, max_attempts=3)
    async with start_router(database_url, routes) as router:
        assert await send(router, 30, at_once=5) == Counter(delivered=30)
    failing = reps[0].requests()
    assert failing and all(r["attempt"] == 1 for r in failing)
    retried = [r for healthy in reps[1:] for r in healthy.requests() if r["attempt"] == 2]
    assert sorted(r["idempotency_key"] for r in retried) == sorted(
        r["idempotency_key"] for r in failing
    )


async def test_a_failing_replicas_breaker_takes_it_out_and_only_it(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """After two failures in a row its breaker opens: it gets nothing more, the agent stays
    closed (ready lists no open breaker), and every signal is delivered by the others."""
    reps = replicas(fresh_agents)
    reps[0].behave(status=503)
    routes = table(tmp_path / "r.toml", reps, max_attempts=2, failures=2)
    async with start_router(database_url, routes) as router:
        assert await send(router, 60) == Counter(delivered=60)
        _, ready = await router.get("/health/ready", key=None)
    assert len(reps[0].requests()) == 2
    assert ready["open_breakers"] == []
    # The two signals whose attempt failed there were retried, like the rest, on the others.
    assert len(reps[1].requests()) + len(reps[2].requests()) == 60


async def test_every_replica_open_is_the_agents_breaker_open(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """All three failing: once each replica's breaker is open, deliveries are circuit_open."""
    reps = replicas(fresh_agents)
    for r in reps:
        r.behave(status=503)
    routes = table(tmp_path / "r.toml", reps, failures=1)
    async with start_router(database_url, routes) as router:
        assert await send(router, 3) == Counter(dead_lettered=3)
        status, body, _ = await router.route(signal(99))
        _, ready = await router.get("/health/ready", key=None)
    assert status == 202 and body["agents"][0]["error"] == "circuit_open"
    assert body["agents"][0]["attempts"] == 0
    assert ready["open_breakers"] == ["scoring"]
    assert sum(len(r.requests()) for r in reps) == 3


async def test_least_latency_sends_less_to_a_slow_replica(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """One replica 60 ms slower: under least_latency it gets a small share, under round robin
    its third."""
    reps = replicas(fresh_agents)
    shares: dict[str, float] = {}
    balances: tuple[Balance, ...] = ("round_robin", "least_latency")
    for balance in balances:
        for r in reps:
            r.reset()
        reps[0].behave(latency_ms=60)
        routes = table(tmp_path / "r.toml", reps, balance=balance)
        async with start_router(database_url, routes) as router:
            await send(router, 200, at_once=4, start=0 if balance == "round_robin" else 1000)
        counts = [len(r.requests()) for r in reps]
        shares[balance] = counts[0] / sum(counts)
    assert 0.30 <= shares["round_robin"] <= 0.36, shares
    assert shares["least_latency"] < 0.1, shares
