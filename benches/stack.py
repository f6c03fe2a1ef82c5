"""The processes an end-to-end measurement runs: PostgreSQL database, agent, router, floor app."""

# Everything is a real process on loopback, as in production: `python -m router serve` (one
# uvicorn worker, uvloop + httptools, JSON request log on, metrics on, durable log),
# `python -m router.agents` and `benches.baseline_app`. The router's stderr (one JSON line per
# request) goes to a file: a pipe nobody reads would block it.

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from router import migrate
from router.settings import normalize_database_url
from tests.support import (
    API_KEY,
    AgentProcess,
    free_port,
    router_env,
    start_agent,
    wait_http,
    with_database,
)

ROOT = Path(__file__).resolve().parent.parent

# One agent for every rule: the targets are stated "with 1 agent" per signal. The rules are
# the demo table's, so classification costs what it costs in production.
ROUTES = """
[defaults]
timeout_ms = 2000
deadline_ms = 10000
concurrency = 256

[agents.bench]
url = "{url}"

[[rules]]
kind = "policy_question"
keywords = ["policy", "terms", "compliance", "privacy", "gdpr"]
agents = ["bench"]

[[rules]]
kind = "urgent"
patterns = ['(?i)\\boutage\\b', '(?i)\\bdown\\b', '(?i)\\burgent\\b']
agents = ["bench"]

[[rules]]
kind = "billing"
keywords = ["invoice", "refund", "billing", "payment", "charge"]
agents = ["bench"]

[[rules]]
kind = "general"
default = true
agents = ["bench"]
"""

# What a client sends; no timestamp, so every copy is a new signal with its own claim.
ROUTE_BODY = b'{"sender_id":"bench-user","payload":{"message":"help me understand the policy"}}'
# What the router forwards for it: the direct baseline sends the agent the same thing.
AGENT_BODY = (
    b'{"log_id":"sig-0123456789abcdef0123456789abcdef01234567","sender_id":"bench-user",'
    b'"kind":"policy_question","payload":{"message":"help me understand the policy"},'
    b'"metadata":null,"timestamp":null}'
)


def server_url() -> str:
    """DATABASE_URL when set (CI), else the embedded PostgreSQL the tests use."""
    given = os.environ.get("DATABASE_URL")
    if given:
        return normalize_database_url(given)
    from router.embedded_db import embedded_database_url

    return embedded_database_url(ROOT / ".router" / "test")


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database of our own (router_bench_<pid>_<hex>), dropped afterwards."""
    server = server_url()
    name = f"router_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server, name)
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    """A server subprocess: its URL, and every pid whose CPU counts as its own."""

    url: str
    proc: subprocess.Popen[bytes]
    pids: list[int] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (uvicorn's workers under --workers N)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", "rb") as f:
            stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def start_router(
    database_url: str,
    routes_file: Path,
    log_file: Path,
    *,
    workers: int = 1,
    slow_us: int = 0,
    module: str = "router",
) -> Server:
    """`python -m router serve` (or `module`: a wrapper of it) on a free port, ready to route."""
    port = free_port()
    env = router_env(database_url, routes_file, LOG_LEVEL="info", LOG_FORMAT="json")
    # A MULTIPROC dir left in the caller's environment would switch metrics mode.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if slow_us:
        from benches.slow_router import SLOW_ENV

        module = "benches.slow_router"
        env[SLOW_ENV] = str(slow_us)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--port", str(port), "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/ready", proc, timeout=60)
    except RuntimeError:
        proc.kill()
        raise
    return Server(f"{url}/route", proc, [proc.pid])


def start_baseline() -> Server:
    """The trivial ASGI app of benches.baseline_app on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benches.baseline_app", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    # The app answers every path, GET included, with 200.
    wait_http(f"{base}/health", proc)
    return Server(f"{base}/floor", proc, [proc.pid])


def start_app(module: str, database_url: str, agent_url: str) -> Server:
    """`python -m <module> --port P` (the reference or the contract floor) on this database
    and agent, ready to answer POST /route."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "AGENT_URL": agent_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=60)
    return Server(f"http://127.0.0.1:{port}/route", proc, [proc.pid])


@dataclass
class Stack:
    """A running agent, floor app and database; routers are started per measurement."""

    database_url: str
    agent: AgentProcess
    baseline: Server
    routes_file: Path
    workdir: Path

    @property
    def agent_url(self) -> str:
        """The agent's delivery URL, for direct calls."""
        return self.agent.url

    def router(self, *, workers: int = 1, slow_us: int = 0, module: str = "router") -> Server:
        """Start a router on this stack's database and agent; the caller stops it."""
        return start_router(
            self.database_url,
            self.routes_file,
            self.workdir / "router.log",
            workers=workers,
            slow_us=slow_us,
            module=module,
        )


@contextlib.contextmanager
def e2e_stack() -> Iterator[Stack]:
    """Database, agent and floor app for one measurement; torn down whatever happens."""
    with (
        tempfile.TemporaryDirectory(prefix="router-bench-") as tmp,
        bench_database() as database_url,
    ):
        agent = start_agent("bench")
        try:
            baseline = start_baseline()
            try:
                routes = Path(tmp) / "routes.toml"
                routes.write_text(ROUTES.format(url=agent.url))
                yield Stack(database_url, agent, baseline, routes, Path(tmp))
            finally:
                baseline.stop()
        finally:
            agent.stop()


__all__ = ["AGENT_BODY", "API_KEY", "ROUTE_BODY", "Server", "Stack", "e2e_stack", "start_app"]
