"""Demo and load-test agents: small aiohttp servers with fault injection.

Each agent answers the router's deliveries on its path (normally ``/handle``), records what
it received, and exposes ``/stats``, ``/requests``, ``/reset``, ``/behaviour`` and ``/health``
so tests can count deliveries and change faults without restarting the process.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import signal
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from router.routing import AgentConfig

__all__ = [
    "AGENT_STATE",
    "AgentBehaviour",
    "AgentSpec",
    "AgentState",
    "agents_main",
    "build_agent_app",
    "serve_agents",
]

MAX_RECORDS = 10_000
MAX_KEYS = 100_000
DEFAULT_PATH = "/handle"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
CONTROL_PATHS = frozenset({"/stats", "/requests", "/reset", "/behaviour", "/health"})
# A hung request is released at shutdown; this only bounds what else may still be running.
SHUTDOWN_TIMEOUT_S = 2.0


class AgentBehaviour(BaseModel):
    """How an agent answers; every field defaults to a healthy, instant agent."""

    # Strict because the values come from JSON: a bool is no status, though an int is a float.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    latency_ms: float = Field(default=0.0, ge=0)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    fail_status: int = Field(default=503, ge=400, le=599)
    status: int | None = Field(default=None, ge=200, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    hang: bool = False
    fail_first: int = Field(default=0, ge=0)
    seed: int | None = None

    def updated(self, changes: Mapping[str, Any]) -> AgentBehaviour:
        """Return a copy with ``changes`` (JSON values) applied; raise ValueError when invalid."""
        return self.model_validate({**self.model_dump(), **changes})

    def to_json(self) -> dict[str, Any]:
        """Return the behaviour as a JSON-ready mapping."""
        return self.model_dump()


def _problems(exc: ValidationError) -> str:
    """One line naming each refused field and what is wrong with it."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


class AgentSpec(NamedTuple):
    """One agent to serve: its name, its TCP port and the path it answers deliveries on."""

    name: str
    port: int
    path: str = DEFAULT_PATH


# (Idempotency-Key, X-Router-Attempt, traceparent, body, status answered, X-Router-Replay sent)
Record = tuple[str, str | None, str | None, Any, int | None, bool]


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(obj), content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status=status)


def _attempt_number(header: str | None) -> int | str | None:
    return int(header) if header is not None and header.isdigit() else header


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


