"""Breakers and retry budgets, on a clock the test moves."""

from __future__ import annotations

from router.agent_health import MIN_RETRIES_IN_FLIGHT, AgentHealth, BreakerState, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, open_s: float = 1.0) -> tuple[AgentHealth, Clock, list[BreakerState]]:
    clock = Clock()
    health = AgentHealth(clock=clock)
    changes: list[BreakerState] = []
    health.subscribe(lambda agent, state: changes.append(state))
    health.breaker("a", "r", failures=failures, open_s=open_s)
    return health, clock, changes


def test_opens_after_failures_in_a_row_and_refuses_until_open_s() -> None:
    health, clock, changes = make()
    breaker = health.breaker("a", "r", failures=3, open_s=1.0)
    for failed in (True, True, False, True, True):  # a success resets the run
        assert breaker.admit() == "attempt"
        breaker.finished("attempt", failed)
    assert breaker.state == "closed"
    breaker.finished(breaker.admit(), True)
    assert (breaker.state, changes) == ("open", ["open"])
    assert health.open_breakers() == ["a"]
    clock.now += 0.99
    assert breaker.admit() == "refused"


def test_one_probe_at_a_time_its_success_closes_its_failure_reopens() -> None:
    health, clock, changes = make(failures=1)
    breaker = health.breaker("a", "r", failures=1, open_s=1.0)
    breaker.finished(breaker.admit(), True)
    clock.now += 1.0
    assert breaker.admit() == "probe"
    assert breaker.admit() == "refused"  # the probe is still out
    breaker.finished("probe", True)
    assert breaker.state == "open"
    assert breaker.admit() == "refused"  # a new open period began with the failed probe
    clock.now += 1.0
    probe = breaker.admit()
    breaker.finished(probe, None)  # cut short: neither verdict, the probe slot is free again
    assert breaker.admit() == "probe"
    breaker.finished("probe", False)
    assert (breaker.state, health.open_breakers()) == ("closed", [])
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_zero_failures_means_never_open() -> None:
    health, _, changes = make(failures=0)
    breaker = health.breaker("a", "r", failures=0, open_s=1.0)
    for _ in range(100):
        breaker.finished(breaker.admit(), True)
    assert breaker.state == "closed" and changes == []


def test_the_budget_caps_retries_at_its_share_of_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, clock=clock)
    budget.in_flight = MIN_RETRIES_IN_FLIGHT  # past the floor: only the ratio decides
    for _ in range(10):
        budget.attempted(retry=False)
    assert budget.allows_retry()  # 1 of 11
    budget.attempted(retry=True)
    assert budget.allows_retry()  # 2 of 12
    budget.attempted(retry=True)
    assert not budget.allows_retry()  # 3 of 13 is over 20 %
    clock.now += 10  # the window forgets the old retries
    for _ in range(5):
        budget.attempted(retry=False)
    assert budget.allows_retry()  # 1 of 6


def test_a_few_retries_in_flight_are_always_allowed() -> None:
    budget = RetryBudget(0.0, clock=Clock())
    assert budget.allows_retry()
    budget.in_flight = MIN_RETRIES_IN_FLIGHT
    assert not budget.allows_retry()
