"""benches.layers drives the real route path in process, with exactly the layers it names."""

from __future__ import annotations

import psycopg
import pytest

from benches.layers import WARMUP_SIGNALS, run_variant
from benches.stack import e2e_stack


def _rows(database_url: str) -> tuple[int, int]:
    """Rows in the log, and how many of them are delivered (their outcome written)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered') FROM signal_log"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.timeout(300)
def test_a_variant_routes_every_signal_through_the_layers_it_keeps() -> None:
    """As shipped, every signal (warm-up included) is answered 200 and leaves a delivered row;
    with the database answered at once, the same drive leaves no row at all."""
    with e2e_stack() as stack:
        ablated = run_variant(stack, ("database", "agent"), 320)
        assert _rows(stack.database_url) == (0, 0)
        shipped = run_variant(stack, (), 320)
        stored = WARMUP_SIGNALS + shipped.signals
        assert _rows(stack.database_url) == (stored, stored)
    for run in (ablated, shipped):
        assert run.signals == 320
        assert run.statuses == {"200": 320}
        assert run.cpu_us > 0 and run.rate > 0
    # The lanes and the agent exchange cost the router's process something.
    assert shipped.cpu_us > ablated.cpu_us
    assert shipped.database_cpu_us > 0