class AgentState:
    """What one agent has received, and how it currently behaves."""

    def __init__(self, name: str, behaviour: AgentBehaviour) -> None:
        self.name = name
        self.behaviour = behaviour
        self.rng = random.Random(behaviour.seed)
        self.received = 0
        self.succeeded = 0
        self.failed = 0
        # OrderedDict because evicting the oldest key of a plain dict degrades to O(n).
        self.keys: OrderedDict[str, int] = OrderedDict()
        self.records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._hung: set[asyncio.Future[None]] = set()
        # Requests being answered now, and the most at once since the last reset.
        self.in_flight = self.max_in_flight = 0

    def reset(self) -> None:
        """Forget every request received so far."""
        self.received = self.succeeded = self.failed = 0
        self.max_in_flight = self.in_flight
        self.keys.clear()
        self.records.clear()
        self.rng = random.Random(self.behaviour.seed)

    def set_behaviour(self, behaviour: AgentBehaviour) -> None:
        """Switch behaviour; a new seed restarts the random sequence."""
        if behaviour.seed != self.behaviour.seed:
            self.rng = random.Random(behaviour.seed)
        self.behaviour = behaviour

    def release_hung(self) -> None:
        """Let hung requests finish so shutdown does not wait for them."""
        for future in self._hung:
            if not future.done():
                future.set_result(None)

    def _count(self, key: str) -> int:
        keys = self.keys
        n = keys.get(key, 0) + 1
        keys[key] = n
        if n == 1 and len(keys) > MAX_KEYS:
            # An evicted key starts counting again from 1: acceptable for a test agent.
            keys.popitem(last=False)
        return n

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one delivery according to the current behaviour (the load-test hot path)."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        headers = request.headers
        key = headers.get("Idempotency-Key")
        attempt = headers.get("X-Router-Attempt")
        traceparent = headers.get("traceparent")
        replay = headers.get("X-Router-Replay") == "1"
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._count(key or "")
            self.failed += 1
            self.records.append((key or "", attempt, traceparent, None, 400, replay))
            return _error(400, "invalid_json", "the body must be a JSON object")

        log_id = body.get("log_id")
        if key is None:
            key = log_id if isinstance(log_id, str) else ""
        n = self._count(key)
        behaviour = self.behaviour

        if behaviour.hang:
            self.records.append((key, attempt, traceparent, body, None, replay))
            await self._hang()
            return _error(503, "shutting_down", "the agent is stopping")

        if behaviour.status is not None:
            status = behaviour.status
        elif n <= behaviour.fail_first or (
            behaviour.fail_rate > 0.0 and self.rng.random() < behaviour.fail_rate
        ):
            status = behaviour.fail_status
        else:
            status = 200
        self.records.append((key, attempt, traceparent, body, status, replay))
        ok = 200 <= status < 300
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1

        if behaviour.latency_ms > 0.0:
            await asyncio.sleep(behaviour.latency_ms / 1000.0)

        if status in (204, 304):
            return web.Response(status=status)
        answer: dict[str, Any] = {"agent": self.name, "log_id": log_id, "received": n}
        if ok:
            return _json(answer, status)
        answer["error"] = "injected failure"
        extra = None
        if behaviour.retry_after is not None:
            extra = {"Retry-After": _format_seconds(behaviour.retry_after)}
        return _json(answer, status, extra)

    async def _hang(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hung.add(future)
        try:
            # Ends when the client disconnects (handler cancellation) or at shutdown.
            await future
        finally:
            self._hung.discard(future)

    async def stats(self, request: web.Request) -> web.Response:
        """Report delivery counters, per Idempotency-Key too."""
        return _json(
            {
                "agent": self.name,
                "received": self.received,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "max_in_flight": self.max_in_flight,
                "keys": self.keys,
            }
        )

    async def requests(self, request: web.Request) -> web.Response:
        """List the recorded requests, oldest first; ``?key=`` keeps one Idempotency-Key."""
        only = request.query.get("key")
        return _json(
            [
                {
                    "idempotency_key": key,
                    "attempt": _attempt_number(attempt),
                    "traceparent": traceparent,
                    "body": body,
                    "status": status,
                    "replay": replay,
                }
                for key, attempt, traceparent, body, status, replay in self.records
                if only is None or key == only
            ]
        )

    async def reset_handler(self, request: web.Request) -> web.Response:
        """Clear the records and counters."""
        self.reset()
        return _json({"agent": self.name, "reset": True})

    async def get_behaviour(self, request: web.Request) -> web.Response:
        """Show the current behaviour."""
        return _json(self.behaviour.to_json())

    async def post_behaviour(self, request: web.Request) -> web.Response:
        """Apply a JSON subset of AgentBehaviour fields and answer the resulting behaviour."""
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            changes = None
        if not isinstance(changes, dict):
            return _error(400, "invalid_json", "the body must be a JSON object")
        try:
            behaviour = self.behaviour.updated(changes)
        except ValidationError as exc:
            return _error(422, "invalid_behaviour", _problems(exc))
        self.set_behaviour(behaviour)
        return _json(behaviour.to_json())

    async def health(self, request: web.Request) -> web.Response:
        """Answer 200 while the process serves."""
        return _json({"status": "ok", "agent": self.name})


AGENT_STATE: web.AppKey[AgentState] = web.AppKey("agent_state", AgentState)


def build_agent_app(
    name: str, behaviour: AgentBehaviour, *, path: str = DEFAULT_PATH
) -> web.Application:
    """Build the aiohttp application of one agent answering deliveries on ``path``."""
    if path in CONTROL_PATHS:
        raise ValueError(f"path {path!r} is reserved for the agent's control endpoints")
    state = AgentState(name, behaviour)
    app = web.Application()
    app[AGENT_STATE] = state
    app.router.add_post(path, state.handle)
    app.router.add_get("/stats", state.stats)
    app.router.add_get("/requests", state.requests)
    app.router.add_post("/reset", state.reset_handler)
    app.router.add_get("/behaviour", state.get_behaviour)
    app.router.add_post("/behaviour", state.post_behaviour)
    app.router.add_get("/health", state.health)

    async def on_shutdown(_app: web.Application) -> None:
        state.release_hung()

    app.on_shutdown.append(on_shutdown)
    return app


async def serve_agents(
    specs: Sequence[AgentSpec],
    behaviour: AgentBehaviour,
    *,
    host: str = "127.0.0.1",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve every agent of ``specs`` on ``host`` until cancelled, SIGINT or SIGTERM.

    Announces ``agent NAME listening on URL`` per agent (stdout by default), once it listens.
    """
    ports = [spec.port for spec in specs if spec.port != 0]
    if len(ports) != len(set(ports)):
        raise ValueError("two agents cannot share a port")
    say = announce or functools.partial(print, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread (or not POSIX): the caller stops us by cancelling.
            continue
        installed.append(sig)

    runners: list[web.AppRunner] = []
    try:
        for spec in specs:
            runner = web.AppRunner(
                build_agent_app(spec.name, behaviour, path=spec.path),
                handler_cancellation=True,
                access_log=None,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            )
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, spec.port).start()
            port = runner.addresses[0][1]
            say(f"agent {spec.name} listening on http://{host}:{port}{spec.path}")
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for runner in runners:
            await runner.cleanup()


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _local_specs(agents: Iterable[AgentConfig]) -> list[AgentSpec]:
    """The agents this process can serve: local http URLs, one agent (or replica) per port."""
    specs: list[AgentSpec] = []
    taken: dict[int, str] = {}
    for agent, address in ((a, u) for a in agents for u in a.urls):
        url = urlsplit(address)
        path = url.path or "/"
        if url.scheme != "http" or url.hostname not in LOCAL_HOSTS:
            _warn(f"agent {agent.name} skipped: {address} is not a local http URL")
            continue
        port = url.port or 80
        if port in taken:
            _warn(f"agent {agent.name} skipped: port {port} is already agent {taken[port]}'s")
            continue
        if path in CONTROL_PATHS:
            _warn(f"agent {agent.name} skipped: path {path} is reserved for control endpoints")
            continue
        taken[port] = agent.name
        specs.append(AgentSpec(agent.name, port, path))
    return specs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router agents",
        description="Demo and load-test agents with fault injection.",
    )
    parser.add_argument(
        "--port",
        type=int,
        help="serve one agent on this port at /handle (0: any free port); "
        "without it, serve every local agent of the routing table",
    )
    parser.add_argument("--name", default="agent", help="the agent's name with --port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="failure probability, 0-1")
    parser.add_argument("--fail-status", type=int, default=503, help="status of failures (503)")
    parser.add_argument("--status", type=int, help="always answer this status")
    parser.add_argument("--retry-after", type=float, help="Retry-After seconds on failures")
    parser.add_argument("--hang", action="store_true", help="never answer")
    parser.add_argument(
        "--fail-first", type=int, default=0, help="fail the first N attempts of each key"
    )
    parser.add_argument("--seed", type=int, help="seed of the failure draws")
    parser.add_argument(
        "--routes", help="routing table (TOML); default $ROUTES_FILE, else the demo table"
    )
    return parser


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def agents_main(argv: Sequence[str] | None = None) -> int:
    """Run the ``router agents`` command; return the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        # Every behaviour flag's dest is the field's name.
        behaviour = AgentBehaviour(
            **{name: getattr(args, name) for name in AgentBehaviour.model_fields}
        )
    except ValidationError as exc:
        parser.error(_problems(exc))

    if args.port is not None:
        specs = [AgentSpec(args.name, args.port)]
    else:
        from router.routing_file import RoutingTableError, load_routing_table

        try:
            table = load_routing_table(args.routes or os.environ.get("ROUTES_FILE") or None)
        except RoutingTableError as exc:
            # The loader's message already names the file, the place and the problem.
            print(f"router agents: {exc}", file=sys.stderr)
            return 2
        specs = _local_specs(table.agents.values())
        if not specs:
            print("router agents: no local agent to serve", file=sys.stderr)
            return 2

    from router.ports import in_use_message, port_in_use

    for spec in specs:
        if spec.port and port_in_use(args.host, spec.port):
            print(f"router agents: {in_use_message(args.host, spec.port)}", file=sys.stderr)
            return 1
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve_agents(specs, behaviour, host=args.host))
    except OSError as exc:
        print(f"router agents: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # SIGINT before the handlers were installed: still a requested, clean stop.
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(agents_main())
