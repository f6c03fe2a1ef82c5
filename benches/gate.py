"""The performance gate: measure the router end to end, compare with benches/gate.toml."""

#     python -m benches.gate                 # quick (make bench-gate), exit 1 on FAIL
#     python -m benches.gate --profile full  # three rounds and --workers 2 (make bench)
#     python -m benches.gate --self-test     # must FAIL with a slowed hot path, PASS without
#     python -m benches.gate --json out.json # also write every figure and raw phase
#
# DATABASE_URL selects the PostgreSQL server (a database of our own is made and dropped);
# without it the embedded server of the tests is used.

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benches.measure import PROFILES, measure
from benches.stack import Stack, e2e_stack

GATE_FILE = Path(__file__).with_name("gate.toml")

# Display order and units of the figures table.
UNITS: dict[str, str] = {
    "cpu_us_per_signal": "µs",
    "cpu_us_per_signal_1": "µs",
    "cpu_floors": "x",
    "floor_cpu_us": "µs",
    "agent_cpu_us": "µs",
    "router_p50_ms_1": "ms",
    "direct_p50_ms_1": "ms",
    "added_latency_ms": "ms",
    "latency_ratio_1": "x",
    "rps_32": "/s",
    "direct_rps_32": "/s",
    "throughput_ratio_32": "x",
    "p50_ms_32": "ms",
    "p99_ms_32": "ms",
    "workers2_rps_32": "/s",
    "workers2_speedup": "x",
    "workers2_cpu_us_per_signal": "µs",
    "error_rate": "",
}


@dataclass(frozen=True)
class Check:
    """One bound on one figure, and whether the figure keeps it."""

    metric: str
    kind: str  # "max" or "min"
    bound: float
    value: float | None

    @property
    def ok(self) -> bool:
        """A missing or NaN figure fails: the gate cannot vouch for what it did not measure."""
        if self.value is None or math.isnan(self.value):
            return False
        return self.value <= self.bound if self.kind == "max" else self.value >= self.bound


def load_thresholds(path: Path = GATE_FILE) -> dict[str, Any]:
    """The parsed gate.toml."""
    with path.open("rb") as f:
        return tomllib.load(f)


def checks_for(
    figures: Mapping[str, float], bounds: Mapping[str, Mapping[str, float]]
) -> list[Check]:
    """Every bound of one gate.toml section applied to `figures`."""
    checks = []
    for metric, bound in bounds.items():
        for kind in ("max", "min"):
            if kind in bound:
                checks.append(Check(metric, kind, float(bound[kind]), figures.get(metric)))
    return checks


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def render(
    title: str, figures: Mapping[str, float], gate: Sequence[Check], targets: Sequence[Check]
) -> str:
    """A table of every figure with its gate bound and target, one line each."""
    by_metric = {c.metric: c for c in gate}
    target_of = {c.metric: c for c in targets}
    lines = [title, f"{'figure':<28}{'value':>12}  {'gate':<16}{'target':<16}"]
    for metric in [*UNITS, *(m for m in figures if m not in UNITS)]:
        if metric not in figures:
            continue
        cells = []
        for check in (by_metric.get(metric), target_of.get(metric)):
            if check is None:
                cells.append("")
            else:
                sign = "≤" if check.kind == "max" else "≥"
                cells.append(f"{sign}{_fmt(check.bound)} {'ok' if check.ok else 'FAIL'}")
        value = f"{_fmt(figures[metric])} {UNITS.get(metric, '')}"
        lines.append(f"{metric:<28}{value:>12}  {cells[0]:<16}{cells[1]:<16}")
    return "\n".join(lines)


def evaluate(
    result: Mapping[str, Any], thresholds: Mapping[str, Any], *, enforce_targets: bool
) -> tuple[bool, str]:
    """PASS/FAIL of one measurement against its profile's section, and the report."""
    figures = result["figures"]
    gate = checks_for(figures, thresholds[result["profile"]])
    # A target whose figure this profile does not measure (workers2 in quick) is left out.
    targets = [c for c in checks_for(figures, thresholds["targets"]) if c.value is not None]
    failed = [c for c in gate if not c.ok]
    if enforce_targets:
        failed += [c for c in targets if not c.ok]
    slow = f", hot path slowed by {result['slow_us']} µs" if result["slow_us"] else ""
    title = f"router performance gate: profile {result['profile']}{slow}, {result['seconds']} s"
    report = render(title, figures, gate, targets)
    missed = [c.metric for c in targets if not c.ok]
    report += f"\ntargets missed (not gated{'' if not enforce_targets else ': ENFORCED'}): "
    report += ", ".join(missed) or "none"
    verdict = "PASS" if not failed else "FAIL: " + ", ".join(f"{c.metric}" for c in failed)
    return not failed, f"{report}\n{verdict}"


def judged(
    stack: Stack, profile: str, thresholds: Mapping[str, Any], *, slow_us: int, enforce: bool
) -> tuple[bool, dict[str, Any]]:
    """Measure and judge; a FAIL stands only when a second measurement fails too."""
    # One sample on a shared CI machine can land in a burst of someone else's load (a clean
    # clone measured 1,429 signals/s against ~3,000 here, and a floor ratio over its bound,
    # on a commit that changed only tests). A real regression fails both samples; a noise
    # spike rarely does twice in a row, so the gate confirms before it goes red.
    for attempt in (1, 2):
        result = measure(stack, PROFILES[profile], slow_us=slow_us)
        ok, report = evaluate(result, thresholds, enforce_targets=enforce)
        print(report, "\n", flush=True)
        if ok:
            break
        if attempt == 1:
            print("measuring again to confirm the FAIL\n", flush=True)
    return ok, result


def run_gate(profile: str, *, slow_us: int, enforce_targets: bool) -> tuple[bool, dict[str, Any]]:
    """Measure and judge; prints the report."""
    with e2e_stack() as stack:
        return judged(stack, profile, load_thresholds(), slow_us=slow_us, enforce=enforce_targets)


def self_test(profile: str) -> tuple[bool, list[dict[str, Any]]]:
    """True when the gate PASSes the router as it is and FAILs it with a slowed hot path."""
    thresholds = load_thresholds()
    slow_us = int(thresholds["self_test"]["slow_us"])
    results = []
    verdicts = []
    with e2e_stack() as stack:
        for slow in (0, slow_us):
            ok, result = judged(stack, profile, thresholds, slow_us=slow, enforce=False)
            results.append(result)
            verdicts.append(ok)
    caught = verdicts == [True, False]
    print(
        "self-test:",
        "PASS (the gate passes today's router and fails the slowed one)"
        if caught
        else f"FAIL (verdicts plain={verdicts[0]}, slowed={verdicts[1]})",
    )
    return caught, results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit 0 on PASS, 1 on FAIL."""
    parser = argparse.ArgumentParser(prog="python -m benches.gate", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--self-test", action="store_true", help="prove the gate catches a slowdown"
    )
    parser.add_argument("--slow-us", type=int, default=0, help="slow the hot path by this much")
    parser.add_argument(
        "--enforce-targets",
        action="store_true",
        default=os.environ.get("GATE_ENFORCE_TARGETS") == "1",
        help="fail on missed product targets too",
    )
    parser.add_argument("--json", type=Path, help="write figures and raw phases here")
    args = parser.parse_args(argv)
    if args.self_test:
        ok, results = self_test(args.profile)
        payload: Any = results
    else:
        ok, payload = run_gate(
            args.profile, slow_us=args.slow_us, enforce_targets=args.enforce_targets
        )
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
