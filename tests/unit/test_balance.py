"""Replica choice: peak-EWMA with two random choices, round robin, retries and breakers."""

from __future__ import annotations

import random
from collections import Counter

from router.agent_health import AgentHealth
from router.balance import DECAY_S, Balancer, Replica, replica_labels
from router.model import Balance


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replicas(n: int, clock: Clock, health: AgentHealth | None = None) -> list[Replica]:
    health = health or AgentHealth(clock=clock)
    return [
        Replica(
            i,
            f"http://r{i}:80/x",
            f"r{i}",
            health.breaker("a", f"r{i}", failures=2, open_s=1.0),
            clock,
        )
        for i in range(n)
    ]


def balancer(reps: list[Replica], balance: Balance, clock: Clock) -> Balancer:
    return Balancer(reps, balance, clock=clock, rng=random.Random(7))


def shares(b: Balancer, n: int = 3000) -> Counter[int]:
    picked: Counter[int] = Counter()
    for _ in range(n):
        choice = b.pick(0)
        assert choice is not None
        picked[choice[0].index] += 1
    return picked


def test_labels_are_host_and_port_numbered_only_when_shared() -> None:
    assert replica_labels(["http://a:1/x", "http://b:2/x"]) == ("a:1", "b:2")
    assert replica_labels(["http://a:1/x", "http://a:1/y", "http://b/z"]) == (
        "a:1#0",
        "a:1#1",
        "b",
    )


def test_a_peak_replaces_the_average_and_a_dip_is_averaged_in() -> None:
    clock = Clock()
    [r] = replicas(1, clock)
    r.observe(0.050)
    assert r.cost(clock.now) == 0.050  # the peak at once
    clock.now += DECAY_S  # one decay later, a fast sample moves it most of the way
    r.observe(0.001)
    assert 0.001 < r.cost(clock.now) < 0.050 * 0.4
    alone = r.cost(clock.now)
    r.in_flight = 2
    assert r.cost(clock.now) == 3 * alone  # weighted by in flight + 1


def simulate(b: Balancer, latency: list[float], clock: Clock, seconds: float) -> Counter[int]:
    """1,000 attempts a second, each taking its replica's latency ±30 %: who got how many."""
    jitter = random.Random(1)
    picked: Counter[int] = Counter()
    for _ in range(int(seconds * 1000)):
        choice = b.pick(0)
        assert choice is not None
        replica = choice[0]
        replica.observe(latency[replica.index] * jitter.uniform(0.7, 1.3))
        picked[replica.index] += 1
        clock.now += 0.001
    return picked


def test_least_latency_sends_little_to_a_slow_replica_and_wins_it_back() -> None:
    clock = Clock()
    b = balancer(replicas(3, clock), "least_latency", clock)
    healthy = simulate(b, [0.002, 0.002, 0.002], clock, 3)
    assert min(healthy.values()) > 600, healthy  # about a third each
    slow = [0.002, 0.002, 0.052]
    simulate(b, slow, clock, 1)
    # After a second it gets next to nothing: a probe every few decay times.
    assert simulate(b, slow, clock, 10)[2] < 20
    simulate(b, [0.002, 0.002, 0.002], clock, 4)  # recovered: within seconds ...
    assert simulate(b, [0.002, 0.002, 0.002], clock, 3)[2] > 600  # ... its third again


def test_in_flight_requests_count_against_a_replica() -> None:
    clock = Clock()
    reps = replicas(2, clock)
    b = balancer(reps, "least_latency", clock)
    for r in reps:
        r.observe(0.002)
    reps[0].in_flight = 10
    assert shares(b, 100)[1] == 100


def test_round_robin_takes_turns_whatever_the_latency() -> None:
    clock = Clock()
    reps = replicas(3, clock)
    reps[2].observe(0.050)
    b = balancer(reps, "round_robin", clock)
    assert shares(b, 300) == Counter({0: 100, 1: 100, 2: 100})


def test_a_retry_prefers_replicas_it_has_not_tried() -> None:
    clock = Clock()
    reps = replicas(3, clock)
    for balance in ("least_latency", "round_robin"):
        b = balancer(reps, balance, clock)
        for _ in range(50):
            choice = b.pick(0b011)
            assert choice is not None and choice[0].index == 2
        choice = b.pick(0b111)  # all tried: any of them again
        assert choice is not None


def test_a_replica_whose_breaker_is_open_is_passed_over() -> None:
    clock = Clock()
    health = AgentHealth(clock=clock)
    changes: list[str] = []
    health.subscribe(lambda agent, state: changes.append(state))
    reps = replicas(2, clock, health)
    b = balancer(reps, "least_latency", clock)
    for _ in range(2):
        reps[0].breaker.finished("attempt", True)
    assert reps[0].breaker.state == "open"
    assert health.open_breakers() == [] and changes == []  # the agent still has a replica
    assert shares(b, 100)[1] == 100
    for _ in range(2):
        reps[1].breaker.finished("attempt", True)
    assert b.pick(0) is None  # every replica refuses: circuit_open
    assert health.open_breakers() == ["a"] and changes == ["open"]
    clock.now += 1.0
    choice = b.pick(0)
    assert choice is not None and choice[1] == "probe"
    reps[choice[0].index].breaker.finished("probe", False)
    assert health.open_breakers() == [] and changes == ["open", "half_open", "closed"]
