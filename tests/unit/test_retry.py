"""The pure retry policy: backoff bounds, Retry-After, retryable statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from router.retry import RetryPolicy, is_retryable_status, parse_retry_after
from router.routing import AgentConfig

POLICY = RetryPolicy(max_attempts=5, backoff_initial_ms=100, backoff_max_ms=1000)
NOW = 1_700_000_000.0


def test_for_agent_copies_the_agent_settings() -> None:
    """The policy takes max attempts and backoff bounds from the agent's configuration."""
    agent = AgentConfig("a", ("http://127.0.0.1:1/",), 500, 4, 25, 800, 8)
    assert RetryPolicy.for_agent(agent) == RetryPolicy(4, 25, 800)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)])
def test_delay_upper_bound_doubles_per_attempt(attempt: int, ceiling: float) -> None:
    """With rng at its maximum the delay is the exponential ceiling initial * 2**(attempt-1)."""
    assert POLICY.delay_s(attempt, None, lambda: 1.0) == pytest.approx(ceiling)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 10])
def test_delay_lower_bound_is_zero(attempt: int) -> None:
    """Full jitter: with rng at zero the delay is zero whatever the attempt."""
    assert POLICY.delay_s(attempt, None, lambda: 0.0) == 0.0


def test_delay_is_uniform_within_the_ceiling() -> None:
    """The delay scales the ceiling by the rng draw."""
    assert POLICY.delay_s(3, None, lambda: 0.5) == pytest.approx(0.2)


@pytest.mark.parametrize("attempt", [5, 6, 30, 1000, 10**6])
def test_delay_is_capped_at_backoff_max(attempt: int) -> None:
    """Past the cap the ceiling stays at backoff_max, even for absurd attempt numbers."""
    assert POLICY.delay_s(attempt, None, lambda: 1.0) == pytest.approx(1.0)
    assert POLICY.delay_s(attempt, None, lambda: 0.5) == pytest.approx(0.5)


def test_zero_backoff_never_waits() -> None:
    """A policy with zero backoff retries at once."""
    assert RetryPolicy(3, 0, 0).delay_s(2, None, lambda: 1.0) == 0.0


def test_retry_after_replaces_the_jittered_delay() -> None:
    """A Retry-After hint within the cap is used as is, ignoring rng."""
    assert POLICY.delay_s(1, 0.75, lambda: 0.0) == pytest.approx(0.75)


def test_retry_after_is_capped_at_backoff_max() -> None:
    """A Retry-After hint longer than backoff_max waits only backoff_max."""
    assert POLICY.delay_s(1, 120.0, lambda: 0.0) == pytest.approx(1.0)


def test_retry_after_zero_retries_at_once() -> None:
    """Retry-After: 0 means no wait."""
    assert POLICY.delay_s(2, 0.0, lambda: 1.0) == 0.0


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("3", 3.0), (" 120 ", 120.0)])
def test_parse_retry_after_delta_seconds(value: str, expected: float) -> None:
    """Delta-seconds parse to that many seconds."""
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_http_date() -> None:
    """An IMF-fixdate in the future gives the seconds until then."""
    when = datetime.fromtimestamp(NOW + 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == pytest.approx(30.0)


def test_parse_retry_after_obsolete_date_formats() -> None:
    """RFC 850 and asctime dates, which HTTP recipients must accept, parse too."""
    now = datetime(1994, 11, 6, 8, 49, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now) == pytest.approx(37.0)
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now) == pytest.approx(37.0)


def test_parse_retry_after_past_date_is_none() -> None:
    """A date already past (clock skew) yields None so the caller falls back to backoff."""
    when = datetime.fromtimestamp(NOW - 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) is None


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-1", "-0.5", "+5", "soon", "1e3", "12abc", "nan", "inf", "Mon, 99 Foo"],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    """Absent, negative or unparseable values yield None."""
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    """5xx and 429 are worth another attempt."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 204, 301, 400, 401, 404, 409, 413, 422, 428, 600])
def test_non_retryable_statuses(status: int) -> None:
    """Other statuses, 4xx in particular, are not retried."""
    assert not is_retryable_status(status)
