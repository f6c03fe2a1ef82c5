"""GET /stats against real router processes and PostgreSQL: exact counts, merged percentiles."""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from router.store.stats import BOUNDS_MS
from tests.support import (
    ADMIN_KEY,
    API_KEY,
    ROOT,
    AgentProcess,
    received_by_worker,
    serve_workers,
    start_router,
)

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "router.json"
RAW = """
SELECT s.kind, r->>'agent', count(*), count(*) FILTER (WHERE NOT (r->>'ok')::boolean),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY (r->>'latency_ms')::float8),
       min(date_trunc('minute', s.created_at)), max(date_trunc('minute', s.created_at))
FROM signal_log AS s, jsonb_array_elements(s.response) AS r
GROUP BY 1, 2
"""


def _post(base: str, path: str, body: Any = None, key: str = API_KEY) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-API-Key", key)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _bucket_width(value_ms: float) -> float:
    i = bisect.bisect_left(BOUNDS_MS, value_ms)
    return BOUNDS_MS[i] - (BOUNDS_MS[i - 1] if i else 0.0)


def _wait_for_a_fresh_minute() -> None:
    """Start a burst early in a minute, so it cannot straddle two."""
    second = datetime.now(UTC).second
    if second > 40:
        time.sleep(61 - second)


def test_two_workers_count_exactly_and_agree_with_the_raw_log(
    database_url: str,
    routes_file: Path,
    fresh_agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    """Signals of two kinds over `--workers 2`: /stats counts each kind's deliveries per agent
    exactly, errors included, and its p95 is within one bucket of the log's own percentile."""
    fresh_agents["alpha"].behave(latency_ms=3)
    fresh_agents["beta"].behave(fail_rate=0.3, seed=7)
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    sent = {"solo": 150, "pair": 90}
    with serve_workers(database_url, routes_file, prom_dir, STATS_FLUSH_S="0.5") as (base, _):
        _wait_for_a_fresh_minute()
        bodies = [
            {"sender_id": "stats", "payload": {"text": f"{kind} {n}"}}
            for kind, count in sent.items()
            for n in range(count)
        ]
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda body: _post(base, "/route", body)[0], bodies))
        assert set(statuses) <= {200, 202}
        by_worker = received_by_worker(prom_dir, tmp_path / "scratch")
        assert len([n for n in by_worker.values() if n]) == 2, by_worker  # both served
        time.sleep(1.5)  # each worker flushed
        _, page = _post(base, "/stats", key=ADMIN_KEY)

    rows = {(r["kind"], r["agent"]): r for r in page["items"]}
    assert set(rows) == {("solo", "alpha"), ("pair", "alpha"), ("pair", "beta")}
    with psycopg.connect(database_url, autocommit=True) as conn:
        raw = conn.execute(RAW).fetchall()
    assert {(kind, agent) for kind, agent, *_ in raw} == set(rows)
    for kind, agent, count, errors, p95, first_minute, last_minute in raw:
        row = rows[(kind, agent)]
        assert row["count"] == count == sent[kind], row
        assert row["errors"] == errors, row
        assert first_minute == last_minute  # one minute, as /stats says
        assert datetime.fromisoformat(row["minute"]) == first_minute
        assert p95 <= row["p95_ms"] <= p95 + _bucket_width(p95), (row, p95)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert rows[("pair", "beta")]["errors"] > 0

    # The dashboard's PostgreSQL panels read the same rows: same p95, same counts.
    panels = _panel_queries(database_url)
    p95 = {
        metric: value for _, metric, value in panels["Delivery p95 per minute by kind and agent"]
    }
    assert p95 == {f"{k} / {a}": r["p95_ms"] for (k, a), r in rows.items()}
    counts = panels["Deliveries and errors per minute by kind and agent"]
    assert {m: (n, e) for _, m, n, e in counts} == {
        f"{k} / {a}": (r["count"], r["errors"]) for (k, a), r in rows.items()
    }


def _panel_queries(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each PostgreSQL panel's rows, its $__timeFilter as Grafana expands it (the last hour)."""
    results = {}
    dashboard = json.loads(DASHBOARD.read_text())
    with psycopg.connect(database_url, autocommit=True) as conn:
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    sql = re.sub(
                        r"\$__timeFilter\((\w+)\)",
                        r"\1 BETWEEN now() - interval '1 hour' AND now()",
                        target["rawSql"],
                    )
                    results[panel["title"]] = conn.execute(sql).fetchall()
    return results


@pytest.mark.asyncio
async def test_shutdown_flushes_and_retention_drops_old_minutes(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """A stop writes what was counted since the last flush; rows past STATS_RETENTION go, the
    rest stay."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for minute, kind in ((now - timedelta(days=31), "old"), (now - timedelta(days=29), "kept")):
            conn.execute(
                "INSERT INTO latency_stats VALUES (%s, %s, 'alpha', 1, 0, 1.0, %s)",
                (minute, kind, [1] + [0] * (len(BOUNDS_MS) - 1)),
            )
    async with start_router(database_url, routes_file) as router:  # flushes once a minute
        for n in range(5):
            assert (await router.route({"sender_id": "s", "payload": {"text": f"solo {n}"}}))[
                0
            ] == 200
        assert router.query("SELECT count(*) FROM latency_stats WHERE kind = 'solo'") == [(0,)]
    rows = router.query("SELECT kind, count FROM latency_stats ORDER BY kind")
    assert ("solo", 5) in rows

    async with start_router(database_url, routes_file, stats_flush_s=0.2) as router:
        await asyncio.sleep(0.6)
        kinds = {kind for (kind,) in router.query("SELECT kind FROM latency_stats")}
        status, page = await router.get("/stats?kind=kept")
    assert kinds == {"kept", "solo"}
    assert status == 200 and [r["count"] for r in page["items"]] == [1]
    assert page["items"][0]["p50_ms"] == BOUNDS_MS[0]


def test_the_sql_quantile_uses_the_routers_bucket_bounds(database_url: str) -> None:
    """latency_stats_quantile (SQL) and BOUNDS_MS (Python) name the same bucket bounds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i in (0, 1, 7, 40, len(BOUNDS_MS) - 1):
            buckets = [0] * len(BOUNDS_MS)
            buckets[i] = 3
            row = conn.execute("SELECT latency_stats_quantile(%s, 0.5)", (buckets,)).fetchone()
            assert row == (BOUNDS_MS[i],), i
        empty = conn.execute("SELECT latency_stats_quantile(%s, 0.5)", ([0, 0],)).fetchone()
        assert empty == (None,)
