"""The running router: what the lifespan opens, complete the moment it exists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from router import budget
from router.agent_client import AgentClient
from router.agent_health import AgentHealth
from router.api.auth import ApiKeys
from router.api.route import RoutePath
from router.auto_replay import AutoReplay
from router.dispatch import Dispatcher
from router.embedded_db import resolve_database_url
from router.http11_client import Http11Client
from router.logging import signal_line
from router.metrics import Metrics
from router.rate_limit import SenderLimiter
from router.routing import RoutingTable
from router.settings import Settings
from router.stats import LatencyStats, StatsFlusher
from router.store.partitions import keep_partitions
from router.store.pool import open_pool
from router.store.recovery import run_maintenance
from router.store.writer import GroupCommitWriter
from router.store.writer_pool import DatabaseClock, Pool, open_writer_pool

log = structlog.get_logger("router.runtime")

# Connections for replays: the API's concurrent replay calls (two batches each) beyond this
# wait for one, never the route path.
REPLAY_POOL_MAX = 4


@dataclass(frozen=True, slots=True)
class AppConfig:
    """What create_app builds before anything is opened: settings, table, metrics, keys."""

    settings: Settings
    table: RoutingTable
    metrics: Metrics
    keys: ApiKeys


@dataclass(frozen=True, slots=True)
class Runtime:
    """Pools, writer, client and tasks, all open; handlers get it whole or not at all."""

    config: AppConfig
    pool: AsyncConnectionPool
    # The group-commit writer's lanes (asyncpg): durable outcomes, and claims.
    outcome_pool: Pool
    claim_pool: Pool
    # Replays hold a connection through whole dispatches: a pool of their own, so they can
    # never starve the route path's outcome commits.
    replay_pool: AsyncConnectionPool
    # GET /logs and GET /stats: DATABASE_READ_URL's replica, else `pool` itself.
    read_pool: AsyncConnectionPool
    client: AgentClient
    writer: GroupCommitWriter
    # Replays' own dispatcher: the route path's metrics (retries, failed deliveries) count
    # the route path only, as with `router replay-dlq`.
    replay_dispatcher: Dispatcher
    # Breakers and retry budgets, shared by both dispatchers: one view of each agent.
    health: AgentHealth
    auto_replay: AutoReplay
    route_path: RoutePath
    maintenance: asyncio.Task[None]
    stats: StatsFlusher

    async def close(self) -> None:
        """Stop the tasks, flush the writer, close the client and the pools."""
        await self.auto_replay.close()
        self.maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.maintenance
        await self.writer.stop()
        self.route_path.close()
        await self.stats.close()
        await self.client.close()
        for writer_pool in (self.claim_pool, self.outcome_pool):
            await writer_pool.close()
        for pool in {self.replay_pool, self.read_pool, self.pool}:
            await pool.close()
        log.info("router_stopped")


async def open_runtime(config: AppConfig) -> Runtime:
    """Open everything the router runs on; the database may be away (it heals later)."""
    settings, table, metrics = config.settings, config.table, config.metrics
    url = await asyncio.to_thread(resolve_database_url, settings)
    # wait=False: the router starts while the database is away and heals when it returns;
    # /health/ready says which.
    pool = await open_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        wait=False,
        statement_timeout_s=budget.STATEMENT_TIMEOUT_S,
    )
    clock = DatabaseClock()
    # Each lane keeps one connection (it flushes one statement at a time); the claims' other
    # two serve what a flush sets off (a losing claim's lookup, voiding late claims), the
    # outcomes' other one /health/ready.
    claim_pool = await open_writer_pool(
        url,
        max_size=3,
        synchronous_commit=False,
        statement_timeout_s=budget.CLAIM_STATEMENT_TIMEOUT_S,
        clock=clock,
        name="router-claims",
    )
    outcome_pool = await open_writer_pool(
        url, max_size=2, statement_timeout_s=budget.STATEMENT_TIMEOUT_S, name="router-outcomes"
    )
    replay_pool = await open_pool(
        url, min_size=1, max_size=REPLAY_POOL_MAX, wait=False, name="router-replays"
    )
    read_pool = pool
    if settings.database_read_url is not None:
        read_pool = await open_pool(
            settings.database_read_url,
            min_size=1,
            max_size=settings.db_pool_max,
            wait=False,
            statement_timeout_s=budget.STATEMENT_TIMEOUT_S,
            name="router-reads",
        )
    client: AgentClient = Http11Client()
    writer = GroupCommitWriter(outcome_pool, claim_pool=claim_pool, clock=clock, metrics=metrics)
    writer.start()
    agents = table.agents.values()
    health = AgentHealth()
    replay_dispatcher = Dispatcher(client, agents, health=health)
    auto_replay = AutoReplay(
        replay_pool,
        replay_dispatcher,
        table,
        metrics,
        max_replays=settings.dlq_max_replays,
    )
    health.subscribe(metrics.breaker_changed)
    health.subscribe(auto_replay.breaker_changed)
    limit = settings.sender_rate_limit
    latency_stats = LatencyStats()
    stats = StatsFlusher(
        pool,
        latency_stats,
        interval_s=settings.stats_flush_s,
        retention=settings.stats_retention,
    )
    stats.start()
    route_path = RoutePath(
        table=table,
        dispatcher=Dispatcher(client, agents, observer=metrics, health=health),
        writer=writer,
        pool=pool,
        metrics=metrics,
        keys=config.keys,
        max_body_bytes=settings.max_body_bytes,
        outcome_timeout_s=settings.outcome_timeout_s,
        limiter=SenderLimiter(limit) if limit is not None else None,
        stats=latency_stats,
        signal_line=signal_line(
            settings.log_level, settings.log_format, asyncio.get_running_loop()
        ),
    )
    maintenance = asyncio.create_task(
        _all(
            run_maintenance(
                pool,
                metrics,
                interval_s=settings.sweep_interval_s,
                backlog_changed=writer.dead_letters_written,
            ),
            keep_partitions(url, retention=settings.log_retention),
        ),
        name="maintenance",
    )
    log.info(
        "router_started", routes=table.source, kinds=list(table.kinds), agents=list(table.agents)
    )
    return Runtime(
        config=config,
        pool=pool,
        outcome_pool=outcome_pool,
        claim_pool=claim_pool,
        replay_pool=replay_pool,
        read_pool=read_pool,
        client=client,
        writer=writer,
        replay_dispatcher=replay_dispatcher,
        health=health,
        auto_replay=auto_replay,
        route_path=route_path,
        maintenance=maintenance,
        stats=stats,
    )


async def _all(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run periodic jobs as one task: cancelling it stops them all."""
    await asyncio.gather(*jobs)
