"""create_app(settings): the FastAPI app; its lifespan opens the pool, writer, client and tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import structlog
from fastapi import FastAPI, Request
from psycopg_pool import AsyncConnectionPool
from starlette.responses import Response

from router import openapi
from router.api import dlq, health, logs
from router.api.errors import install_error_handlers
from router.api.route import RoutePath
from router.dispatch import Dispatcher, create_client_session
from router.embedded_db import resolve_database_url
from router.metrics import Metrics
from router.routing import RoutingTable, load_routing_table
from router.settings import Settings
from router.store.pool import open_pool
from router.store.recovery import run_maintenance
from router.store.writer import GroupCommitWriter

log = structlog.get_logger("router.app")


@dataclass
class Runtime:
    """What the lifespan opens; handlers read it from app.state.runtime."""

    settings: Settings
    table: RoutingTable
    metrics: Metrics
    pool: AsyncConnectionPool | None = None
    session: aiohttp.ClientSession | None = None
    writer: GroupCommitWriter | None = None
    dispatcher: Dispatcher | None = None
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

    async def route_signal(request: Request) -> Response:
        route_path = runtime.route_path
        assert route_path is not None, "the lifespan has not run"
        return await route_path.handle(request)

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


async def _start(runtime: Runtime) -> None:
    settings = runtime.settings
    url = await asyncio.to_thread(resolve_database_url, settings)
    # wait=False: the router starts while the database is away and heals when it returns;
    # /health/ready says which.
    runtime.pool = await open_pool(
        url, min_size=settings.db_pool_min, max_size=settings.db_pool_max, wait=False
    )
    runtime.session = create_client_session()
    runtime.writer = GroupCommitWriter(runtime.pool, metrics=runtime.metrics)
    runtime.writer.start()
    dispatcher = runtime.dispatcher = Dispatcher(
        runtime.session, runtime.table.agents.values(), observer=runtime.metrics
    )
    runtime.route_path = RoutePath(
        table=runtime.table,
        dispatcher=dispatcher,
        writer=runtime.writer,
        pool=runtime.pool,
        metrics=runtime.metrics,
        route_keys=settings.route_keys,
        max_body_bytes=settings.max_body_bytes,
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
    log.info(
        "router_started",
        routes=runtime.table.source,
        kinds=list(runtime.table.kinds),
        agents=list(runtime.table.agents),
    )


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
    if runtime.pool is not None:
        await runtime.pool.close()
    log.info("router_stopped")
