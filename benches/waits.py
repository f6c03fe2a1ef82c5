"""Where a routed signal waits under load, read off the router's /metrics and /proc/stat.

#     python -m benches.waits [--connections 32] [--seconds 8] [--rounds 2]

One stack (benches.stack), the router as shipped, driven closed-loop by benches.driver. Over
each round's window it reads, from the router's own histograms: signals answered, their mean
latency inside the router, each writer lane's commits (rows per commit, how long one takes,
the share of the window it spent committing) and the agent attempts; and from /proc: the
router's and PostgreSQL's CPU per signal and how busy the whole machine was. What is left of
a signal's latency once one commit of each lane and its agent attempts are taken out is
waiting for a commit already in flight and for the event loop's turn. Exit 1 if a signal in
the window went unrecorded on either lane: the figures would not describe routed signals.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from benches.driver import command_cpu_s, process_cpu_s, used_between
from benches.measure import drive
from benches.stack import API_KEY, ROUTE_BODY, Server, e2e_stack

LANES = ("claim", "outcome")
DATABASE_COMMAND = "postgres"
# /proc/stat's first line, in its order.
MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# A signal still in flight when the driver stops finishes within this; then the window closes.
SETTLE_S = 0.5


@dataclass(frozen=True)
class Reading:
    """The counters this report subtracts, read at one moment."""

    at: float
    series: dict[str, float]
    machine: tuple[int, ...]
    router_cpu_s: float
    database_cpu_s: dict[int, float]


@dataclass(frozen=True)
class Lane:
    """One writer lane over the window."""

    commits: int
    rows: int
    commit_ms: float  # mean duration of one commit
    busy: float  # share of the window spent committing


@dataclass(frozen=True)
class Waits:
    """What a signal cost and where it waited, over one window."""

    seconds: float
    signals: int
    latency_ms: float  # mean, inside the router
    agent_ms: float  # agent attempts per signal times their mean duration
    lanes: dict[str, Lane]
    router_cpu_us: float
    database_cpu_us: float
    machine: dict[str, float]  # share of the machine's CPU time, by /proc/stat field

    @property
    def rest_ms(self) -> float:
        """Latency not spent in one commit of each lane or with the agent."""
        return self.latency_ms - self.agent_ms - sum(lane.commit_ms for lane in self.lanes.values())

    @property
    def unrecorded(self) -> dict[str, int]:
        """Signals answered in the window minus rows each lane wrote (0 when every one was)."""
        return {name: self.signals - lane.rows for name, lane in self.lanes.items()}


def scrape(base_url: str) -> dict[str, float]:
    """Every sample of the router's /metrics, keyed as Prometheus prints it."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    series: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            series[f"{sample.name}{{{labels}}}"] = sample.value
    return series


def read(server: Server) -> Reading:
    """The router's series, the machine's CPU and the router's and PostgreSQL's, now."""
    series = scrape(server.url.removesuffix("/route"))
    with open("/proc/stat") as stat:
        machine = tuple(int(v) for v in stat.readline().split()[1 : 1 + len(MACHINE_FIELDS)])
    return Reading(
        at=time.monotonic(),
        series=series,
        machine=machine,
        router_cpu_s=sum(process_cpu_s(pid) for pid in server.pids),
        database_cpu_s=command_cpu_s(DATABASE_COMMAND),
    )


def _total(series: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in series.items()
        if key.startswith(f"{name}{{") and all(w in key for w in want)
    )


def waits_between(before: Reading, after: Reading) -> Waits:
    """The window's figures: `after` minus `before`."""

    def delta(name: str, **labels: str) -> float:
        return _total(after.series, name, **labels) - _total(before.series, name, **labels)

    seconds = after.at - before.at
    signals = round(delta("router_latency_seconds_count"))
    per_signal = 1 / signals if signals else float("nan")
    lanes = {}
    for name in LANES:
        commits = round(delta("log_commit_duration_seconds_count", lane=name))
        busy_s = delta("log_commit_duration_seconds_sum", lane=name)
        lanes[name] = Lane(
            commits=commits,
            rows=round(delta("log_commit_batch_rows_sum", lane=name)),
            commit_ms=busy_s / commits * 1e3 if commits else float("nan"),
            busy=busy_s / seconds,
        )
    machine = [a - b for a, b in zip(after.machine, before.machine, strict=True)]
    database_cpu_s = used_between(before.database_cpu_s, after.database_cpu_s)
    return Waits(
        seconds=seconds,
        signals=signals,
        latency_ms=delta("router_latency_seconds_sum") * per_signal * 1e3,
        agent_ms=delta("agent_attempt_seconds_sum") * per_signal * 1e3,
        lanes=lanes,
        router_cpu_us=(after.router_cpu_s - before.router_cpu_s) * per_signal * 1e6,
        database_cpu_us=database_cpu_s * per_signal * 1e6,
        machine={
            name: part / sum(machine) for name, part in zip(MACHINE_FIELDS, machine, strict=True)
        },
    )


def measure(server: Server, connections: int, seconds: float) -> Waits:
    """One window: the driver at `connections` for `seconds`, every signal of it settled."""
    before = read(server)
    drive(
        server.url,
        ROUTE_BODY,
        connections=connections,
        duration_s=seconds,
        warmup_s=0.0,
        headers=[f"X-API-Key: {API_KEY}"],
    )
    time.sleep(SETTLE_S)
    return waits_between(before, read(server))


def report(waits: Waits, connections: int) -> str:
    """The window as a few lines of text."""
    m = waits.machine
    lines = [
        f"@{connections} connections, {waits.seconds:.1f} s: "
        f"{waits.signals / waits.seconds:,.0f} signals/s",
        f"  machine busy {1 - m['idle'] - m['iowait']:.0%} (user {m['user']:.0%}, "
        f"system {m['system']:.0%}, softirq {m['softirq']:.0%}), idle {m['idle']:.0%}, "
        f"iowait {m['iowait']:.0%}",
        f"  CPU per signal: router {waits.router_cpu_us:.1f} µs, "
        f"PostgreSQL {waits.database_cpu_us:.1f} µs",
        f"  latency inside the router {waits.latency_ms:.2f} ms per signal:",
    ]
    for name, lane in waits.lanes.items():
        lines.append(
            f"    one {name} commit {lane.commit_ms:.2f} ms "
            f"({lane.rows / lane.commits:.1f} rows; the lane commits {lane.busy:.0%} of the time)"
        )
    lines.append(f"    agent attempts {waits.agent_ms:.2f} ms")
    lines.append(f"    the rest {waits.rest_ms:.2f} ms (a commit in flight, the loop's turns)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """--rounds windows on one router, each reported as it ends."""
    parser = argparse.ArgumentParser(prog="python -m benches.waits")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    unrecorded = False
    with e2e_stack() as stack:
        router = stack.router()
        try:
            measure(router, args.connections, 2.0)  # connections, caches, today's partition
            for _ in range(args.rounds):
                waits = measure(router, args.connections, args.seconds)
                print(report(waits, args.connections), flush=True)
                if any(waits.unrecorded.values()):
                    print(f"signals without a row: {waits.unrecorded}", file=sys.stderr)
                    unrecorded = True
        finally:
            router.stop()
    return 1 if unrecorded else 0


if __name__ == "__main__":
    sys.exit(main())
