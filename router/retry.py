"""The retry policy: which outcomes are retried and how long to wait before the next attempt."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.routing import AgentConfig

__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after"]

# RFC 9110 delta-seconds is 1*DIGIT; a fraction is tolerated because some servers send one.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Past 2**62 the backoff ceiling is far beyond any cap; stopping there keeps the float finite.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, deferring to the agent's Retry-After."""

    max_attempts: int
    backoff_initial_ms: int
    backoff_max_ms: int

    @classmethod
    def for_agent(cls, agent: AgentConfig) -> RetryPolicy:
        """The policy configured for one agent."""
        return cls(agent.max_attempts, agent.backoff_initial_ms, agent.backoff_max_ms)

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next one.

        `rng` returns a float in [0, 1]; a Retry-After hint replaces the jittered backoff.
        """
        cap_s = self.backoff_max_ms / 1000
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), cap_s)
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling_s = min(cap_s, self.backoff_initial_ms * (1 << exponent) / 1000)
        return rng() * ceiling_s


def is_retryable_status(status: int) -> bool:
    """True for statuses worth another attempt: 5xx and 429."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); `now` is epoch time.

    None when absent, unparseable, negative or a date already past.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    if value[0] in "+-" or value[0].isdigit():
        # A signed or malformed number, never a date (HTTP-dates start with a day name).
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; "-0000" makes the parser return a naive datetime.
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - now
    # A date in the past usually means clock skew, not "retry now": the caller's own
    # jittered backoff is the safer choice then.
    return delay if delay >= 0 else None
