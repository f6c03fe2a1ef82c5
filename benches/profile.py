"""Where the router's CPU goes under load: py-spy samples grouped by layer."""

# .venv/bin/pip install py-spy   # once; not a project dependency
# python -m benches.profile [--connections 32] [--seconds 15] [--native] [--raw out.txt]

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benches.measure import drive
from benches.stack import API_KEY, ROUTE_BODY, e2e_stack

# (layer, frame file pattern), first match from the leaf up wins: a sample is charged to the
# innermost layer it was in, so the framework's wrappers only get their own time.
LAYERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("db: asyncpg + psycopg + group-commit writer", r"psycopg|asyncpg|router/store/"),
        (
            "agent call: HTTP client + dispatch",
            r"aiohttp/|yarl/|multidict/|router/dispatch|router/http11_client",
        ),
        ("log line: structlog", r"structlog/|router/logging"),
        ("metrics: prometheus_client", r"prometheus_client/|router/metrics"),
        ("parse + classify: signals, routing, orjson", r"router/signals|router/routing"),
        ("route handler: route.py", r"router/api/|router/app\.py"),
        ("FastAPI + Starlette: routing, middleware", r"fastapi/|starlette/"),
        ("HTTP server: uvicorn + httptools", r"uvicorn/|httptools|router/http_protocol"),
        ("asyncio: tasks, timeouts, locks", r"asyncio/(?!runners)|contextlib|_weakrefset"),
    )
)
LOOP = "event loop: uvloop C code, epoll, syscalls"
# With --native py-spy cannot tell a thread blocked in C from a running one: drop those waits.
_IDLE = re.compile(r"epoll_pwait|epoll_wait|PyThread_acquire_lock_timed|_queue_SimpleQueue_get")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def categorize(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Busy samples per layer and per leaf function (py-spy --format raw), and their total."""
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any(_IDLE.search(frame) for frame in frames[-3:]):
            continue
        total += n
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += n
        layers[_layer_of(frames)] += n
    return layers, leaves, total


def _layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        file = match.group("file") if match else frame
        if file.endswith("asyncio/runners.py"):
            # Reached the loop's own frame without a Python caller: time in uvloop's C code.
            return LOOP
        for name, pattern in LAYERS:
            if pattern.search(file):
                return name
    return LOOP


def report(layers: Counter[str], leaves: Counter[str], total: int, top: int = 15) -> str:
    """Layer shares, then the hottest leaf functions."""
    lines = [f"{total} samples", "share  layer"]
    lines += [f"{n / total:6.1%} {name}" for name, n in layers.most_common()]
    lines += ["", "share  leaf function (self time)"]
    lines += [f"{n / total:6.1%} {name}" for name, n in leaves.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the bench stack, load the router, sample it with py-spy, print the layers."""
    parser = argparse.ArgumentParser(prog="python -m benches.profile", description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--native", action="store_true", help="C frames too (pauses the router)")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, e2e_stack() as stack:
        raw = args.raw or Path(tmp) / "raw.txt"
        router = stack.router()
        try:
            load = threading.Thread(
                target=drive,
                args=(router.url, ROUTE_BODY),
                kwargs={
                    "connections": args.connections,
                    "duration_s": args.seconds + 2,
                    "warmup_s": 1.0,
                    "headers": [f"X-API-Key: {API_KEY}"],
                },
            )
            load.start()
            command = [py_spy, "record", "-p", str(router.proc.pid), "-d", str(int(args.seconds))]
            command += ["-r", str(args.rate), "-f", "raw", "-o", str(raw)]
            command += ["--native"] if args.native else ["--nonblocking"]
            subprocess.run(command, check=True, capture_output=True, timeout=args.seconds + 60)
            load.join()
        finally:
            router.stop()
        print(report(*categorize(raw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
