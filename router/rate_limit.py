"""Per-sender token buckets (SENDER_RATE_LIMIT / SENDER_RATE_BURST), in memory, per process."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
# Senders remembered at most; past it the longest idle is forgotten (it gets a fresh burst).
MAX_SENDERS = 100_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`per_second` tokens flow into a bucket of `burst`; a signal takes one."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, rate: str, burst: str | None) -> RateLimit:
        """From "200/s" or "6000/min" and an optional burst (default: one second's worth)."""
        match = _RATE.fullmatch(rate)
        if match is None or float(match[1]) <= 0:
            raise ValueError(f"{rate!r} is not a rate such as 200/s or 6000/min")
        per_second = float(match[1]) / _PER[match[2]]
        if burst is None or not burst.strip():
            return cls(per_second, max(1, round(per_second)))
        if not burst.strip().isdigit() or int(burst) < 1:
            raise ValueError(f"{burst!r} is not a whole number of signals >= 1")
        return cls(per_second, int(burst))


class SenderLimiter:
    """Admits a sender's signal while its bucket holds a token; memory stays bounded."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_senders: int = MAX_SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = limit.per_second
        self._burst = float(limit.burst)
        self._max = max_senders
        self._clock = clock
        # sender -> (tokens, when they were counted), least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, sender: str) -> float | None:
        """None when admitted; else the seconds until the sender's next token."""
        now = self._clock()
        bucket = self._buckets.pop(sender, None)
        tokens = self._burst
        if bucket is not None:
            tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        admitted = tokens >= 1
        self._buckets[sender] = (tokens - 1 if admitted else tokens, now)
        self._evict(now)
        return None if admitted else (1 - tokens) / self._rate

    def _evict(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: the idle ones go first.
        buckets = self._buckets
        while buckets:
            tokens, at = next(iter(buckets.values()))
            if len(buckets) <= self._max and tokens + (now - at) * self._rate < self._burst:
                return
            buckets.popitem(last=False)
