"""Throughput per core with 1, 2 and 3 router processes behind Debian's nginx.

#     python -m benches.bench_routers [--seconds 10] [--connections 48]

One stack (benches.stack: database, bench agent); for each N, N `router serve` processes on
the same database behind chaos.balancer's nginx, driven through nginx by benches.driver.
Reports signals/s, the cores the routers used (their CPU seconds per second), signals/s per
router core, and nginx's CPU per signal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benches.measure import drive
from benches.stack import API_KEY, ROUTE_BODY, children, e2e_stack
from chaos.balancer import Balancer
from tests.support import free_port


def main(argv: Sequence[str] | None = None) -> int:
    """Measure N = 1, 2, 3 in one sitting; print the table."""
    parser = argparse.ArgumentParser(prog="python -m benches.bench_routers")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=48)
    args = parser.parse_args(argv)
    print(f"{'routers':>8}{'signals/s':>11}{'router cores':>14}{'per core':>10}"
          f"{'nginx µs/signal':>17}{'p50 ms':>8}{'p99 ms':>8}")  # fmt: skip
    with e2e_stack() as stack:
        for count in (1, 2, 3):
            routers = [stack.router() for _ in range(count)]
            port = free_port()
            balancer = Balancer(port, [int(r.url.split(":")[2].split("/")[0]) for r in routers])
            try:
                pids = [pid for r in routers for pid in r.pids]
                # nginx's master and its worker, which does the proxying.
                nginx = [balancer.proc.pid, *children(balancer.proc.pid)]
                phase = drive(
                    f"http://127.0.0.1:{port}/route",
                    ROUTE_BODY,
                    connections=args.connections,
                    duration_s=args.seconds,
                    warmup_s=1.0,
                    cpu_pids=[*pids, *nginx],
                    headers=[f"X-API-Key: {API_KEY}"],
                )
            finally:
                balancer.stop()
                for router in routers:
                    router.stop()
            router_cpu = sum(phase["cpu_s"][: len(pids)])
            cores = router_cpu / phase["elapsed_s"]
            nginx_us = sum(phase["cpu_s"][len(pids) :]) / max(phase["requests"], 1) * 1e6
            print(
                f"{count:>8}{phase['rps']:>11,.0f}{cores:>14.2f}{phase['rps'] / cores:>10,.0f}"
                f"{nginx_us:>17.1f}{phase['p50_ms']:>8.1f}{phase['p99_ms']:>8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
