"""The router against issue 13's bare reference and the contract floor, side by side in one run.

#     python -m benches.compare_reference [--seconds 10] [--rounds 2] [--load wrk]

One stack (benches.stack: database, bench agent). Three servers on the same agent and
PostgreSQL, each its own process: the bare reference (benches/reference_app.py: does less
than the contract asks), the contract floor (benches/contract_floor_app.py: the contract's
four waits and nothing else) and the router. Driven in alternation by benches.driver at 32
connections and at one, each round all three and the agent called directly at one. Prints
signals/s, CPU per signal, PostgreSQL's CPU per signal (every `postgres` process of this
machine, over the same window; nan when the database runs elsewhere), p50/p99 and the p50
added over the agent at one connection, with the router's ratios to the reference and to
the floor. Exit 1 if any answer was not 200: an error is cheaper than the work, and would
flatter whoever gave it. `--load wrk` drives every phase with wrk and one thread
(benches.wrk), the generator issue 13 measured its figures with, instead of benches.driver.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from benches import wrk
from benches.measure import drive
from benches.stack import AGENT_BODY, API_KEY, ROUTE_BODY, Server, Stack, e2e_stack, start_app

CONTESTANTS = ("reference", "floor", "router")
FIGURES = ("rps", "cpu_us", "db_cpu_us", "p50_ms", "p99_ms")
# PostgreSQL's processes, whose CPU each phase also reads: the database's share of a signal.
DATABASE_COMMAND = "postgres"


class Load(Protocol):
    """A closed-loop load generator run for one phase: benches.measure.drive or benches.wrk's."""

    def __call__(
        self,
        url: str,
        body: bytes,
        *,
        connections: int,
        duration_s: float,
        warmup_s: float,
        cpu_pids: Sequence[int] = (),
        cpu_comms: Sequence[str] = (),
        headers: Sequence[str] = (),
    ) -> dict[str, Any]: ...


LOADS: dict[str, Load] = {"driver": drive, "wrk": wrk.drive_wrk}


def phase_figures(
    server: Server, connections: int, seconds: float, load: Load = drive
) -> dict[str, Any]:
    """One closed-loop phase against `server`: signals/s, CPU per signal, p50, p99, statuses."""
    phase = load(
        server.url,
        ROUTE_BODY,
        connections=connections,
        duration_s=seconds,
        warmup_s=1.0,
        cpu_pids=server.pids,
        cpu_comms=[DATABASE_COMMAND],
        headers=[f"X-API-Key: {API_KEY}"],
    )
    return _figures(phase)


def _agent_figures(stack: Stack, seconds: float, load: Load) -> dict[str, Any]:
    """The agent called directly at one connection with what the router forwards."""
    phase = load(
        stack.agent_url,
        AGENT_BODY,
        connections=1,
        duration_s=seconds,
        warmup_s=1.0,
        cpu_pids=[stack.agent.proc.pid],
    )
    return _figures(phase)


def _figures(phase: dict[str, Any]) -> dict[str, Any]:
    database_s = phase.get("cpu_comm_s", {}).get(DATABASE_COMMAND)
    return {
        "rps": phase["rps"],
        "cpu_us": round(sum(phase["cpu_s"]) / phase["requests"] * 1e6, 1),
        "db_cpu_us": (
            float("nan") if database_s is None else round(database_s / phase["requests"] * 1e6, 1)
        ),
        "p50_ms": phase["p50_ms"],
        "p99_ms": phase["p99_ms"],
        "statuses": phase["statuses"],
        "errors": phase["errors"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the three servers and the agent for --rounds rounds; print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benches.compare_reference")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--load",
        choices=sorted(LOADS),
        default="driver",
        help="the load generator (default: driver)",
    )
    args = parser.parse_args(argv)
    if args.load == "wrk" and not wrk.available():
        parser.error("--load wrk: wrk is not installed (Debian: apt-get install wrk)")
    load = LOADS[args.load]
    runs: dict[str, list[dict[str, Any]]] = {}
    failed: list[str] = []
    with e2e_stack() as stack:
        servers = {
            "reference": start_app("benches.reference_app", stack.database_url, stack.agent_url),
            "floor": start_app("benches.contract_floor_app", stack.database_url, stack.agent_url),
            "router": stack.router(),
        }
        try:
            for _ in range(args.rounds):
                runs.setdefault("agent_1", []).append(_agent_figures(stack, args.seconds, load))
                for name, server in servers.items():
                    for connections in (32, 1):
                        phase = phase_figures(server, connections, args.seconds, load)
                        runs.setdefault(f"{name}_{connections}", []).append(phase)
                        if set(phase["statuses"]) != {"200"} or phase["errors"]:
                            failed.append(
                                f"{name} @{connections}: {phase['statuses']} {phase['errors']}"
                            )
        finally:
            for server in servers.values():
                server.stop()
    print(json.dumps(runs), file=sys.stderr)
    print(_table(runs))
    for line in failed:
        print(f"not every answer was 200: {line}", file=sys.stderr)
    return 1 if failed else 0


def _table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Medians of each figure per server, and the router's ratios to the reference and floor."""

    def med(key: str, figure: str) -> float:
        return float(statistics.median(r[figure] for r in runs[key]))

    lines = [f"{'':22}" + "".join(f"{n:>12}" for n in CONTESTANTS) + f"{'/ ref':>9}{'/ floor':>9}"]
    rows: list[tuple[str, list[float]]] = []
    for connections in (32, 1):
        for figure in FIGURES:
            rows.append(
                (
                    f"{figure} @{connections}",
                    [med(f"{n}_{connections}", figure) for n in CONTESTANTS],
                )
            )
    agent_p50 = med("agent_1", "p50_ms")
    rows.append(("added_ms @1", [med(f"{n}_1", "p50_ms") - agent_p50 for n in CONTESTANTS]))
    for label, (ref, floor, router) in rows:
        cells = "".join(f"{v:>12,.2f}" for v in (ref, floor, router))
        lines.append(f"{label:22}{cells}{router / ref:>8.2f}x{router / floor:>8.2f}x")
    lines.append(f"agent direct p50 @1: {agent_p50:.3f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
