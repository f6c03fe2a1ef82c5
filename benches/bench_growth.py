"""Cost as the log grows: the same load on an empty signal_log and on one of N rows.

#     python -m benches.bench_growth [--rows 5000000] [--seconds 10] [--rounds 3]

One stack (benches.stack: the bench agent, the router) and two migrated databases on one
PostgreSQL: one left empty, one filled with realistic rows (the mix's payload sizes, agents'
responses, 1 % partial with a DLQ entry, spread over the last 14 days, as INSERT … SELECT
generate_series: minutes, not hours). benches.driver loads a fresh router on each in turn,
empty then full, for --rounds rounds, and the medians are compared, so the machine's noise
falls on both sides. Reports router CPU per signal, signals/s and p50/p99, and what the load
itself wrote: heap and index bytes and WAL bytes per signal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benches.measure import Phase, _router_phase
from benches.stack import Stack, bench_database, e2e_stack
from router.store import partitions

FILL = """
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, metadata, routed_agents,
                        response, trace_id, attempts, latency_ms, payload_hash, created_at,
                        updated_at)
SELECT 'fill-' || g, 'sender-' || (g %% 50000),
       (ARRAY['policy_question', 'urgent', 'billing', 'general'])[1 + g %% 4],
       CASE WHEN g %% 100 = 0 THEN 'partial' ELSE 'delivered' END, 'all',
       jsonb_build_object('message', 'help me understand the policy on shared accounts',
                          'ref', 'fill-' || g, 'pad', repeat('x', 120 + g %% 200)),
       NULL, '["bench"]',
       jsonb_build_array(jsonb_build_object('agent', 'bench', 'ok', g %% 100 <> 0,
         'status_code', CASE WHEN g %% 100 = 0 THEN 503 ELSE 200 END, 'attempts', 1,
         'latency_ms', 1.2, 'response', jsonb_build_object('received', g), 'error', NULL)),
       md5(g::text), 1, 3.4, md5(g::text),
       now() - (g %% 1209600) * interval '1 second', now() - (g %% 1209600) * interval '1 second'
FROM generate_series(%(start)s::int, %(stop)s::int) AS g
"""
FILL_DLQ = """
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, trace_id, last_error, status,
                 created_at, closed_at)
SELECT log_id, sender_id, kind, '["bench"]', 'all', payload, payload_hash, 'bench: HTTP 503',
       'resolved', created_at, created_at
FROM signal_log WHERE status = 'partial' AND log_id LIKE 'fill-%%'
"""
# The tables are partitioned: their sizes are the sums over their leaf partitions.
SIZES = """
SELECT (SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('signal_log')),
       (SELECT sum(pg_indexes_size(relid)) FROM pg_partition_tree('signal_log')),
       (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('dlq')),
       (SELECT count(*) FROM signal_log)
"""
# The fill's rows reach 14 days back: partitions for those days (a live router makes only
# today's and the days ahead).
FILL_DAYS = 15


def _sizes(url: str) -> tuple[int, int, int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(SIZES).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _wal(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def _measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    before = _sizes(stack.database_url)
    wal_before = _wal(stack.database_url)
    router = stack.router()
    try:
        phase: Phase = _router_phase(router, args.connections, args.seconds, 2.0)
    finally:
        router.stop()
    after = _sizes(stack.database_url)
    signals = after[3] - before[3]
    return {
        "rows_before": before[3],
        "cpu_us_per_signal": round(phase["cpu_us_per_signal"], 1),
        "rps": phase["rps"],
        "p50_ms": phase["p50_ms"],
        "p99_ms": phase["p99_ms"],
        "signals": signals,
        "heap_bytes_per_signal": round((after[0] - before[0]) / max(signals, 1)),
        "index_bytes_per_signal": round((after[1] - before[1]) / max(signals, 1)),
        "wal_bytes_per_signal": round((_wal(stack.database_url) - wal_before) / max(signals, 1)),
    }


async def _past_partitions(url: str) -> None:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(FILL_DAYS, 0, -1)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for parent in partitions.PARENTS:
            await partitions.create_days(conn, parent, days)


def _fill(url: str, rows: int) -> float:
    started = time.monotonic()
    asyncio.run(_past_partitions(url))
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(1, rows + 1, 500_000):
            stop = min(rows, start + 499_999)
            conn.execute(FILL, {"start": start, "stop": stop})
            print(f"  filled {stop:,} rows", file=sys.stderr, flush=True)
        conn.execute(FILL_DLQ)
        conn.execute("VACUUM ANALYZE signal_log")
        conn.execute("VACUUM ANALYZE dlq")
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Fill one database, keep one empty, measure them in alternation; print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benches.bench_growth", description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    with e2e_stack() as empty_stack, bench_database() as full_url:
        fill_s = _fill(full_url, args.rows)
        table, indexes, dlq, count = _sizes(full_url)
        full_stack = dataclasses.replace(empty_stack, database_url=full_url)
        # Alternating rounds, so a noisy neighbour's minute falls on both sides alike.
        rounds: dict[str, list[dict[str, Any]]] = {"empty": [], "full": []}
        for _ in range(args.rounds):
            rounds["empty"].append(_measure(empty_stack, args))
            rounds["full"].append(_measure(full_stack, args))
    print(
        f"filled {args.rows:,} rows in {fill_s:.0f} s: signal_log {table / 2**30:.2f} GiB heap"
        f" + {indexes / 2**30:.2f} GiB indexes ({(table + indexes) / count:.0f} B a row), dlq"
        f" {dlq / 2**20:.0f} MiB"
    )
    keys = ("cpu_us_per_signal", "rps", "p50_ms", "p99_ms", "heap_bytes_per_signal",
            "index_bytes_per_signal", "wal_bytes_per_signal")  # fmt: skip
    print(f"medians of {args.rounds} alternating rounds of {args.seconds:g} s each")
    print(f"{'':26}{'empty log':>14}{f'{count:,} rows':>16}{'full / empty':>14}")
    for key in keys:
        a = round(statistics.median(r[key] for r in rounds["empty"]), 1)
        b = round(statistics.median(r[key] for r in rounds["full"]), 1)
        print(f"{key:26}{a:>14,}{b:>16,}{(b / a if a else float('nan')):>13.2f}x")
    print(json.dumps(rounds), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
