"""loadtest.capacity's search: what capacity it reports for a given series of run verdicts."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from loadtest.capacity import find_capacity


def _runs(limit: float, hiccups: Iterable[float] = ()) -> tuple[Callable[[float], bool], list[int]]:
    """A target that holds every rate up to `limit`, except one miss at each rate in
    `hiccups`; and the list of rates it was run at."""
    pending = [round(r) for r in hiccups]
    ran: list[int] = []

    def holds(rate: float) -> bool:
        ran.append(round(rate))
        if round(rate) in pending:
            pending.remove(round(rate))
            return False
        return rate <= limit

    return holds, ran


def test_the_last_rate_that_held_is_the_capacity() -> None:
    holds, ran = _runs(limit=450)
    assert find_capacity(holds, start=200, step=1.25, max_rate=20_000) == 390.625
    # The miss at 488 was run twice before it counted.
    assert ran == [200, 250, 312, 391, 488, 488]


def test_one_hiccup_does_not_end_the_search() -> None:
    holds, ran = _runs(limit=450, hiccups=[250])
    assert find_capacity(holds, start=200, step=1.25, max_rate=20_000) == 390.625
    assert ran == [200, 250, 250, 312, 391, 488, 488]


def test_a_first_rate_that_misses_halves_until_one_holds() -> None:
    holds, ran = _runs(limit=120)
    assert find_capacity(holds, start=200, step=1.25, max_rate=20_000) == 100
    assert ran == [200, 200, 100, 125, 125]


def test_nothing_holds() -> None:
    holds, _ = _runs(limit=0)
    assert find_capacity(holds, start=200, step=1.25, max_rate=20_000, min_rate=10) == 0.0


def test_max_rate_caps_the_search() -> None:
    holds, _ = _runs(limit=1e9)
    assert find_capacity(holds, start=200, step=2, max_rate=1_000) == 800
