"""Capacity at SLO: the highest constant arrival rate at which p50 <= 5 ms, p99 <= 25 ms and no
errors hold, for the agent called directly, the contract floor, and the router with one worker
and with two.

#     python -m loadtest.capacity [--seconds 10] [--start 200] [--step 1.25]

Each target gets its own stack (benches.stack: a migrated database, the demo agent, the router
process) and a series of open-loop runs (loadtest.open_loop), each rate `step` times the last,
until one misses; the last that held is its capacity. A rate misses only when a second run at
it misses too: one hiccup of a shared machine (a p99 is the 20th-worst of 2,000 answers at
200/s) must not end the search. When the first rate misses, the rate halves until one holds.
The router runs with the benches' one-agent table and the documented signal mix; the direct
runs send the agent what the router forwards. The contract floor (benches/contract_floor_app.py:
the claim, the agent, the durable outcome and nothing else) gets the same mix: what the
contract's four waits allow on this machine. One line per run, then the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from benches.stack import AGENT_BODY, API_KEY, e2e_stack, start_app
from loadtest.mix import Mix
from loadtest.open_loop import drive
from loadtest.summary import Slo, Summary, summarize

SLO = Slo(p50_ms=5.0, p99_ms=25.0, max_error_rate=1e-9)
# Below this a target has no capacity worth reporting (and the halving stops).
MIN_RATE = 10.0


def _measure(url: str, body: Callable[[], bytes], rate: float, seconds: float) -> Summary:
    headers = [f"X-API-Key: {API_KEY}"]
    recorder = drive(url, body, headers, rate=rate, duration_s=seconds, max_connections=512)
    return summarize(recorder, SLO)


def find_capacity(
    holds: Callable[[float], bool],
    *,
    start: float,
    step: float,
    max_rate: float,
    min_rate: float = MIN_RATE,
) -> float:
    """The highest rate of the series that held (0.0: none down to `min_rate`); `holds` runs
    one rate once. A miss is run again before it counts."""

    def confirmed(rate: float) -> bool:
        return holds(rate) or holds(rate)

    rate = start
    while not confirmed(rate):
        rate /= 2
        if rate < min_rate:
            return 0.0
    held, rate = rate, rate * step
    while rate <= max_rate and confirmed(rate):
        held, rate = rate, rate * step
    return held


def _capacity(name: str, url: str, body: Callable[[], bytes], args: argparse.Namespace) -> float:
    def holds(rate: float) -> bool:
        s = _measure(url, body, rate, args.seconds)
        print(
            f"{name:18} {rate:>7,.0f}/s  p50 {s.p50_ms:6.2f}  p99 {s.p99_ms:7.2f} ms"
            f"  errors {s.errors:>4}  {'holds' if s.passed else 'misses'}"
            f"  (sent p99 {s.late_p99_ms:.2f} ms late)",
            flush=True,
        )
        return s.passed

    return find_capacity(holds, start=args.start, step=args.step, max_rate=args.max_rate)


def main(argv: Sequence[str] | None = None) -> int:
    """Find each target's capacity on one machine, in one sitting; print the table."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="each run's length")
    parser.add_argument("--start", type=float, default=200.0, help="first rate, signals/s")
    parser.add_argument("--step", type=float, default=1.25, help="each rate over the last")
    parser.add_argument("--max-rate", type=float, default=20_000.0)
    args = parser.parse_args(argv)
    mix = Mix()
    found: dict[str, float] = {}
    with e2e_stack() as stack:
        found["agent direct"] = _capacity("agent direct", stack.agent_url, lambda: AGENT_BODY, args)
        floor = start_app("benches.contract_floor_app", stack.database_url, stack.agent_url)
        try:
            found["contract floor"] = _capacity(
                "contract floor", floor.url, lambda: mix.next()[1], args
            )
        finally:
            floor.stop()
        for workers in (1, 2):
            router = stack.router(workers=workers)
            try:
                name = f"router, {workers} worker{'s' if workers > 1 else ''}"
                found[name] = _capacity(name, router.url, lambda: mix.next()[1], args)
            finally:
                router.stop()
    print(f"\ncapacity at SLO (p50 <= {SLO.p50_ms} ms, p99 <= {SLO.p99_ms} ms, no errors):")
    for name, rate in found.items():
        print(f"  {name:18} {rate:>8,.0f} signals/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
