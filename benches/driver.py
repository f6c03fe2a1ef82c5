"""A closed-loop HTTP/1.1 load driver, run as its own process so its CPU is not the server's."""

# Each connection sends one pre-built POST, waits for the whole answer, sends the next. Raw
# asyncio protocols on uvloop keep the driver's own cost to a few µs per request, far below
# aiohttp's client, so on a two-core machine it leaves the server most of a core.
#
#     python -m benches.driver --url http://127.0.0.1:8000/route --connections 32 \
#         --duration 5 --warmup 1 --body '{"sender_id": ...}' --header 'X-API-Key: k' \
#         --cpu-pid 1234 --cpu-comm postgres
#
# prints one JSON object: requests, rps, latency percentiles (ms), statuses, and the CPU
# seconds the processes named by --cpu-pid used during the measured window; with --cpu-comm,
# also what every process of that command name used (a local PostgreSQL's backends, which
# come and go, so no pid can name them).

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> tuple[str, float]:
    """The command name and user + system CPU seconds of every thread of `pid`, from
    /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name is in parentheses and may hold spaces: the fields we want follow it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
    return comm, (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of `pid`."""
    return _stat(pid)[1]


def command_cpu_s(comm: str) -> dict[int, float]:
    """CPU seconds of every process whose command name is `comm`, by pid (empty: none runs)."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name, cpu_s = _stat(entry)
        except OSError:
            continue  # exited since the listing
        if name == comm:
            found[int(entry)] = cpu_s
    return found


def used_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings of command_cpu_s: a process started meanwhile
    counts whole; one that exited meanwhile is missed (its last reading is gone)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class _Shared:
    """State every connection of one run writes into."""

    measuring: bool = False
    stopping: bool = False
    remaining: int | None = None
    latencies: list[float] = field(default_factory=list)
    # One list per body, so a mix can report each kind's own latency (loadtest.hung does).
    by_body: list[list[float]] = field(default_factory=list)
    # (answered at, latency) of every measured request, when asked for (benches.bench_balance).
    started: float = 0.0
    timeline: list[tuple[float, float]] | None = None
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending `request` again as soon as each answer is complete."""

    def __init__(
        self, request: bytes, body: int, shared: _Shared, closed: asyncio.Future[None]
    ) -> None:
        self._request = request
        self._body = body
        self._shared = shared
        self._closed = closed
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._sent_at = 0.0
        self._sent_measuring = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        shared = self._shared
        if shared.stopping:
            self._close()
            return
        if shared.measuring and shared.remaining is not None:
            if shared.remaining <= 0:
                self._close()
                return
            shared.remaining -= 1
        self._sent_at = time.perf_counter()
        # Only requests sent inside the window count: warm-up ones answered late are left out.
        self._sent_measuring = shared.measuring
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            status = take_response(self._buffer)
        except ValueError as exc:
            self._fail(str(exc))
            return
        if status is None:
            return
        elapsed = time.perf_counter() - self._sent_at
        shared = self._shared
        if shared.measuring and self._sent_measuring:
            shared.latencies.append(elapsed)
            shared.by_body[self._body].append(elapsed)
            if shared.timeline is not None:
                shared.timeline.append((self._sent_at + elapsed - shared.started, elapsed))
            shared.statuses[status] += 1
        self._send()

    def _fail(self, reason: str) -> None:
        self._shared.errors[reason] += 1
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            # A connection the server dropped mid-run stops sending: the run is short of it.
            self._shared.errors[type(exc).__name__ if exc else "closed by server"] += 1
        if not self._closed.done():
            self._closed.set_result(None)


