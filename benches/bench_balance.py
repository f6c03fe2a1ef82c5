"""A/B of replica balancing: three replicas, one 50 ms slower from halfway, least_latency vs
round_robin in one run.

#     python -m benches.bench_balance [--seconds 30] [--connections 16] [--plot docs/balance_ab.png]

Each strategy gets its own router process (same table but `balance`) on the same three demo
agent processes, driven by benches.driver with every request's latency recorded. Halfway through,
replica 1 is told to answer 50 ms later (POST /behaviour); each replica's request count is read
every second, so the shares over time come from what the agents saw. Prints p50/p99 before and
after the slowdown for each strategy and writes a PNG of p99 and the slow replica's share per
second.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benches.driver import percentile
from benches.measure import Phase, drive
from benches.stack import API_KEY, ROUTE_BODY, bench_database, start_router
from router.model import Balance
from tests.support import AgentProcess, start_agent

SLOW_MS = 50
BALANCES: tuple[Balance, ...] = ("least_latency", "round_robin")
TABLE = """
[defaults]
timeout_ms = 2000
concurrency = 256

[agents.scoring]
urls = [{urls}]
balance = "{balance}"

[[rules]]
kind = "general"
default = true
agents = ["scoring"]
"""


def _received(replicas: Sequence[AgentProcess]) -> list[int]:
    return [int(r.stats()["received"]) for r in replicas]


def _run(
    database_url: str, tmp: Path, replicas: Sequence[AgentProcess], balance: Balance, args: Any
) -> dict[str, Any]:
    """One strategy: drive for args.seconds, slowing replica 1 halfway; figures and timeline."""
    for r in replicas:
        r.reset()
    routes = tmp / f"{balance}.toml"
    urls = ", ".join(f'"{r.url}"' for r in replicas)
    routes.write_text(TABLE.format(urls=urls, balance=balance))
    router = start_router(database_url, routes, tmp / f"{balance}.log")
    result: dict[str, Phase] = {}
    try:
        driver = threading.Thread(
            target=lambda: result.setdefault(
                "phase",
                drive(
                    router.url,
                    ROUTE_BODY,
                    connections=args.connections,
                    duration_s=args.seconds,
                    warmup_s=1.0,
                    headers=[f"X-API-Key: {API_KEY}"],
                    timeline=True,
                ),
            )
        )
        driver.start()
        time.sleep(1.0)  # the driver's warm-up
        counts = [_received(replicas)]
        for second in range(1, int(args.seconds) + 1):
            time.sleep(1.0)
            counts.append(_received(replicas))
            if second == int(args.seconds / 2):
                replicas[1].behave(latency_ms=SLOW_MS)
        driver.join()
    finally:
        router.stop()
    timeline: list[list[float]] = result["phase"]["timeline"]
    half = args.seconds / 2
    before = sorted(lat for t, lat in timeline if 1.0 <= t < half)
    after = sorted(lat for t, lat in timeline if t >= half)
    per_second = [
        sorted(lat for t, lat in timeline if s <= t < s + 1) for s in range(int(args.seconds))
    ]
    deltas = [
        [b - a for a, b in zip(prev, cur, strict=True)] for prev, cur in itertools.pairwise(counts)
    ]
    return {
        "balance": balance,
        "rps": result["phase"]["rps"],
        "before": _figures(before),
        "after": _figures(after),
        "p99_ms_by_second": [round(percentile(s, 0.99) * 1000, 2) for s in per_second],
        "slow_share_by_second": [round(d[1] / sum(d), 3) if sum(d) else 0.0 for d in deltas],
        "slow_share_after": round(
            sum(d[1] for d in deltas[int(half) :])
            / max(1, sum(sum(d) for d in deltas[int(half) :])),
            3,
        ),
    }


def _figures(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def _plot(runs: list[dict[str, Any]], seconds: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for run in runs:
        top.plot(run["p99_ms_by_second"], label=run["balance"])
        bottom.plot(
            range(1, len(run["slow_share_by_second"]) + 1),
            run["slow_share_by_second"],
            label=run["balance"],
        )
    for axis in (top, bottom):
        axis.axvline(seconds / 2, color="grey", linestyle="--", linewidth=1)
        axis.legend()
        axis.grid(alpha=0.3)
    top.set_ylabel("p99 ms (per second)")
    top.set_title(f"Three replicas; replica 1 answers {SLOW_MS} ms later from the dashed line")
    bottom.set_ylabel("replica 1's share of requests")
    bottom.set_xlabel("seconds")
    bottom.set_ylim(0, 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both strategies on the same agents; print the table, write the plot."""
    parser = argparse.ArgumentParser(prog="python -m benches.bench_balance", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--plot", type=Path, help="write the PNG here")
    args = parser.parse_args(argv)
    replicas = [start_agent(f"scoring-{i}") for i in range(3)]
    try:
        with tempfile.TemporaryDirectory(prefix="router-balance-") as tmp, bench_database() as url:
            runs = [_run(url, Path(tmp), replicas, balance, args) for balance in BALANCES]
    finally:
        for r in replicas:
            r.stop()
    print(
        f"{args.connections} connections, {args.seconds:.0f} s each;"
        f" replica 1 +{SLOW_MS} ms from {args.seconds / 2:.0f} s"
    )
    heads = ("signals/s", "p50 before", "p99 before", "p50 after", "p99 after", "after/before")
    print(f"{'':16}" + "".join(f"{h:>13}" for h in heads) + f"{'slow share after':>18}")
    for run in runs:
        b, a = run["before"], run["after"]
        cells = (f"{run['rps']:,.0f}", b["p50_ms"], b["p99_ms"], a["p50_ms"], a["p99_ms"])
        ratio = f"{a['p99_ms'] / b['p99_ms']:.2f}x"
        print(
            f"{run['balance']:16}"
            + "".join(f"{c!s:>13}" for c in (*cells, ratio))
            + f"{run['slow_share_after']:>18.1%}"
        )
    if args.plot:
        _plot(runs, args.seconds, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps(runs), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
