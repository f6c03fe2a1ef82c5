"""benches.wrk drives a real router with wrk and reports what it answered, errors included."""

from __future__ import annotations

import psycopg
import pytest

from benches import wrk
from benches.stack import API_KEY, ROUTE_BODY, e2e_stack

pytestmark = pytest.mark.skipif(not wrk.available(), reason="wrk is not installed")


@pytest.mark.timeout(300)
def test_wrk_counts_every_answer_by_status_and_the_servers_cpu() -> None:
    """Routed signals are counted as 200s and their rows are in the log; a wrong key's
    answers are counted as what they are, so a bench that checks statuses sees them."""
    with e2e_stack() as stack:
        router = stack.router()
        try:
            routed = wrk.drive_wrk(
                router.url,
                ROUTE_BODY,
                connections=4,
                duration_s=1,
                warmup_s=0,
                cpu_pids=router.pids,
                cpu_comms=["postgres"],
                headers=[f"X-API-Key: {API_KEY}"],
            )
            refused = wrk.drive_wrk(
                router.url,
                ROUTE_BODY,
                connections=2,
                duration_s=1,
                warmup_s=0,
                headers=["X-API-Key: not-a-key"],
            )
        finally:
            router.stop()
        with psycopg.connect(stack.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM signal_log").fetchone()
    assert routed["requests"] > 50
    assert routed["statuses"] == {"200": routed["requests"]}
    assert routed["errors"] == {}
    assert 0 < routed["p50_ms"] <= routed["p99_ms"]
    assert routed["rps"] == pytest.approx(routed["requests"] / routed["elapsed_s"], rel=0.01)
    assert routed["cpu_s"][0] > 0 and routed["cpu_comm_s"]["postgres"] > 0
    # wrk counts the answers it read; a signal it left in flight at the end was routed too.
    assert row is not None and row[0] >= routed["requests"]
    assert set(refused["statuses"]) == {"401"} and refused["statuses"]["401"] > 50


def test_a_body_that_would_end_lua_quoting_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be quoted"):
        wrk.lua_script(b'{"payload": "]==]"}', [])
    script = wrk.lua_script(ROUTE_BODY, ["X-API-Key: k"])
    assert f"wrk.body = [==[{ROUTE_BODY.decode()}]==]" in script
    assert "wrk.headers[ [==[X-API-Key]==] ] = [==[k]==]" in script
