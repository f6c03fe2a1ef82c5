"""Per-sender token buckets: admission, refill, Retry-After and bounded memory."""

from __future__ import annotations

import pytest

from router.rate_limit import RateLimit, SenderLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [
        ("200/s", None, RateLimit(200.0, 200)),
        ("6000/min", None, RateLimit(100.0, 100)),
        ("1/h", None, RateLimit(1 / 3600, 1)),
        (" 2.5 / s ", "10", RateLimit(2.5, 10)),
    ],
)
def test_rates_parse(rate: str, burst: str | None, expected: RateLimit) -> None:
    assert RateLimit.parse(rate, burst) == expected


@pytest.mark.parametrize(
    ("rate", "burst"), [("200", None), ("0/s", None), ("-1/s", None), ("5/day", None), ("5/s", "0")]
)
def test_bad_rates_are_refused_with_the_value(rate: str, burst: str | None) -> None:
    with pytest.raises(ValueError, match="is not"):
        RateLimit.parse(rate, burst)


def test_a_burst_then_one_per_interval_and_the_wait_until_the_next_token() -> None:
    clock = Clock()
    limiter = SenderLimiter(RateLimit(2.0, 3), clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") is None  # senders do not share a bucket
    clock.now += 0.25
    assert limiter.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(0.5)


def test_refused_signals_do_not_drain_the_bucket_further() -> None:
    clock = Clock()
    limiter = SenderLimiter(RateLimit(1.0, 1), clock=clock)
    assert limiter.take("a") is None
    for _ in range(100):
        assert limiter.take("a") is not None
    clock.now += 1.0
    assert limiter.take("a") is None


def test_memory_is_bounded_and_refilled_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = SenderLimiter(RateLimit(10.0, 5), max_senders=100, clock=clock)
    for i in range(1000):
        limiter.take(f"s{i}")
    assert len(limiter) == 100
    clock.now += 1.0  # every bucket is full again
    limiter.take("late")
    assert len(limiter) == 1
