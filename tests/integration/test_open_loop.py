"""The open-loop generator against a real HTTP server: arrivals keep their schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from loadtest.open_loop import run
from loadtest.summary import Recorder, Slo, render, summarize
from tests.support import free_port


async def _load(
    handler: Callable[[web.Request], Awaitable[web.Response]], *, rate: float, duration_s: float
) -> Recorder:
    """The generator against `handler` served over loopback by aiohttp, in this loop."""
    app = web.Application()
    app.router.add_post("/route", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await run(
            f"http://127.0.0.1:{port}/route",
            lambda: b"{}",
            [],
            rate=rate,
            duration_s=duration_s,
            max_connections=64,
        )
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_arrivals_keep_the_rate_whatever_the_answers_take() -> None:
    """100/s for 1 s against a server taking 50 ms: every request is sent on schedule, about
    five overlap (a closed loop of one connection would have one), and each latency counts
    the server's 50 ms."""
    in_flight = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({"ok": True})

    recorder = await _load(slow, rate=100, duration_s=1.0)
    summary = summarize(recorder)
    assert summary.statuses == {200: 100}
    assert summary.elapsed_s >= 1.0  # the last was due at 0.99 s and took 50 ms
    assert summary.p50_ms >= 50.0
    assert peak >= 4
    assert len(recorder.late_ms) == 100


@pytest.mark.asyncio
async def test_the_generators_own_lag_is_reported_not_charged_to_the_server() -> None:
    """The generator's loop held up for 80 ms mid-run (as a busy machine does to it): the
    requests due meanwhile go out late, and that shows as lateness, not as their latency;
    counted from when they were due, they would each have taken 45 ms or more."""

    async def immediate(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    asyncio.get_running_loop().call_later(0.25, time.sleep, 0.08)
    recorder = await _load(immediate, rate=100, duration_s=0.6)
    summary = summarize(recorder)
    assert summary.statuses == {200: 60}
    assert sum(late >= 45.0 for late in recorder.late_ms) >= 3
    # At most the one request the hold-up may have caught in flight.
    assert sum(latency >= 45.0 for latency in recorder.latencies_ms) <= 1
    assert summary.late_p99_ms >= 45.0
    assert "the generator fell behind" in render(summary)


def test_a_generator_on_schedule_says_so_and_a_closed_loop_has_no_schedule() -> None:
    """Lateness is printed with the figures; the warning only past BEHIND_SCHEDULE_MS; runs
    that keep no schedule (Locust's closed loop) report null, not NaN, in JSON."""
    recorder = Recorder(late_ms=[0.2] * 98 + [1.4] * 2)
    for i in range(100):
        recorder.record(200, 2.0, float(i))
    text = render(summarize(recorder))
    assert "p50 0.20  p99 1.40 ms behind schedule" in text
    assert "fell behind" not in text
    closed = Recorder()
    closed.record(200, 2.0, 1.0)
    figures = summarize(closed).as_dict()
    assert figures["late_p50_ms"] is None and figures["late_p99_ms"] is None
    assert "behind schedule" not in render(summarize(closed))


def test_the_p99_objective_fails_a_run_that_meets_only_p50() -> None:
    """Two answers in 100 at 30 ms: p50 holds, p99 (nearest rank: the 99th) does not."""
    recorder = Recorder()
    for i in range(100):
        recorder.record(200, 30.0 if i >= 98 else 2.0, float(i))
    assert summarize(recorder, Slo(p50_ms=5.0)).passed
    failed = summarize(recorder, Slo(p50_ms=5.0, p99_ms=25.0))
    assert not failed.passed and failed.p99_ms == 30.0
