"""`router` with a deliberately slowed hot path, to prove the gate catches a regression."""

#     BENCH_SLOW_US=1000 python -m benches.slow_router serve --port P
#
# burns BENCH_SLOW_US µs of CPU inside every parse of a POST /route body, the way an
# accidental per-request `re.compile`, client or JSON schema build would. The hook lives here,
# in the bench harness only: router code has no knob for it.

from __future__ import annotations

import os
import sys
import time

import router.api.route
import router.signals
from router.cli import main
from router.signals import Signal

SLOW_ENV = "BENCH_SLOW_US"


def slowed(delay_us: int) -> None:
    """Patch parse_signal where the hot path looks it up, adding `delay_us` of CPU to each call."""
    original = router.signals.parse_signal
    delay_s = delay_us / 1e6

    def parse_signal(raw: bytes) -> Signal:
        # Spin on thread CPU time, not wall time: the regression must cost CPU, like real code,
        # rather than sleep (which would block the loop but cost no CPU).
        until = time.thread_time() + delay_s
        while time.thread_time() < until:
            pass
        return original(raw)

    # route.py imported the name; patching router.signals alone would not reach it.
    router.api.route.parse_signal = parse_signal  # type: ignore[attr-defined]


if __name__ == "__main__":
    slowed(int(os.environ.get(SLOW_ENV, "1000")))
    sys.exit(main(sys.argv[1:]))
