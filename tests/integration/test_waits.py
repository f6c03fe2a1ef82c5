"""benches.waits reads where signals wait off a real router: every signal counted on both lanes."""

from __future__ import annotations

import pytest

from benches.stack import e2e_stack
from benches.waits import LANES, measure, report


@pytest.mark.timeout(300)
def test_a_window_accounts_for_every_signal_on_both_lanes() -> None:
    """Each signal answered in the window is one claim row and one outcome row, and one
    commit of each lane plus the agent attempts fit inside the router's own mean latency."""
    with e2e_stack() as stack:
        router = stack.router()
        try:
            waits = measure(router, connections=4, seconds=2.0)
        finally:
            router.stop()
    assert waits.signals > 100
    assert waits.unrecorded == {"claim": 0, "outcome": 0}
    for name in LANES:
        lane = waits.lanes[name]
        # Batched: never more commits than rows, and some commit in the window.
        assert 0 < lane.commits <= lane.rows
        assert 0 < lane.commit_ms < waits.latency_ms
        assert 0 < lane.busy < 1
    assert 0 < waits.agent_ms < waits.latency_ms
    assert waits.rest_ms > 0
    assert waits.router_cpu_us > 0 and waits.database_cpu_us > 0
    assert sum(waits.machine.values()) == pytest.approx(1.0)
    text = report(waits, 4)
    assert "one claim commit" in text and "one outcome commit" in text
