"""The end-to-end measurement: the router next to a direct call of its agent, in the same run."""

# Each round drives, back to back so they share the machine's momentary noise: the floor app
# and the agent directly, then the router, at 1 and at 32 connections. Figures are medians over
# rounds. What the gate compares are the ratios and per-signal CPU derived from them.

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benches.stack import AGENT_BODY, API_KEY, ROOT, ROUTE_BODY, Server, Stack, children

Phase = dict[str, Any]


@dataclass(frozen=True)
class Profile:
    """How long each phase runs, in seconds, and how many rounds; `workers2` adds a phase."""

    name: str
    rounds: int
    warmup_s: float
    latency_s: float
    throughput_s: float
    workers2: bool


QUICK = Profile("quick", rounds=1, warmup_s=0.5, latency_s=2.5, throughput_s=4.0, workers2=False)
FULL = Profile("full", rounds=3, warmup_s=1.0, latency_s=4.0, throughput_s=8.0, workers2=True)
PROFILES = {p.name: p for p in (QUICK, FULL)}
CONNECTIONS = 32


def drive(
    url: str,
    body: bytes | Sequence[bytes],
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    cpu_pids: Sequence[int] = (),
    cpu_comms: Sequence[str] = (),
    headers: Sequence[str] = (),
    timeline: bool = False,
) -> Phase:
    """Run benches.driver in its own process against `url`; its JSON result. With several
    bodies, connection i sends body i mod n."""
    command = [
        sys.executable,
        "-m",
        "benches.driver",
        "--url",
        url,
        "--connections",
        str(connections),
        "--duration",
        str(duration_s),
        "--warmup",
        str(warmup_s),
    ]
    for one in [body] if isinstance(body, bytes) else body:
        command += ["--body", one.decode()]
    for header in headers:
        command += ["--header", header]
    for pid in cpu_pids:
        command += ["--cpu-pid", str(pid)]
    for comm in cpu_comms:
        command += ["--cpu-comm", comm]
    if timeline:
        command.append("--timeline")
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, check=True, timeout=duration_s + warmup_s + 60
    )
    result: Phase = json.loads(done.stdout)
    return result


def _router_phase(server: Server, connections: int, duration_s: float, warmup_s: float) -> Phase:
    phase = drive(
        server.url,
        ROUTE_BODY,
        connections=connections,
        duration_s=duration_s,
        warmup_s=warmup_s,
        cpu_pids=server.pids,
        headers=[f"X-API-Key: {API_KEY}"],
    )
    # Every worker's CPU counts: with --workers N the signals are spread over them.
    phase["cpu_us_per_signal"] = (
        sum(phase["cpu_s"]) / phase["requests"] * 1e6 if phase["requests"] else float("nan")
    )
    return phase


def _errors(phase: Phase) -> tuple[int, int]:
    """(answers other than 2xx, transport errors: requests that got no answer)."""
    bad = sum(n for status, n in phase["statuses"].items() if not status.startswith("2"))
    return int(bad), int(sum(phase["errors"].values()))


def run_round(stack: Stack, router: Server, profile: Profile) -> dict[str, Phase]:
    """One round of every phase; keys name the phase."""
    w = profile.warmup_s
    phases: dict[str, Phase] = {}
    phases["floor_32"] = drive(
        stack.baseline.url,
        ROUTE_BODY,
        connections=CONNECTIONS,
        duration_s=profile.latency_s,
        warmup_s=w,
        cpu_pids=stack.baseline.pids,
    )
    phases["direct_1"] = drive(
        stack.agent_url,
        AGENT_BODY,
        connections=1,
        duration_s=profile.latency_s,
        warmup_s=w,
        cpu_pids=[stack.agent.proc.pid],
    )
    phases["router_1"] = _router_phase(router, 1, profile.latency_s, w)
    phases["direct_32"] = drive(
        stack.agent_url,
        AGENT_BODY,
        connections=CONNECTIONS,
        duration_s=profile.latency_s,
        warmup_s=w,
        cpu_pids=[stack.agent.proc.pid],
    )
    phases["router_32"] = _router_phase(router, CONNECTIONS, profile.throughput_s, w)
    return phases


