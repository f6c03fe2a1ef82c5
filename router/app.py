"""create_app(settings): the FastAPI app; its lifespan opens the pool, writer, client and tasks."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from router import openapi
from router.api import console, dlq, health, logs, stats
from router.api.auth import ApiKeys
from router.api.errors import install_error_handlers, starting
from router.api.route import RoutePath
from router.balance import replica_labels
from router.http_protocol import ROUTE_PATH_STATE
from router.metrics import Metrics
from router.model import SignalBody
from router.routing import RoutingTable
from router.routing_file import load_routing_table
from router.runtime import AppConfig, Runtime, open_runtime
from router.settings import Settings

GC_GEN0_THRESHOLD = 20_000


def create_app(settings: Settings, *, table: RoutingTable | None = None) -> FastAPI:
    """Build the app; the routing table loads here so a bad table stops the start."""
    settings.require_api_key()
    table = table or load_routing_table(settings.routes_file)
    config = AppConfig(
        settings=settings,
        table=table,
        metrics=Metrics(
            kinds=table.kinds,
            agents={a.name: replica_labels(a.urls) for a in table.agents.values()},
        ),
        keys=ApiKeys(settings.route_keys, settings.admin_keys),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, RoutePath]]:
        runtime = await open_runtime(config)
        app.state.runtime = runtime
        _tune_gc()
        try:
            # The lifespan state: where uvicorn's protocol finds the route path it serves
            # POST /route with (router.http_protocol).
            yield {ROUTE_PATH_STATE: runtime.route_path}
        finally:
            del app.state.runtime
            await runtime.close()

    # Swagger UI's assets come from the fastapi-offline package: /docs works with no internet.
    app = FastAPIOffline(
        title="Signal router",
        version="0.1.0",
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
    )
    # fastapi-offline is a factory of plain FastAPI apps: the one it built gets RouterApp's
    # __call__ (a subclass adding no state, so the object is the same in every other way).
    app.__class__ = RouterApp
    app.state.config = config
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    install_error_handlers(app)

    async def route_signal(request: Request) -> Response:
        # Documents POST /route in the OpenAPI schema; requests are answered by RouterApp
        # and reach this only before the lifespan has started the hot path.
        raise starting()

    app.add_api_route(
        "/route",
        route_signal,
        methods=["POST"],
        summary="Route one signal to its agents",
        tags=["route"],
        openapi_extra=openapi.request_body(SignalBody),
        responses=openapi.ROUTE_RESPONSES,
        response_model=None,
    )
    app.include_router(health.router)
    app.include_router(logs.router)
    app.include_router(dlq.router)
    app.include_router(stats.router)
    app.include_router(console.router)

    async def metrics_endpoint() -> Response:
        body, content_type = config.metrics.render()
        return Response(body, media_type=content_type)

    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics, summed over workers",
        tags=["health"],
        response_model=None,
        response_class=PlainTextResponse,
    )
    return app


class RouterApp(FastAPI):
    """The FastAPI app, but POST /route goes straight to the hot path: it skips FastAPI's
    telemetry check, Starlette's error, exception and body-limit layers (each wraps every
    send) and the router; the route path gives every failure the contract's shape itself."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: Runtime | None = getattr(self.state, "runtime", None)
        if (
            runtime is not None
            and scope["type"] == "http"
            and scope["path"] == "/route"
            and scope["method"] == "POST"
        ):
            await runtime.route_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


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
