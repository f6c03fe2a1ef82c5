"""create_app(settings): the FastAPI app; its lifespan opens the pool, writer, client and tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import structlog
from fastapi import FastAPI, Request
from psycopg_pool import AsyncConnectionPool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from router import budget, openapi
from router.api import dlq, health, logs
from router.api.auth import ApiKeys
from router.api.errors import install_error_handlers, starting
from router.api.route import RoutePath
from router.dispatch import Dispatcher, create_client_session
from router.embedded_db import resolve_database_url
from router.metrics import Metrics
from router.routing import RoutingTable, load_routing_table
from router.settings import Settings
from router.store.pool import DatabaseClock, open_pool
from router.store.recovery import run_maintenance
from router.store.writer import GroupCommitWriter

log = structlog.get_logger("router.app")

GC_GEN0_THRESHOLD = 20_000
# Connections for replays: the API's concurrent replay calls (two batches each) beyond this
# wait for one, never the route path.
REPLAY_POOL_MAX = 4


@dataclass
class Runtime:
    """What the lifespan opens; handlers read it from app.state.runtime."""

    settings: Settings
    table: RoutingTable
    metrics: Metrics
    keys: ApiKeys
    pool: AsyncConnectionPool | None = None
    claim_pool: AsyncConnectionPool | None = None
    # Replays hold a connection through whole dispatches: a pool of their own, so they can
    # never starve the route path's outcome commits.
    replay_pool: AsyncConnectionPool | None = None
    session: aiohttp.ClientSession | None = None
    writer: GroupCommitWriter | None = None
    dispatcher: Dispatcher | None = None
    # Replays' own dispatcher: the route path's metrics (retries, failed deliveries) count
    # the route path only, as with `router replay-dlq`.
    replay_dispatcher: Dispatcher | None = None
    route_path: RoutePath | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def create_app(settings: Settings, *, table: RoutingTable | None = None) -> FastAPI:
    """Build the app; the routing table loads here so a bad table stops the start."""
    settings.require_api_key()
    table = table or load_routing_table(settings.routes_file)
    runtime = Runtime(
        settings=settings,
        table=table,
        metrics=Metrics(kinds=table.kinds, agents=table.agents.keys()),
        keys=ApiKeys(settings.route_keys, settings.admin_keys),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(runtime)
        try:
            yield
        finally:
            await _stop(runtime)

    app = FastAPI(
        title="Signal router",
        version="0.1.0",
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(_RouteFastPath, runtime=runtime)

    async def route_signal(request: Request) -> Response:
        # Documents POST /route in the OpenAPI schema; requests are answered by _RouteFastPath
        # and reach this only before the lifespan has started the hot path.
        raise starting()

    app.add_api_route(
        "/route",
        route_signal,
        methods=["POST"],
        summary="Route one signal to its agents",
        tags=["route"],
        openapi_extra=openapi.ROUTE_REQUEST,
        responses=openapi.ROUTE_RESPONSES,
        response_model=None,
    )
    app.include_router(health.router)
    app.include_router(logs.router)
    app.include_router(dlq.router)

    async def metrics_endpoint() -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics, summed over workers",
        tags=["health"],
        response_model=None,
    )
    return app


class _RouteFastPath:
    """POST /route goes straight to the hot path; everything else through FastAPI."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route_path = self.runtime.route_path
        if (
            route_path is not None
            and scope["type"] == "http"
            and scope["path"] == "/route"
            and scope["method"] == "POST"
        ):
            await route_path(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _start(runtime: Runtime) -> None:
    settings = runtime.settings
    url = await asyncio.to_thread(resolve_database_url, settings)
    # wait=False: the router starts while the database is away and heals when it returns;
    # /health/ready says which.
    runtime.pool = await open_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        wait=False,
        statement_timeout_s=budget.STATEMENT_TIMEOUT_S,
    )
    runtime.session = create_client_session()
    clock = DatabaseClock()
    runtime.claim_pool = await open_pool(
        url,
        min_size=1,
        max_size=2,
        wait=False,
        synchronous_commit=False,
        statement_timeout_s=budget.CLAIM_STATEMENT_TIMEOUT_S,
        clock=clock,
        name="router-claims",
    )
    runtime.replay_pool = await open_pool(
        url, min_size=1, max_size=REPLAY_POOL_MAX, wait=False, name="router-replays"
    )
    runtime.writer = GroupCommitWriter(
        runtime.pool, claim_pool=runtime.claim_pool, clock=clock, metrics=runtime.metrics
    )
    runtime.writer.start()
    agents = runtime.table.agents.values()
    dispatcher = runtime.dispatcher = Dispatcher(runtime.session, agents, observer=runtime.metrics)
    runtime.replay_dispatcher = Dispatcher(runtime.session, agents)
    runtime.route_path = RoutePath(
        table=runtime.table,
        dispatcher=dispatcher,
        writer=runtime.writer,
        pool=runtime.pool,
        metrics=runtime.metrics,
        keys=runtime.keys,
        max_body_bytes=settings.max_body_bytes,
        outcome_timeout_s=settings.outcome_timeout_s,
    )
    runtime.tasks.append(
        asyncio.create_task(
            run_maintenance(
                runtime.pool,
                runtime.metrics,
                interval_s=settings.sweep_interval_s,
                backlog_changed=runtime.writer.dead_letters_written,
            ),
            name="maintenance",
        )
    )
    _tune_gc()
    log.info(
        "router_started",
        routes=runtime.table.source,
        kinds=list(runtime.table.kinds),
        agents=list(runtime.table.agents),
    )


def _tune_gc() -> None:
    """Freeze what start-up built and collect young objects less often.

    Every signal allocates a few hundred short-lived containers; with the default threshold
    (700) the collector ran several times per signal and walked the whole start-up heap
    (FastAPI, pydantic, the routing table) on older generations. Frozen objects are never
    scanned again; reference counting still frees acyclic garbage at once, so the higher
    threshold only delays cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


async def _stop(runtime: Runtime) -> None:
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runtime.tasks.clear()
    if runtime.writer is not None:
        await runtime.writer.stop()
    if runtime.session is not None:
        await runtime.session.close()
    for pool in (runtime.claim_pool, runtime.replay_pool, runtime.pool):
        if pool is not None:
            await pool.close()
    log.info("router_stopped")
