"""End to end: POST /route over loopback (router + agent + PostgreSQL processes) vs the agent."""

# Runs the gate's full profile once and asserts the [full] bounds of gate.toml; every figure is
# kept in the benchmark's extra_info (see --benchmark-json).

from __future__ import annotations

from typing import Any

import pytest

from benches.gate import evaluate, load_thresholds
from benches.measure import FULL, QUICK, measure
from benches.stack import e2e_stack


@pytest.mark.timeout(900)
def test_e2e_route_vs_direct_agent(benchmark: Any) -> None:
    """Router at 1 and 32 connections next to its agent called directly, in one run."""
    profile = FULL if benchmark.enabled else QUICK
    results: list[dict[str, Any]] = []

    def run() -> None:
        with e2e_stack() as stack:
            results.append(measure(stack, profile))

    benchmark.pedantic(run, rounds=1, iterations=1)
    [result] = results
    benchmark.extra_info.update(result["figures"])
    ok, report = evaluate(result, load_thresholds(), enforce_targets=False)
    print("\n" + report)
    assert ok, report
