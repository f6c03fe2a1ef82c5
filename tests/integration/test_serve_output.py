"""`router serve` as operators run it: every answer JSON, even to what is not HTTP, and every
line on stderr one JSON object with LOG_FORMAT=json."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, free_port, router_env, wait_http

# What uvicorn's parser refuses before any app sees it.
MALFORMED = {
    "nul_in_header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Trace: a\x00b\r\n\r\n",
    "garbage_request_line": b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n",
    "no_method": b"/health HTTP/1.1\r\nHost: x\r\n\r\n",
}

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; (status, headers, body) of the answer, read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def stderr_records(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, each parsed as one JSON object (fails on any other line)."""
    lines = path.read_text().splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        records.append(record)
    return records


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_malformed_http_in_json_and_logs_only_json(
    database_url: str, routes_file: Path, tmp_path: Path, workers: int
) -> None:
    """A NUL in a header, a garbage request line: 400 bad_request as JSON; stderr all JSON."""
    port = free_port()
    env = router_env(database_url, routes_file, LOG_FORMAT="json", LOG_LEVEL="info")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stderr_path = tmp_path / "stderr"
    cmd = [sys.executable, "-m", "router", "serve", "--port", str(port), "--workers", str(workers)]
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_http(f"http://127.0.0.1:{port}/health/ready", proc, timeout=60)
            for name, request in MALFORMED.items():
                status, headers, body = raw_exchange(port, request)
                assert status == 400, (name, body)
                assert headers["content-type"] == "application/json", name
                assert int(headers["content-length"]) == len(body), name
                error = json.loads(body)["error"]
                assert error["code"] == "bad_request" and error["field"] is None, name
                assert error["message"].startswith("the request is not valid HTTP/1.1"), name
            # A well-formed request on the same server is still answered as usual.
            status, _, body = raw_exchange(
                port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            # No WebSocket endpoint: an upgrade is answered by the app, in JSON (not an empty 403).
            status, headers, body = raw_exchange(port, UPGRADE)
            assert status == 404 and headers["content-type"] == "application/json"
            assert json.loads(body)["error"]["code"] == "not_found"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # uvicorn shuts down gracefully, then re-raises SIGTERM to end as the signal meant.
    assert proc.returncode in (0, -signal.SIGTERM)
    records = stderr_records(stderr_path)
    events = [str(r.get("event")) for r in records]
    # uvicorn's own lines are among them, as JSON with a level and the logger's name.
    assert any(e.startswith("Started server process") for e in events), events
    assert any(e.startswith("Uvicorn running on") for e in events), events
    warned = [r for r in records if r.get("event") == "Invalid HTTP request received."]
    assert len(warned) == len(MALFORMED)
    assert all(r["level"] == "warning" and r["logger"] == "uvicorn.error" for r in warned)
    assert all("timestamp" in r for r in records)