def figures_of(rounds: list[dict[str, Phase]]) -> dict[str, float]:
    """The gate's figures, each the median over rounds of a same-round ratio or figure."""

    def med(fn: Callable[[dict[str, Phase]], float]) -> float:
        return round(statistics.median(fn(r) for r in rounds), 3)

    def floor_cpu(r: dict[str, Phase]) -> float:
        phase = r["floor_32"]
        return float(phase["cpu_s"][0] / phase["requests"] * 1e6)

    def agent_cpu(r: dict[str, Phase]) -> float:
        phase = r["direct_32"]
        return float(phase["cpu_s"][0] / phase["requests"] * 1e6)

    routed = [r[p] for r in rounds for p in ("router_1", "router_32")]
    # `requests` counts every answer, 2xx or not; transport errors come on top.
    total = sum(phase["requests"] + _errors(phase)[1] for phase in routed)
    errors = sum(sum(_errors(phase)) for phase in routed)
    return {
        "router_p50_ms_1": med(lambda r: r["router_1"]["p50_ms"]),
        "direct_p50_ms_1": med(lambda r: r["direct_1"]["p50_ms"]),
        "added_latency_ms": med(lambda r: r["router_1"]["p50_ms"] - r["direct_1"]["p50_ms"]),
        "latency_ratio_1": med(lambda r: r["router_1"]["p50_ms"] / r["direct_1"]["p50_ms"]),
        "rps_32": med(lambda r: r["router_32"]["rps"]),
        "p50_ms_32": med(lambda r: r["router_32"]["p50_ms"]),
        "p99_ms_32": med(lambda r: r["router_32"]["p99_ms"]),
        "direct_rps_32": med(lambda r: r["direct_32"]["rps"]),
        "throughput_ratio_32": med(lambda r: r["router_32"]["rps"] / r["direct_32"]["rps"]),
        "cpu_us_per_signal": med(lambda r: r["router_32"]["cpu_us_per_signal"]),
        "cpu_us_per_signal_1": med(lambda r: r["router_1"]["cpu_us_per_signal"]),
        "floor_cpu_us": med(floor_cpu),
        "agent_cpu_us": med(agent_cpu),
        "cpu_floors": med(lambda r: r["router_32"]["cpu_us_per_signal"] / floor_cpu(r)),
        "error_rate": round(errors / total, 6) if total else 1.0,
    }


def measure(
    stack: Stack, profile: Profile, *, slow_us: int = 0, module: str = "router"
) -> dict[str, Any]:
    """Run `profile` against a fresh router on `stack` (`module`: a wrapper of it); all figures."""
    started = time.monotonic()
    router = stack.router(slow_us=slow_us, module=module)
    try:
        # Fill the pools, the agent's keep-alive connections and the CPU caches first.
        drive(
            router.url,
            ROUTE_BODY,
            connections=8,
            duration_s=profile.warmup_s,
            warmup_s=0.0,
            headers=[f"X-API-Key: {API_KEY}"],
        )
        rounds = [run_round(stack, router, profile) for _ in range(profile.rounds)]
    finally:
        router.stop()
    figures = figures_of(rounds)
    if profile.workers2:
        figures.update(_workers2(stack, profile, slow_us, figures["rps_32"]))
    return {
        "profile": profile.name,
        "slow_us": slow_us,
        "seconds": round(time.monotonic() - started, 1),
        "figures": figures,
        "rounds": rounds,
    }


def _workers2(stack: Stack, profile: Profile, slow_us: int, rps_1: float) -> dict[str, float]:
    """Throughput of `--workers 2` at 32 connections, and its ratio to one worker's."""
    router = stack.router(workers=2, slow_us=slow_us)
    try:
        time.sleep(1.0)  # both workers up and in the pid list before CPU is read
        router.pids = [router.proc.pid, *children(router.proc.pid)]
        phase = _router_phase(router, CONNECTIONS, profile.throughput_s, profile.warmup_s * 2)
    finally:
        router.stop()
    return {
        "workers2_rps_32": phase["rps"],
        "workers2_speedup": round(phase["rps"] / rps_1, 3) if rps_1 else float("nan"),
        "workers2_cpu_us_per_signal": round(phase["cpu_us_per_signal"], 1),
    }
