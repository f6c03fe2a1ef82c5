"""What each layer of the route path costs: the router with layers answered at once, alternated.

#     python -m benches.ablation [--seconds 5] [--rounds 2]

One stack (benches.stack); the router as shipped, then with the log line, the metrics, the
database or the agent call replaced by an immediate answer (benches/ablated_router.py), then
with all four, each driven at 32 connections and at one, round after round. The layers
overlap (removing one changes how signals batch and how often the loop sleeps), so read each
row against the first, not as parts of a sum. Every answer must be 200: a variant that
answers anything else is reported and fails the run, since an error is cheaper than work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benches.ablated_router import ABLATE_ENV, LAYERS
from benches.compare_reference import phase_figures
from benches.stack import e2e_stack

VARIANTS: dict[str, tuple[str, ...]] = {
    "the router as shipped": (),
    "no log line": ("log",),
    "no prometheus_client updates": ("metrics",),
    "no database": ("database",),
    "no agent call": ("agent",),
    "none of the four": LAYERS,
}
FIGURES = (("rps", 32), ("cpu_us", 32), ("cpu_us", 1), ("p50_ms", 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the variants for --rounds rounds; print the medians' table."""
    parser = argparse.ArgumentParser(prog="python -m benches.ablation", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    failed: list[str] = []
    with e2e_stack() as stack:
        for _ in range(args.rounds):
            for name, layers in VARIANTS.items():
                os.environ[ABLATE_ENV] = ",".join(layers)
                router = stack.router(module="benches.ablated_router")
                try:
                    for connections in (32, 1):
                        phase = phase_figures(router, connections, args.seconds)
                        runs.setdefault((name, connections), []).append(phase)
                        if set(phase["statuses"]) != {"200"}:
                            failed.append(f"{name} @{connections}: {phase['statuses']}")
                finally:
                    router.stop()
                    del os.environ[ABLATE_ENV]
    header = "".join(f"{figure + f' @{c}':>12}" for figure, c in FIGURES)
    print(f"{'variant':32}{header}")
    for name in VARIANTS:
        cells = "".join(
            f"{statistics.median(r[figure] for r in runs[(name, c)]):>12,.1f}"
            for figure, c in FIGURES
        )
        print(f"{name:32}{cells}")
    for line in failed:
        print(f"not all answers were 200: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
