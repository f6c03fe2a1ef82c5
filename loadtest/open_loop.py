"""Open-loop load: signals sent at a constant arrival rate, whatever the response times.

#     python -m loadtest.open_loop --host http://127.0.0.1:8000 --rate 200 --duration 20

A closed loop (Locust's users, benches.driver's connections) sends the next request only
when the last is answered, so its p50 is connections / throughput (Little's law) and says
more about the load generator than about the router. Here request i is due at start + i/rate
and goes out then on an idle keep-alive connection (a new one when none is idle, up to
--max-connections; beyond that the arrival is recorded as unanswered), whatever the earlier
ones take: no answer ever holds a request back, so a router that falls behind pays for the
queue it caused (what wrk2's correction for coordinated omission is for).

Its latency counts from the moment the generator takes it up, a new connection's set-up
included, not from when it was due: the event loop's timers fire on a 1-ms grid (uvloop) and
on a shared machine the generator's own process wakes late: here, at 20-200 signals/s,
0.1-0.5 ms late at p50 and 1.0-2.3 ms at p99, and up to 1.3 ms early. Charged to the
router, that was up to a tenth of its 5-ms objective. How far behind schedule each request went
out is recorded apart and printed, so a generator that could not keep the rate shows.
Bodies are the documented mix (loadtest.mix). Prints the loadtest.summary verdict (p50 and
p99 objectives, error rate); exit 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import cast

from benches.driver import build_request, take_response
from loadtest.mix import Mix
from loadtest.summary import Recorder, Slo, render, summarize

# A request unanswered this long counts as no answer (status 0): past any router deadline.
REQUEST_TIMEOUT_S = 30.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the answer framed by Content-Length."""

    def __init__(self, done: Callable[[_Connection, int], None]) -> None:
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.ready.set_result(None)

    def send(self, request: bytes) -> None:
        assert self._transport is not None
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            status = take_response(self._buffer)
        except ValueError:
            status = 0  # an answer this generator cannot frame: counted as none
            self.close()
        if status is not None:
            self._done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._done(self, 0)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def run(
    url: str,
    bodies: Callable[[], bytes],
    headers: Sequence[str],
    *,
    rate: float,
    duration_s: float,
    max_connections: int,
) -> Recorder:
    """Send rate x duration requests on schedule; every answer (or its absence) recorded."""
    loop = asyncio.get_running_loop()
    host, port, _ = build_request(url, b"{}", headers)
    recorder = Recorder()
    idle: list[_Connection] = []
    # The request on each busy connection: when the generator took it up.
    taken_at: dict[_Connection, float] = {}
    opened = 0
    outstanding = 0
    finished = asyncio.Event()

    def done(conn: _Connection, status: int) -> None:
        nonlocal outstanding
        taken = taken_at.pop(conn, None)
        if taken is None:
            return  # an idle connection closed by the server
        now = time.monotonic()
        recorder.record(status, (now - taken) * 1000, now)
        outstanding -= 1
        if not conn.lost:
            idle.append(conn)
        if outstanding == 0 and scheduling_done:
            finished.set()

    async def connect() -> _Connection | None:
        nonlocal opened
        if opened >= max_connections:
            return None
        opened += 1
        _, conn = await loop.create_connection(lambda: _Connection(done), host, port)
        await conn.ready
        return conn

    total = int(rate * duration_s)
    scheduling_done = False
    start = time.monotonic() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        taken = time.monotonic()
        recorder.late_ms.append((taken - due) * 1000)
        while idle and idle[-1].lost:
            idle.pop()
        conn = idle.pop() if idle else await connect()
        if conn is None:
            recorder.record(0, 0.0, time.monotonic())  # every connection busy: not sent
            continue
        _, _, request = build_request(url, bodies(), headers)
        taken_at[conn] = taken
        outstanding += 1
        conn.send(request)
    scheduling_done = True
    if outstanding:
        try:
            await asyncio.wait_for(finished.wait(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            now = time.monotonic()
            for taken in taken_at.values():
                recorder.record(0, (now - taken) * 1000, now)
    for conn in [*idle, *taken_at]:
        conn.close()
    return recorder


def drive(
    url: str,
    bodies: Callable[[], bytes],
    headers: Sequence[str],
    *,
    rate: float,
    duration_s: float,
    max_connections: int,
) -> Recorder:
    """`run` on uvloop (the generator's own cost stays a few µs per request)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            run(
                url,
                bodies,
                headers,
                rate=rate,
                duration_s=duration_s,
                max_connections=max_connections,
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one open-loop load and print its summary; 0 on PASS."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.open_loop", description=__doc__)
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=200.0, help="signals per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of sending")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--slo-p50-ms", type=float, default=5.0)
    parser.add_argument("--slo-p99-ms", type=float, default=25.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    key = os.environ.get("API_KEY", "dev-key").split(",")[0].strip()
    mix = Mix()
    recorder = drive(
        f"{args.host.rstrip('/')}/route",
        lambda: mix.next()[1],
        [f"X-API-Key: {key}"],
        rate=args.rate,
        duration_s=args.duration,
        max_connections=args.max_connections,
    )
    summary = summarize(recorder, Slo(p50_ms=args.slo_p50_ms, p99_ms=args.slo_p99_ms))
    if args.json:
        print(json.dumps({"rate": args.rate, **summary.as_dict()}))
    else:
        print(render(summary, f"open-loop load: {args.rate:g} signals/s for {args.duration:g} s"))
    return 0 if summary.passed else 1


if __name__ == "__main__":
    sys.exit(main())
