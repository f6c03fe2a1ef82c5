"""Bench fixtures: bench_*.py collection, a migrated database of our own, micro budgets."""

# Run with `make bench` (pytest-benchmark enabled); pyproject's addopts disable benchmarks for
# `make test`, where each bench body then runs once as a smoke test.

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from benches.gate import load_thresholds
from benches.stack import bench_database


def pytest_configure(config: pytest.Config) -> None:
    """Collect bench_*.py as well as test_*.py under benches/."""
    config.addinivalue_line("python_files", "bench_*.py")


@pytest.fixture(scope="session")
def micro_budgets() -> dict[str, float]:
    """Median budgets in µs per call, from benches/gate.toml [micro]."""
    return {k: float(v) for k, v in load_thresholds()["micro"].items()}


@pytest.fixture
def within_budget(benchmark: Any, micro_budgets: dict[str, float]) -> Any:
    """Call after a benchmark: fails when its median exceeds the budget named in gate.toml."""

    def check(name: str) -> None:
        stats = benchmark.stats
        if stats is None:  # benchmarks disabled: the body ran once, nothing was timed
            return
        median_us = stats.stats.median * 1e6
        benchmark.extra_info["median_us"] = round(median_us, 2)
        benchmark.extra_info["budget_us"] = micro_budgets[name]
        assert median_us <= micro_budgets[name], (
            f"{name}: median {median_us:.1f} µs > budget {micro_budgets[name]} µs (gate.toml)"
        )

    return check


@pytest.fixture(scope="session")
def bench_db() -> Iterator[str]:
    """A migrated database of our own on DATABASE_URL's server (or the embedded one)."""
    with bench_database() as url:
        yield url


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop event loop, as `router serve` runs, for benches to drive with run_until_complete."""
    # pytest-benchmark times synchronous callables, so async benches run their own loop.
    loop = uvloop.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()
