"""The faults, one scenario each: a fresh database, agents and router, load, the fault, then
recovery and the history check."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString

import psycopg

from chaos.balancer import Balancer
from chaos.cluster import Cluster
from chaos.history import Verdict, check, deliveries_of
from chaos.load import Sent, run_load
from chaos.processes import Router, behave, http_json, migrate, replay_dlq
from tests.support import free_port, start_agent

ROUTES = """
[defaults]
timeout_ms = 4000
deadline_ms = 4000
max_attempts = 2
backoff_initial_ms = 20
backoff_max_ms = 100
concurrency = 64

[agents.a1]
url = "{a1}"
[agents.a2]
url = "{a2}"
[agents.a3]
url = "{a3}"

[[rules]]
kind = "solo"
keywords = ["solo"]
agents = ["a1"]

[[rules]]
kind = "pair"
keywords = ["pair"]
agents = ["a1", "a2"]

[[rules]]
kind = "race"
keywords = ["race"]
agents = ["a2", "a3"]
mode = "first_success"

[[rules]]
kind = "general"
default = true
agents = ["a3"]
"""
# deadline 4 s + OUTCOME_TIMEOUT_MS 3 s + statement timeout 3 s + margin 2 s, a sweep every 5 s.
RECOVERY_WAIT_S = 4 + 3 + 3 + 2 + 5 + 10


@dataclass(frozen=True)
class Scale:
    """How hard a scenario pushes: `small` for make test, `full` for make chaos."""

    rate: float
    seconds: float


SCALES = {"small": Scale(rate=30, seconds=4), "full": Scale(rate=60, seconds=6)}


class Stage:
    """One scenario's processes and database on the shared private cluster."""

    def __init__(self, cluster: Cluster, run_dir: Path, name: str) -> None:
        self.name = name
        self.cluster = cluster
        self.database_url = cluster.create_database(f"chaos_{name}_{uuid.uuid4().hex[:6]}")
        self.agents = {n: start_agent(n) for n in ("a1", "a2", "a3")}
        self.routes = run_dir / f"{name}.toml"
        self.routes.write_text(ROUTES.format(**{n: a.url for n, a in self.agents.items()}))
        self.log = run_dir / f"{name}.router.log"
        migrate(self.database_url, self.routes)
        self.port = free_port()
        self.router: Router | None = None
        # What else the scenario started (more routers, a balancer), stopped at close.
        self.cleanups: list[Callable[[], None]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_router(self, **env: str) -> Router:
        self.router = Router(self.database_url, self.routes, self.log, port=self.port, **env)
        return self.router

    def query(self, sql: LiteralString) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql).fetchall()

    async def recover_and_check(self, signals: list[Sent], *, database_faulted: bool) -> Verdict:
        """A router up, no claim in flight, agents healthy, the DLQ replayed; then the check."""
        if self.router is None or self.router.proc.poll() is not None:
            self.start_router()
        for agent in self.agents.values():
            behave(agent)
        deadline = time.monotonic() + RECOVERY_WAIT_S
        while self.query("SELECT 1 FROM signal_log WHERE status = 'in_flight' LIMIT 1"):
            if time.monotonic() > deadline:
                break  # reported as V5
            await asyncio.sleep(0.5)
        for _ in range(3):
            if not self.query("SELECT 1 FROM dlq WHERE status = 'pending' LIMIT 1"):
                break
            await asyncio.to_thread(replay_dlq, self.database_url, self.routes)
        deliveries = [d for a in self.agents.values() for d in deliveries_of(a.name, a.requests())]
        return check(self.database_url, signals, deliveries, database_faulted=database_faulted)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()
        if self.router is not None:
            self.router.stop()
        for agent in self.agents.values():
            agent.stop()


async def at(delay: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay)
    await action()


class Lock:
    """A session holding `LOCK TABLE signal_log` (a stalled database) for a while."""

    def __init__(self, database_url: str, seconds: float) -> None:
        self._url = database_url
        self._seconds = seconds
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with psycopg.connect(self._url) as conn:
            conn.execute("LOCK TABLE signal_log IN ACCESS EXCLUSIVE MODE")
            time.sleep(self._seconds)
            conn.rollback()

    async def __call__(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._thread.join)


async def pg_crash(stage: Stage, scale: Scale) -> list[Sent]:
    """PostgreSQL killed with -m immediate while dispatches are in flight, back 1.5 s later."""
    for agent in stage.agents.values():
        behave(agent, latency_ms=250)
    stage.start_router()

    async def crash() -> None:
        await asyncio.to_thread(stage.cluster.crash)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stage.cluster.start)

    load = run_load(stage.base, stage.name, rate=scale.rate, seconds=scale.seconds)
    signals, _ = await asyncio.gather(load, at(scale.seconds / 3, crash))
    return signals


async def stall_lock(stage: Stage, scale: Scale) -> list[Sent]:
    """A lock stalls every claim for 4 s, longer than the 2 s claim budget."""
    stage.start_router()
    load = run_load(stage.base, stage.name, rate=scale.rate * 1.5, seconds=scale.seconds + 2)
    signals, _ = await asyncio.gather(load, at(1.0, Lock(stage.database_url, 4.0)))
    return signals


