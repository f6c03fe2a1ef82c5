"""Router and agent subprocesses on loopback ports, and the commands run against a database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

# The test suite's process helpers serve the fault suite too: both start the same processes.
from tests.support import DEFAULT_BEHAVIOUR, ROOT, AgentProcess, free_port, wait_http

API_KEY = "chaos-key"
ADMIN_KEY = "chaos-admin"


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("X-API-Key", ADMIN_KEY)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def behave(agent: AgentProcess, **changes: Any) -> None:
    """Set an agent's behaviour: healthy except for `changes` (earlier faults are undone)."""
    agent.behave(**(DEFAULT_BEHAVIOUR | changes))


def router_env(database_url: str, routes: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        API_KEY=API_KEY,
        ADMIN_API_KEY=ADMIN_KEY,
        ROUTES_FILE=str(routes),
        LOG_LEVEL="warning",
        LOG_FORMAT="json",
        OUTCOME_TIMEOUT_MS="3000",
    )
    env.update(extra)
    return env


def migrate(database_url: str, routes: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "router", "migrate"],
        cwd=ROOT,
        env=router_env(database_url, routes),
        check=True,
        capture_output=True,
        timeout=120,
    )


def replay_dlq(database_url: str, routes: Path) -> dict[str, Any]:
    """`router replay-dlq`; its JSON summary."""
    result = subprocess.run(
        [sys.executable, "-m", "router", "replay-dlq"],
        cwd=ROOT,
        env=router_env(database_url, routes),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"replay-dlq failed: {result.stderr.strip()[-500:]}")
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


class Router:
    """A `router serve` process; its stderr (JSON lines) goes to a file of the run."""

    def __init__(
        self, database_url: str, routes: Path, log: Path, port: int | None = None, **env: str
    ) -> None:
        self.port = port or free_port()
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=router_env(database_url, routes, **env),
            stdout=self._log,
            stderr=self._log,
        )
        wait_http(f"{self.base}/health", self.proc)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        self.wait()
