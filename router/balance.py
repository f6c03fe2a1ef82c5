"""Choosing an agent's replica for one attempt: power of two choices over peak-EWMA, or round robin.

least_latency is Finagle's and Linkerd's balancer: each replica keeps a peak-sensitive moving
average of its latency (a slower sample replaces it at once, faster ones pull it down
gradually), its cost is that average times (requests in flight + 1), and each pick compares
two replicas drawn at random. The average decays towards zero while a replica is not used, so
one that turned slow is tried again after a few seconds and wins its traffic back when it has
recovered. Each replica has its own breaker; one whose breaker refuses is passed over.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from router.agent_health import Admission, Breaker
from router.model import Balance

__all__ = ["Balancer", "Replica", "replica_labels"]

# How fast the average forgets: a replica 25x slower than the rest is tried again after about
# 3 decays (ln 25), ~3 s, and one that recovered has its share back ~3 s later (simulated in
# tests/unit/test_balance.py; Linkerd's 10 s would take half a minute, too slow here).
DECAY_S = 1.0
# A replica nobody has measured yet costs this much, as in Linkerd (its default RTT).
INITIAL_COST_S = 0.03


def replica_labels(urls: Sequence[str]) -> tuple[str, ...]:
    """The `replica` label of each URL: its host:port, numbered only where two share it."""
    hosts = [urlsplit(url).netloc for url in urls]
    return tuple(host if hosts.count(host) == 1 else f"{host}#{i}" for i, host in enumerate(hosts))


class Replica:
    """One URL of an agent: its breaker, the requests it has in flight and its latency average."""

    __slots__ = ("_clock", "_cost", "_stamp", "breaker", "in_flight", "index", "label", "url")

    def __init__(
        self, index: int, url: str, label: str, breaker: Breaker, clock: Callable[[], float]
    ) -> None:
        self.index = index
        self.url = url
        self.label = label
        self.breaker = breaker
        self.in_flight = 0
        self._clock = clock
        self._cost = INITIAL_COST_S
        self._stamp = clock()

    def cost(self, now: float) -> float:
        """The decayed latency average, weighted by the requests already waiting on it."""
        decayed = self._cost * math.exp(-max(0.0, now - self._stamp) / DECAY_S)
        return decayed * (self.in_flight + 1)

    def observe(self, seconds: float) -> None:
        """Fold one attempt's duration in: a peak replaces the average, a dip is averaged in."""
        now = self._clock()
        if seconds > self._cost:
            self._cost = seconds
        else:
            weight = math.exp(-max(0.0, now - self._stamp) / DECAY_S)
            self._cost = self._cost * weight + seconds * (1.0 - weight)
        self._stamp = now


class Balancer:
    """Picks the replica for each attempt; a retry prefers the replicas it has not tried."""

    __slots__ = ("_balance", "_clock", "_next", "_rng", "replicas")

    def __init__(
        self,
        replicas: Sequence[Replica],
        balance: Balance,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.replicas = tuple(replicas)
        self._balance = balance
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._next = 0

    def pick(self, tried: int) -> tuple[Replica, Admission] | None:
        """A replica whose breaker admits an attempt, with that admission; None when all refuse.

        `tried` is a bit mask of replica indices this delivery has already used.
        """
        replicas = self.replicas
        if len(replicas) == 1:
            only = replicas[0]
            admission = only.breaker.admit()
            return None if admission == "refused" else (only, admission)
        fresh = [r for r in replicas if not tried >> r.index & 1]
        for group in (fresh, [r for r in replicas if tried >> r.index & 1]):
            for replica in self._order(group):
                admission = replica.breaker.admit()
                if admission != "refused":
                    return replica, admission
        return None

    def _order(self, group: list[Replica]) -> list[Replica]:
        """The order to try `group` in: the better of two random choices first."""
        if len(group) <= 1:
            return group
        if self._balance == "round_robin":
            start = self._next % len(group)
            self._next += 1
            return group[start:] + group[:start]
        a, b = self._rng.sample(group, 2)
        now = self._clock()
        first, second = (a, b) if a.cost(now) <= b.cost(now) else (b, a)
        # The rest only matter when both choices' breakers refuse.
        return [first, second, *(r for r in group if r is not a and r is not b)]
