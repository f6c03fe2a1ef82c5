"""The agent client alone: CPU per POST of router.http11_client against aiohttp, alternated.

#     python -m benches.bench_client [--posts 20000] [--concurrency 32] [--rounds 3]

Both clients POST the router's forwarded body with the dispatcher's headers to the trivial
uvicorn app of benches.baseline_app (a cheap server, so the client is what is measured), from
one uvloop loop in this process; CPU is this process's user+sys time over the round. aiohttp
is configured as the router's client was (no connection limit, 4 s keep-alive, no cookies,
a parsed URL, one ClientTimeout).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import orjson
import uvloop
from yarl import URL

from benches.stack import start_baseline
from router.agent_client import KEEPALIVE_S
from router.http11_client import Http11Client

BODY = orjson.dumps(
    {
        "log_id": "0123456789abcdef0123456789abcdef",
        "sender_id": "bench-user",
        "kind": "policy_question",
        "payload": {"message": "what does the policy say about refunds? " * 4},
        "metadata": None,
        "timestamp": None,
    }
)
HEADERS = {
    "Content-Type": "application/json",
    "Idempotency-Key": "0123456789abcdef0123456789abcdef",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}
Post = Callable[[], Awaitable[int]]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(post: Post, posts: int, concurrency: int) -> tuple[float, float]:
    """(µs of CPU per POST, POSTs per second)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            if await post() != 200:
                raise RuntimeError("the server did not answer 200")

    await asyncio.gather(*(worker(20) for _ in range(concurrency)))  # connections, caches
    cpu, wall = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker(posts // concurrency) for _ in range(concurrency)))
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    return cpu / posts * 1e6, posts / wall


async def _measure(url: str, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    ours = Http11Client()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=KEEPALIVE_S),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )
    parsed, timeout = URL(url), aiohttp.ClientTimeout(total=5.0)

    async def http11() -> int:
        return (await ours.post(url, BODY, HEADERS, 5.0)).status

    async def with_aiohttp() -> int:
        async with session.post(
            parsed, data=BODY, headers=HEADERS, timeout=timeout, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp.status

    results: dict[str, list[tuple[float, float]]] = {"http11_client": [], "aiohttp": []}
    try:
        for _ in range(args.rounds):
            for name, post in (("aiohttp", with_aiohttp), ("http11_client", http11)):
                results[name].append(await _round(post, args.posts, args.concurrency))
    finally:
        await ours.close()
        await session.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the two clients for --rounds rounds; print medians."""
    parser = argparse.ArgumentParser(prog="python -m benches.bench_client", description=__doc__)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    server = start_baseline()
    try:
        results = uvloop.run(_measure(server.url, args))
    finally:
        server.stop()
    print(f"{args.rounds} alternating rounds of {args.posts:,} POSTs, {args.concurrency} at once")
    print(f"{'client':16}{'CPU µs/POST':>14}{'POSTs/s':>12}")
    for name, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds)
        rate = statistics.median(r[1] for r in rounds)
        print(f"{name:16}{cpu:>14.1f}{rate:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
