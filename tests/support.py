"""Test helpers: agent subprocesses, the router on a loopback port, database URLs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psycopg
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prom_multiprocess

from router.app import create_app
from router.http_protocol import HTTP_PROTOCOL
from router.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key"
ADMIN_KEY = "admin-key"
DEFAULT_BEHAVIOUR = {
    "latency_ms": 0.0,
    "fail_rate": 0.0,
    "fail_status": 503,
    "status": None,
    "retry_after": None,
    "hang": False,
    "fail_first": 0,
}


def with_database(url: str, name: str) -> str:
    """The same server URL with another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(method: str, url: str, body: Any = None, timeout: float = 10) -> Any:
    """A small synchronous JSON request (for controlling agents)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@dataclass
class AgentProcess:
    """A real `router agents --port P` process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/handle"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        http_json("POST", f"{self.base}/reset")
        self.behave(**DEFAULT_BEHAVIOUR)

    def behave(self, **changes: Any) -> None:
        http_json("POST", f"{self.base}/behaviour", changes)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json("GET", f"{self.base}/stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = http_json("GET", f"{self.base}/requests")
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_agent(name: str, port: int | None = None, *extra: str) -> AgentProcess:
    """Start an agent process and wait until it listens."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.agents", "--port", str(port), "--name", name, *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = AgentProcess(name, port, proc)
    wait_http(f"{agent.base}/health", proc)
    return agent


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


ROUTES_TEMPLATE = """
[defaults]
timeout_ms = 1000
deadline_ms = 5000
max_attempts = 3
backoff_initial_ms = 1
backoff_max_ms = 20
concurrency = 64
# Tests that flip an agent between failing and healthy must not meet a breaker or a retry
# budget they did not ask for; tests/integration/test_breakers.py has its own table.
breaker_failures = 0
retry_budget = 1.0

[agents.alpha]
url = "{alpha}"

[agents.beta]
url = "{beta}"

[agents.gamma]
url = "{gamma}"

[[rules]]
kind = "solo"
keywords = ["solo"]
agents = ["alpha"]

[[rules]]
kind = "pair"
keywords = ["pair"]
agents = ["alpha", "beta"]

[[rules]]
kind = "race"
keywords = ["race"]
agents = ["alpha", "beta"]
mode = "first_success"

[[rules]]
kind = "general"
default = true
agents = ["gamma"]
"""


def write_routes(path: Path, agents: Mapping[str, AgentProcess]) -> Path:
    """The test routing table: solo → alpha, pair → alpha+beta, race → first of alpha/beta."""
    path.write_text(ROUTES_TEMPLATE.format(**{name: a.url for name, a in agents.items()}))
    return path


@dataclass
class RouterServer:
    """The router app on a loopback port, with a client session and its database."""

    base: str
    session: aiohttp.ClientSession
    database_url: str
    settings: Settings

    async def route(
        self,
        body: Any,
        *,
        key: str | None = API_KEY,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """POST /route; (status, parsed JSON body, headers)."""
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-Key"] = key
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
        async with self.session.post(f"{self.base}/route", data=data, headers=sent) as resp:
            raw = await resp.read()
            return resp.status, json.loads(raw) if raw else None, resp.headers

    async def get(self, path: str, *, key: str | None = ADMIN_KEY) -> tuple[int, Any]:
        """GET a path; (status, parsed JSON body or text)."""
        headers = {"X-API-Key": key} if key else {}
        async with self.session.get(f"{self.base}{path}", headers=headers) as resp:
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL against the router's database (synchronously, for assertions)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


def test_settings(database_url: str, routes_file: Path, **overrides: Any) -> Settings:
    """Settings for a test router: route key, admin key, fast sweeper."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_keys": frozenset({API_KEY}),
        "admin_api_keys": frozenset({ADMIN_KEY}),
        "routes_file": routes_file,
        "db_pool_min": 1,
        "db_pool_max": 8,
        "sweep_interval_s": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def start_router(
    database_url: str, routes_file: Path, **overrides: Any
) -> AsyncIterator[RouterServer]:
    """Serve create_app(settings) with uvicorn on a free loopback port in this event loop."""
    settings = test_settings(database_url, routes_file, **overrides)
    app = create_app(settings)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that name it, and
    # without it every request on a reused connection waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The protocol `router serve` runs, which serves POST /route itself.
    config = uvicorn.Config(
        app,
        http=HTTP_PROTOCOL,
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the router stopped during start-up")
        await asyncio.sleep(0.01)
    session = aiohttp.ClientSession()
    try:
        yield RouterServer(f"http://127.0.0.1:{port}", session, database_url, settings)
    finally:
        await session.close()
        server.should_exit = True
        await task
        sock.close()


def router_env(database_url: str, routes_file: Path, **extra: str) -> dict[str, str]:
    """Environment for a router subprocess."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        API_KEY=API_KEY,
        ADMIN_API_KEY=ADMIN_KEY,
        ROUTES_FILE=str(routes_file),
        LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def router_processes(env: Mapping[str, str], count: int) -> AsyncIterator[list[str]]:
    """`count` `router serve` subprocesses on free ports, each ready; their base URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "router", "serve", "--port", str(port)],
                    cwd=ROOT,
                    env=dict(env),
                    stderr=subprocess.DEVNULL,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            await asyncio.to_thread(wait_http, f"{base}/health/ready", proc)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


def socket_target(server_url: str) -> tuple[str, int] | str:
    """Where the PostgreSQL of `server_url` listens: (host, port) or a unix socket path."""
    parts = urlsplit(server_url)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    port = parts.port or int(query.get("port", 5432))
    host = query.get("host") or parts.hostname or "/var/run/postgresql"
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return host, port


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that a test can cut and restore (a database outage)."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, server_url: str, database: str) -> str:
        user = urlsplit(server_url).username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every open connection, as if the database went away."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        self._writers.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


@contextlib.contextmanager
def serve_workers(
    database_url: str, routes_file: Path, prom_dir: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`router serve --workers 2` with its metrics in `prom_dir`, once both workers are up;
    SIGTERM (a graceful stop) when done."""
    from router.metrics import MULTIPROC_ENV

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=router_env(database_url, routes_file, **{MULTIPROC_ENV: str(prom_dir)}, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", proc, timeout=30)
        deadline = time.monotonic() + 20
        while len(list(prom_dir.glob("counter_*.db"))) < 2:  # both workers built their metrics
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.05)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def received_by_worker(prom_dir: Path, scratch: Path) -> dict[int, float]:
    """signals_received_total as each worker's own counter file says."""
    counts = {}
    for file in prom_dir.glob("counter_*.db"):
        pid = int(file.stem.removeprefix("counter_"))
        alone = scratch / str(pid)
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            s.value
            for metric in registry.collect()
            for s in metric.samples
            if s.name == "signals_received_total"
        )
    return counts


DEV_PORTS = (8000, 9101, 9102, 9103)  # make dev's router and the packaged table's agents
README = ROOT / "README.md"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def readme_commands() -> list[str]:
    """The README's curl commands: the "Try it" block, then every inline one, in order."""
    text = README.read_text()
    block = text.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    commands = [line.strip() for line in joined.splitlines() if line.strip().startswith("curl")]
    commands += re.findall(r"`(curl [^`]+)`", text)
    return commands


@contextlib.contextmanager
def run_make_dev(database_url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`make dev` in a process group of its own, as a terminal or an IDE starts it, once its
    router and demo agents answer; SIGKILL to the group afterwards if it still runs."""
    from router.ports import port_in_use

    busy = [port for port in DEV_PORTS if port_in_use("127.0.0.1", port)]
    if busy:
        import pytest

        pytest.skip(f"make dev's ports are taken here: {busy}")
    given = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ADMIN_API_KEY")}
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "dev"],
        cwd=ROOT,
        env={**given, "DATABASE_URL": database_url, "ROUTES_FILE": "", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http("http://127.0.0.1:8000/health/ready", proc, timeout=90)
        for port in DEV_PORTS[1:]:
            wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=30)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
