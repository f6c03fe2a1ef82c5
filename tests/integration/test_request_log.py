"""The per-signal log line of a real router process: JSON, its fields, and no whole payload."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import API_KEY, ROOT, AgentProcess, free_port, router_env, wait_http

SECRET = "do-not-log-this-secret-text"


def test_signal_line_carries_trace_and_outcome_not_payload(
    database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess], tmp_path: Path
) -> None:
    """One JSON line per signal with trace_id (= the forwarded traceparent's), log_id, kind,
    status and latency_ms; the payload's text never appears in the log."""
    port = free_port()
    log_path = tmp_path / "router.log"
    env = router_env(database_url, routes_file, LOG_LEVEL="info", LOG_FORMAT="json")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stderr=log_file,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc)
            body = {
                "sender_id": "u",
                "log_id": "logged-1",
                "payload": {"message": f"solo {SECRET}"},
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/route",
                data=json.dumps(body).encode(),
                headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            bad = urllib.request.Request(
                f"http://127.0.0.1:{port}/route", data=b"{", headers={"X-API-Key": API_KEY}
            )
            try:
                urllib.request.urlopen(bad, timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 400
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    text = log_path.read_text()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    signals = [line for line in lines if line.get("event") == "signal"]
    assert len(signals) == 2
    ok, rejected = signals
    [received] = fresh_agents["alpha"].requests()
    assert ok["trace_id"] == answer["trace_id"] == received["traceparent"].split("-")[1]
    assert ok["log_id"] == "logged-1" and ok["kind"] == "solo"
    assert ok["status"] == "delivered" and ok["http_status"] == 200
    assert 0 < ok["latency_ms"] < 10_000
    assert rejected["status"] == "rejected" and rejected["error"] == "invalid_json"
    assert rejected["http_status"] == 400
    # The same envelope as every structlog line of the file (written by another path).
    others = [line for line in lines if line.get("event") != "signal"]
    assert others, lines
    iso_utc = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"  # isoformat drops .000000
    for line in [*signals, others[0]]:
        assert re.fullmatch(iso_utc, line["timestamp"]), line
        assert line["level"] in ("info", "warning"), line
