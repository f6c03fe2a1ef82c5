"""The gate is worth having only if it fails a slower router: prove it on every `make bench`."""

from __future__ import annotations

import pytest

from benches.gate import self_test


@pytest.mark.timeout(600)
def test_gate_fails_slowed_hot_path_and_passes_todays() -> None:
    """Quick gate: PASS on the router as it is, FAIL with benches/slow_router.py's added CPU."""
    caught, results = self_test("quick")
    plain, slowed = (r["figures"]["cpu_us_per_signal"] for r in results)
    assert caught, f"cpu_us_per_signal plain={plain} slowed={slowed}"
