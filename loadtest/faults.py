"""The faults scenario: the load mix against a router whose agents fail 30 % of attempts."""

#     make load-faults N=1000 USERS=32
#     python -m loadtest.faults --signals 1000 --users 32 [--fail-rate 0.3 --latency-ms 2]
#
# Starts its own stack on free ports so it never disturbs `make dev`: a database of its own
# (on DATABASE_URL's server, else the embedded one; dropped afterwards), the demo table's agents
# as `router agents --fail-rate 0.3 --latency-ms 2`, and `router serve` on them. Then runs the
# Locust mix (SCENARIO=faults) and reports how far the DLQ filled. What it shows: retries absorb
# most failures, the rest is dead-lettered (202, not an error), and the router keeps its latency.

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from benches.stack import API_KEY, ROOT, bench_database, start_router
from router.routing_file import load_routing_table
from tests.support import free_port, wait_http

DEMO_PORTS = ("9101", "9102", "9103")


def _metric(base: str, name: str) -> float:
    """The sum of every sample of one metric on /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def routes_on_free_ports(path: Path) -> Path:
    """The packaged demo table with its agents moved to free ports."""
    text = (ROOT / "router" / "routes.toml").read_text()
    for port in DEMO_PORTS:
        text = text.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{free_port()}/")
    path.write_text(text)
    load_routing_table(path)  # fail here, clearly, if the substitution broke the table
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario; the exit code is Locust's (1 when the SLO failed)."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__)
    parser.add_argument("--signals", type=int, default=1000)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--fail-rate", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="router-faults-") as tmp, bench_database() as url:
        routes = routes_on_free_ports(Path(tmp) / "routes.toml")
        agents = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router",
                "agents",
                "--routes",
                str(routes),
                "--fail-rate",
                str(args.fail_rate),
                "--latency-ms",
                str(args.latency_ms),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for agent in load_routing_table(routes).agents.values():
                wait_http(agent.urls[0].replace("/handle", "/health"), agents)
            router = start_router(url, routes, Path(tmp) / "router.log")
            base = router.url.removesuffix("/route")
            try:
                dlq_before = _metric(base, "dlq_total")
                print(
                    f"faults scenario: agents fail {args.fail_rate:.0%} of attempts"
                    f" (+{args.latency_ms} ms each), router {base}, {args.signals} signals"
                    f" from {args.users} users",
                    flush=True,
                )
                env = dict(os.environ, API_KEY=API_KEY, SCENARIO="faults")
                locust = subprocess.run(
                    [
                        str(Path(sys.executable).with_name("locust")),
                        "-f",
                        str(ROOT / "loadtest" / "locustfile.py"),
                        "--headless",
                        "--users",
                        str(args.users),
                        "--spawn-rate",
                        str(args.users),
                        "--host",
                        base,
                        "--signals",
                        str(args.signals),
                        "--only-summary",
                        "--loglevel",
                        "WARNING",
                    ],
                    cwd=ROOT,
                    env=env,
                    check=False,
                )
                added = _metric(base, "dlq_total") - dlq_before
                retries = _metric(base, "retry_attempts_total")
                print(
                    f"DLQ: {added:.0f} signals dead-lettered or partial during the run;"
                    f" {retries:.0f} retried attempts; backlog {_metric(base, 'dlq_backlog'):.0f}"
                    " (replay with `router replay-dlq` once the agents are healthy)",
                    flush=True,
                )
                return locust.returncode
            finally:
                router.stop()
        finally:
            agents.terminate()
            agents.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
