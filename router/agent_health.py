"""What a router process remembers of each agent's health: its replicas' breakers and its
retry budget.

Both live in memory, per process, as Envoy's outlier detection and retry budgets do: N router
processes each open their own breaker after `breaker_failures` failures they saw themselves.
Each replica has a breaker; the agent's breaker is open only while all of its replicas' are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import structlog

log = structlog.get_logger("router.agent_health")

BreakerState = Literal["closed", "open", "half_open"]
# What `Breaker.admit` grants: a normal attempt, the one probe of a half-open breaker, or none.
Admission = Literal["attempt", "probe", "refused"]
# Envoy's min_retry_concurrency: this many retries may always be in flight, whatever the ratio.
MIN_RETRIES_IN_FLIGHT = 3
BUDGET_WINDOW_S = 10
StateChange = Callable[[str, BreakerState], None]
_Changed = Callable[["Breaker"], None]


class Breaker:
    """Closed; open after `failures` failed attempts in a row; half-open after `open_s`, when
    one probe at a time goes through: its success closes the breaker, its failure reopens it."""

    __slots__ = (
        "_clock",
        "_failures",
        "_in_a_row",
        "_on_change",
        "_open_s",
        "_opened_at",
        "_probing",
        "agent",
        "replica",
        "state",
    )

    def __init__(
        self,
        agent: str,
        replica: str,
        *,
        failures: int,
        open_s: float,
        on_change: _Changed,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self.replica = replica
        self.state: BreakerState = "closed"
        self._failures = failures
        self._open_s = open_s
        self._on_change = on_change
        self._clock = clock
        self._in_a_row = 0
        self._opened_at = 0.0
        self._probing = False

    def admit(self) -> Admission:
        """Whether an attempt may go now; a probe must be reported back through `finished`."""
        if self.state == "closed":
            return "attempt"
        if self.state == "open":
            if self._clock() - self._opened_at < self._open_s:
                return "refused"
            self._change("half_open")
        if self._probing:
            return "refused"
        self._probing = True
        return "probe"

    def finished(self, admission: Admission, failed: bool | None) -> None:
        """Count an attempt's end: failed, succeeded, or None when it was cut short."""
        if admission == "probe":
            self._probing = False
        if failed is None:
            return
        if not failed:
            self._in_a_row = 0
            if self.state != "closed":
                self._change("closed")
            return
        self._in_a_row += 1
        if self.state == "half_open" or (
            self.state == "closed" and self._failures and self._in_a_row >= self._failures
        ):
            self._opened_at = self._clock()
            self._change("open")

    def _change(self, state: BreakerState) -> None:
        self.state = state
        self._on_change(self)


class RetryBudget:
    """Retries at most `ratio` of the attempts of the last BUDGET_WINDOW_S seconds; at least
    MIN_RETRIES_IN_FLIGHT retries in flight are always allowed (Envoy's retry budget)."""

    __slots__ = ("_attempts", "_clock", "_ratio", "_retries", "_seconds", "in_flight")

    def __init__(self, ratio: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio = ratio
        self._clock = clock
        # One bucket per second of the window, each stamped with the second it counts.
        self._seconds = [-1] * BUDGET_WINDOW_S
        self._attempts = [0] * BUDGET_WINDOW_S
        self._retries = [0] * BUDGET_WINDOW_S
        self.in_flight = 0

    def attempted(self, *, retry: bool) -> None:
        """Count an attempt that is about to be sent."""
        i = self._bucket()
        self._attempts[i] += 1
        if retry:
            self._retries[i] += 1

    def allows_retry(self) -> bool:
        """Whether one more retry fits the budget."""
        if self.in_flight < MIN_RETRIES_IN_FLIGHT:
            return True
        self._bucket()
        now = int(self._clock())
        live = [i for i, s in enumerate(self._seconds) if now - s < BUDGET_WINDOW_S]
        attempts = sum(self._attempts[i] for i in live)
        retries = sum(self._retries[i] for i in live)
        return retries + 1 <= self._ratio * (attempts + 1)

    def _bucket(self) -> int:
        second = int(self._clock())
        i = second % BUDGET_WINDOW_S
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._attempts[i] = self._retries[i] = 0
        return i


class AgentHealth:
    """Every agent's breakers and retry budget in this process, shared by all its dispatchers."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[str, dict[str, Breaker]] = {}
        self._states: dict[str, BreakerState] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._listeners: list[StateChange] = []

    def subscribe(self, listener: StateChange) -> None:
        """Call `listener(agent, state)` on every change of an agent's (not a replica's) state."""
        self._listeners.append(listener)

    def breaker(self, agent: str, replica: str, *, failures: int, open_s: float) -> Breaker:
        """The breaker of one replica of the agent, made on first use."""
        replicas = self._breakers.setdefault(agent, {})
        breaker = replicas.get(replica)
        if breaker is None:
            breaker = replicas[replica] = Breaker(
                agent,
                replica,
                failures=failures,
                open_s=open_s,
                on_change=self._changed,
                clock=self._clock,
            )
            self._states.setdefault(agent, "closed")
        return breaker

    def budget(self, agent: str, *, ratio: float) -> RetryBudget:
        """The agent's retry budget, made on first use."""
        budget = self._budgets.get(agent)
        if budget is None:
            budget = self._budgets[agent] = RetryBudget(ratio, clock=self._clock)
        return budget

    def open_breakers(self) -> list[str]:
        """Agents whose breaker is not closed (every replica's is open), by name."""
        return sorted(name for name, state in self._states.items() if state != "closed")

    def _changed(self, breaker: Breaker) -> None:
        replicas = self._breakers[breaker.agent]
        if len(replicas) > 1:
            log.info(
                "replica_breaker", agent=breaker.agent, replica=breaker.replica, state=breaker.state
            )
        states = {b.state for b in replicas.values()}
        # Closed while any replica takes traffic; half open while one of the rest probes.
        state: BreakerState = (
            "closed" if "closed" in states else "half_open" if "half_open" in states else "open"
        )
        previous = self._states.get(breaker.agent, "closed")
        if state == previous:
            return
        self._states[breaker.agent] = state
        log.info("agent_breaker", agent=breaker.agent, state=state, previous=previous)
        for listener in self._listeners:
            listener(breaker.agent, state)
