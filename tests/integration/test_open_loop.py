"""The open-loop generator against a real HTTP server: arrivals keep their schedule."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from loadtest.open_loop import run
from loadtest.summary import Recorder, Slo, summarize
from tests.support import free_port


@pytest.mark.asyncio
async def test_arrivals_keep_the_rate_whatever_the_answers_take() -> None:
    """100/s for 1 s against a server taking 50 ms: every request is sent on schedule, about
    five overlap (a closed loop of one connection would have one), and each latency counts
    from when it was due."""
    in_flight = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/route", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        recorder = await run(
            f"http://127.0.0.1:{port}/route",
            lambda: b"{}",
            [],
            rate=100,
            duration_s=1.0,
            max_connections=64,
        )
    finally:
        await runner.cleanup()
    summary = summarize(recorder)
    assert summary.statuses == {200: 100}
    assert summary.elapsed_s >= 1.0  # the last was due at 0.99 s and took 50 ms
    assert summary.p50_ms >= 50.0
    assert peak >= 4


def test_the_p99_objective_fails_a_run_that_meets_only_p50() -> None:
    """Two answers in 100 at 30 ms: p50 holds, p99 (nearest rank: the 99th) does not."""
    recorder = Recorder()
    for i in range(100):
        recorder.record(200, 30.0 if i >= 98 else 2.0, float(i))
    assert summarize(recorder, Slo(p50_ms=5.0)).passed
    failed = summarize(recorder, Slo(p50_ms=5.0, p99_ms=25.0))
    assert not failed.passed and failed.p99_ms == 30.0
