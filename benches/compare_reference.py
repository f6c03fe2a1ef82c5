"""The router against issue 13's bare reference endpoint, side by side in one run.

#     python -m benches.compare_reference [--seconds 10] [--rounds 2]

One stack (benches.stack: database, bench agent); the reference app (benches/reference_app.py)
and the router run as their own processes on the same agent and PostgreSQL, driven in
alternation by benches.driver at 32 connections and at one, each round both. Prints signals/s,
CPU per signal and p50/p99 of each, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benches.measure import drive
from benches.stack import API_KEY, ROOT, ROUTE_BODY, Server, e2e_stack
from tests.support import free_port, wait_http


def _reference(database_url: str, agent_url: str) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "AGENT_URL": agent_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benches.reference_app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=60)
    return Server(f"http://127.0.0.1:{port}/route", proc, [proc.pid])


def phase_figures(server: Server, connections: int, seconds: float) -> dict[str, Any]:
    """One closed-loop phase against `server`: signals/s, CPU per signal, p50, p99, statuses."""
    phase = drive(
        server.url,
        ROUTE_BODY,
        connections=connections,
        duration_s=seconds,
        warmup_s=1.0,
        cpu_pids=server.pids,
        headers=[f"X-API-Key: {API_KEY}"],
    )
    return {
        "rps": phase["rps"],
        "cpu_us": round(sum(phase["cpu_s"]) / phase["requests"] * 1e6, 1),
        "p50_ms": phase["p50_ms"],
        "p99_ms": phase["p99_ms"],
        "statuses": phase["statuses"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate reference and router rounds; print the medians' table."""
    parser = argparse.ArgumentParser(prog="python -m benches.compare_reference")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {}
    with e2e_stack() as stack:
        reference = _reference(stack.database_url, stack.agent_url)
        router = stack.router()
        try:
            for _ in range(args.rounds):
                for name, server in (("reference", reference), ("router", router)):
                    for connections in (32, 1):
                        key = f"{name}_{connections}"
                        runs.setdefault(key, []).append(
                            phase_figures(server, connections, args.seconds)
                        )
        finally:
            router.stop()
            reference.stop()
    print(json.dumps(runs), file=sys.stderr)
    print(f"{'':22}{'reference':>12}{'router':>12}{'router / ref':>14}")
    for connections in (32, 1):
        for figure in ("rps", "cpu_us", "p50_ms", "p99_ms"):
            ref = sorted(r[figure] for r in runs[f"reference_{connections}"])
            rou = sorted(r[figure] for r in runs[f"router_{connections}"])
            a, b = ref[len(ref) // 2], rou[len(rou) // 2]
            print(f"{figure + f' @{connections}':22}{a:>12,}{b:>12,}{b / a:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