def take_response(buffer: bytearray) -> int | None:
    """The status of the whole answer at the start of `buffer`, removed from it; None while it
    is incomplete. ValueError without Content-Length: every server measured here sets it, and
    chunked answers are not supported."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(b"content-length:")
    if start < 0:
        raise ValueError("no content-length")
    stop = head.find(b"\r\n", start)
    total = end + 4 + int(head[start + 15 : stop if stop >= 0 else len(head)])
    if len(buffer) < total:
        return None
    del buffer[:total]
    return int(head[9:12])


def build_request(url: str, body: bytes, headers: Sequence[str]) -> tuple[str, int, bytes]:
    """Host, port and the raw bytes of the POST sent again and again."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(
    url: str,
    bodies: Sequence[bytes],
    headers: Sequence[str],
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    requests: int | None,
    cpu_pids: Sequence[int],
    cpu_comms: Sequence[str] = (),
    timeline: bool = False,
) -> dict[str, Any]:
    """Drive `url` and return the measured window's figures; connection i sends body i mod n."""
    built = [build_request(url, body, headers) for body in bodies]
    host, port, _ = built[0]
    loop = asyncio.get_running_loop()
    shared = _Shared(
        remaining=requests, by_body=[[] for _ in built], timeline=[] if timeline else None
    )
    closed: list[asyncio.Future[None]] = []
    for i in range(connections):
        body = i % len(built)
        future: asyncio.Future[None] = loop.create_future()
        closed.append(future)
        await loop.create_connection(
            lambda f=future, b=body: _Connection(built[b][2], b, shared, f),  # type: ignore[misc]
            host,
            port,
        )
    await asyncio.sleep(warmup_s)
    cpu_before = [process_cpu_s(pid) for pid in cpu_pids]
    comms_before = [command_cpu_s(comm) for comm in cpu_comms]
    started = shared.started = time.perf_counter()
    shared.measuring = True
    if requests is None:
        await asyncio.sleep(duration_s)
    else:
        await asyncio.wait(closed, timeout=duration_s)
    shared.measuring = False
    elapsed = time.perf_counter() - started
    cpu_after = [process_cpu_s(pid) for pid in cpu_pids]
    comms_after = [command_cpu_s(comm) for comm in cpu_comms]
    shared.stopping = True
    await asyncio.wait(closed, timeout=5)

    latencies = sorted(shared.latencies)
    count = len(latencies)
    cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    return {
        "url": url,
        "connections": connections,
        "requests": count,
        "elapsed_s": round(elapsed, 3),
        "rps": round(count / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else float("nan"),
        "statuses": {str(k): v for k, v in sorted(shared.statuses.items())},
        "errors": dict(shared.errors),
        "cpu_s": [round(c, 3) for c in cpu],
        "cpu_us_per_request": [round(c / count * 1e6, 1) if count else None for c in cpu],
        # None: no process of that name was seen (the database runs elsewhere).
        "cpu_comm_s": {
            comm: round(used_between(before, after), 3) if before or after else None
            for comm, before, after in zip(cpu_comms, comms_before, comms_after, strict=True)
        },
        "bodies": [_figures(sorted(one), elapsed) for one in shared.by_body],
        **({} if shared.timeline is None else {"timeline": shared.timeline}),
    }


def _figures(latencies: Sequence[float], elapsed: float) -> dict[str, float]:
    """Count, rate and percentiles of one body's sorted latencies."""
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.driver", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (cap)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--requests", type=int, help="stop after this many measured requests")
    parser.add_argument(
        "--body",
        action="append",
        help="the JSON body each connection sends; given n times, connection i sends the i mod n",
    )
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[])
    parser.add_argument(
        "--cpu-comm",
        action="append",
        default=[],
        help="also the CPU of every process with this command name (e.g. postgres)",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="add [answered at s, latency s] of every request"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the driver and print its JSON result."""
    args = _parser().parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # the stdlib loop works, it only costs the driver more CPU
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(
            run(
                args.url,
                [body.encode() for body in args.body or ["{}"]],
                args.header,
                connections=args.connections,
                duration_s=args.duration,
                warmup_s=args.warmup,
                requests=args.requests,
                cpu_pids=args.cpu_pid,
                cpu_comms=args.cpu_comm,
                timeline=args.timeline,
            )
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