async def slow_claim(stage: Stage, scale: Scale) -> list[Sent]:
    """Claims held up just under their validity, dispatches that end just inside their
    deadline, reposts and API replays while the signals are dispatched."""
    for agent in stage.agents.values():
        behave(agent, latency_ms=3900)
    stage.start_router()

    async def replays() -> None:
        for _ in range(5):
            await asyncio.gather(
                *(
                    asyncio.to_thread(http_json, "POST", f"{stage.base}/dlq/replay", {})
                    for _ in range(3)
                )
            )
            await asyncio.sleep(0.5)

    load = run_load(
        stage.base, stage.name, rate=scale.rate / 2, seconds=scale.seconds, concurrent_reposts=True
    )
    signals, _, _ = await asyncio.gather(
        load, at(1.0, Lock(stage.database_url, 1.4)), at(3.0, replays)
    )
    return signals


async def replay_starvation(stage: Stage, scale: Scale) -> list[Sent]:
    """Eight concurrent API replays of a slow agent's backlog while other signals route."""
    behave(stage.agents["a1"], status=503)
    stage.start_router()
    backlog = await run_load(
        stage.base, f"{stage.name}-backlog", rate=100, seconds=2, retry_share=0
    )
    behave(stage.agents["a1"], latency_ms=1000)

    async def replays() -> None:
        await asyncio.gather(
            *(
                asyncio.to_thread(http_json, "POST", f"{stage.base}/dlq/replay", {"limit": 20})
                for _ in range(8)
            )
        )

    load = run_load(stage.base, stage.name, rate=scale.rate, seconds=scale.seconds)
    signals, _ = await asyncio.gather(load, at(0.2, replays))
    return backlog + signals


async def sigterm_drain(stage: Stage, scale: Scale) -> list[Sent]:
    """SIGTERM while dispatches (3 s) outlast the drain (1 s); the router is started again."""
    for agent in stage.agents.values():
        behave(agent, latency_ms=3000)
    router = stage.start_router(SHUTDOWN_GRACE_S="1")

    async def stop_and_restart() -> None:
        router.signal(signal.SIGTERM)
        await asyncio.to_thread(router.wait)
        for agent in stage.agents.values():
            behave(agent, latency_ms=100)
        await asyncio.to_thread(stage.start_router)

    load = run_load(stage.base, stage.name, rate=scale.rate / 2, seconds=scale.seconds)
    signals, _ = await asyncio.gather(load, at(scale.seconds / 2, stop_and_restart))
    return signals


async def sigkill(stage: Stage, scale: Scale) -> list[Sent]:
    """SIGKILL of the router mid-dispatch, started again a second later."""
    for agent in stage.agents.values():
        behave(agent, latency_ms=300)
    router = stage.start_router()

    async def kill_and_restart() -> None:
        router.signal(signal.SIGKILL)
        await asyncio.to_thread(router.wait)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stage.start_router)

    load = run_load(stage.base, stage.name, rate=scale.rate, seconds=scale.seconds)
    signals, _ = await asyncio.gather(load, at(scale.seconds / 2, kill_and_restart))
    return signals


async def many_routers(stage: Stage, scale: Scale) -> list[Sent]:
    """Three routers behind Debian's nginx and two replayers running all along, agents failing
    a share of attempts; one router SIGKILLed halfway and never restarted."""
    for agent in stage.agents.values():
        behave(agent, latency_ms=150, fail_rate=0.15)
    routers = [Router(stage.database_url, stage.routes, stage.log) for _ in range(3)]
    for router in routers[1:]:
        stage.cleanups.append(router.stop)
    balancer = Balancer(stage.port, [r.port for r in routers])
    stage.cleanups.append(balancer.stop)
    stage.router = routers[0]
    loading = True

    async def replayer() -> None:
        while loading:
            await asyncio.to_thread(replay_dlq, stage.database_url, stage.routes)
            await asyncio.sleep(0.3)

    async def kill_one() -> None:
        routers[0].signal(signal.SIGKILL)
        await asyncio.to_thread(routers[0].wait)
        stage.router = routers[1]  # the survivors serve the recovery and the check

    async def load() -> list[Sent]:
        nonlocal loading
        try:
            return await run_load(stage.base, stage.name, rate=scale.rate, seconds=scale.seconds)
        finally:
            loading = False

    signals, *_ = await asyncio.gather(
        load(), replayer(), replayer(), at(scale.seconds / 2, kill_one)
    )
    return signals


Scenario = Callable[[Stage, Scale], Awaitable[list[Sent]]]
# The scenarios that make PostgreSQL fail; in the others an outcome must always commit.
DATABASE_FAULTS = frozenset({"pg_crash", "stall_lock", "slow_claim"})
SCENARIOS: dict[str, Scenario] = {
    "pg_crash": pg_crash,
    "stall_lock": stall_lock,
    "slow_claim": slow_claim,
    "replay_starvation": replay_starvation,
    "sigterm_drain": sigterm_drain,
    "sigkill": sigkill,
    "many_routers": many_routers,
}
