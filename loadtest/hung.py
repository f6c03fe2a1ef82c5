"""The hung-agent scenario: the same load with no fault, then with one agent hanging, side by side.

#     python -m loadtest.hung [--connections 64] [--seconds 20]

The packaged demo table (timeout 2 s, 3 attempts) on agents of its own; about a tenth of the
connections send `billing` signals, whose `billing` agent is made to hang for the second run
(POST /behaviour {"hang": true}); the rest are `general`. Each run drives the router with
benches.driver (a separate process) and reads what the breaker did from the database. Without
a breaker, every billing signal spent its timeouts and backoff before it was dead-lettered,
and the connections waiting on it took the whole router's throughput down with them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benches.measure import drive
from benches.stack import API_KEY, ROOT, bench_database, start_router
from loadtest.faults import routes_on_free_ports
from router.routing_file import load_routing_table
from tests.support import http_json, wait_http

HUNG_AGENT = "billing"
# One billing body in ten: with the breaker open, those connections go as fast as the rest.
BODIES = [
    {"sender_id": "hung-run", "payload": {"message": "please refund my last payment"}},
    *[{"sender_id": "hung-run", "payload": {"message": "hello there"}}] * 9,
]
LIGHT_CONNECTIONS = 4
CIRCUIT_OPEN = """
SELECT count(*) FILTER (WHERE r->>'error' = 'circuit_open'), count(*)
FROM signal_log, jsonb_array_elements(response) AS r
WHERE kind = 'billing' AND r->>'agent' = 'billing' AND created_at > %s
"""


def _run(url: str, database_url: str, connections: int, seconds: float) -> dict[str, Any]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        (since,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
    phase = drive(
        f"{url}/route",
        [orjson.dumps(body) for body in BODIES],
        connections=connections,
        duration_s=seconds,
        warmup_s=0.0,
        headers=[f"X-API-Key: {API_KEY}"],
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        refused, billing = conn.execute(CIRCUIT_OPEN, (since,)).fetchone() or (0, 0)
    phase["billing_deliveries"] = billing
    phase["circuit_open"] = refused
    phase.update(_by_kind(phase))
    return phase


def _by_kind(phase: dict[str, Any]) -> dict[str, float]:
    """Rate and p99 of the billing connections (body 0) and of the healthy rest."""
    billing, *healthy = phase["bodies"]
    return {
        "billing_rps": billing["rps"],
        "billing_p99_ms": billing["p99_ms"],
        "healthy_rps": sum(one["rps"] for one in healthy),
        "healthy_p99_ms": max(one["p99_ms"] for one in healthy),
    }


def _table(base: dict[str, Any], hung: dict[str, Any]) -> str:
    def statuses(phase: dict[str, Any]) -> str:
        return " ".join(f"{k}:{v}" for k, v in phase["statuses"].items()) or "-"

    def row(name: str, key: str, shown: str = "{:,.1f}") -> tuple[str, str, str, float]:
        a, b = base[key], hung[key]
        return (name, shown.format(a), shown.format(b), b / a if a else float("nan"))

    rows: list[tuple[str, object, object, float | None]] = [
        row("signals/s", "rps", "{:,.0f}"),
        row("  healthy kinds signals/s", "healthy_rps", "{:,.0f}"),
        row("  billing signals/s", "billing_rps", "{:,.0f}"),
        row("p50 ms", "p50_ms"),
        row("p90 ms", "p90_ms"),
        row("p99 ms", "p99_ms"),
        row("  healthy kinds p99 ms", "healthy_p99_ms"),
        row("  billing p99 ms", "billing_p99_ms"),
        ("answers", statuses(base), statuses(hung), None),
        ("transport errors", sum(base["errors"].values()), sum(hung["errors"].values()), None),
        (
            "billing deliveries circuit_open",
            f"{base['circuit_open']} of {base['billing_deliveries']}",
            f"{hung['circuit_open']} of {hung['billing_deliveries']}",
            None,
        ),
    ]
    lines = [f"{'':34}{'no fault':>18}{'billing hung':>18}{'hung / none':>14}"]
    for name, a, b, ratio in rows:
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        lines.append(f"{name:34}{a!s:>18}{b!s:>18}{shown:>14}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides on one stack; the exit code says whether the runs themselves worked."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.hung", description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="router-hung-") as tmp, bench_database() as url:
        routes = routes_on_free_ports(Path(tmp) / "routes.toml")
        table = load_routing_table(routes)
        agents = subprocess.Popen(
            [sys.executable, "-m", "router", "agents", "--routes", str(routes)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for agent in table.agents.values():
                wait_http(agent.urls[0].replace("/handle", "/health"), agents)
            hung_base = table.agents[HUNG_AGENT].urls[0].removesuffix("/handle")
            router = start_router(url, routes, Path(tmp) / "router.log")
            base_url = router.url.removesuffix("/route")
            try:
                print(
                    f"hung-agent scenario: {args.connections} connections, {args.seconds:.0f} s"
                    f" each; 1 in 10 sends {HUNG_AGENT} signals (timeout 2 s, 3 attempts)",
                    flush=True,
                )
                base = _run(base_url, url, args.connections, args.seconds)
                http_json("POST", f"{hung_base}/behaviour", {"hang": True})
                hung = _run(base_url, url, args.connections, args.seconds)
                # At 64 connections every answer queues behind the others; a light load shows
                # what an open breaker itself costs the stuck kind.
                light = _run(base_url, url, LIGHT_CONNECTIONS, args.seconds / 2)
                http_json("POST", f"{hung_base}/behaviour", {"hang": False})
            finally:
                router.stop()
        finally:
            agents.terminate()
            agents.wait(timeout=10)
    print(_table(base, hung), flush=True)
    print(
        f"billing hung, {LIGHT_CONNECTIONS} connections: billing p50 {light['bodies'][0]['p50_ms']}"
        f" ms, p99 {light['billing_p99_ms']} ms ({light['circuit_open']} of"
        f" {light['billing_deliveries']} circuit_open); healthy kinds p99"
        f" {light['healthy_p99_ms']} ms",
        flush=True,
    )
    print(json.dumps({"no_fault": base, "hung": hung, "hung_light": light}), file=sys.stderr)
    return 0 if base["requests"] and hung["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
