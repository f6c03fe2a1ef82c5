"""Liveness and readiness: fast, and never a 500."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.errors import JSON
from router.model import Health, Readiness
from router.store.writer_pool import writer_connection

READY_TIMEOUT_S = 1.0

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Liveness: 200 while the process serves",
    response_model=None,
    responses={200: {"model": Health, "description": "the process serves"}},
)
async def health() -> Response:
    """200 while the process serves."""
    body: Health = {"status": "ok"}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get(
    "/health/ready",
    summary="Readiness: PostgreSQL answers within 1 s and the routing table is loaded",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "every check passed"},
        503: {"model": Readiness, "description": "a check failed; `error` names it"},
    },
)
async def ready(request: Request) -> Response:
    """200 when the database answers within 1 s and the routing table is loaded, else 503."""
    runtime = getattr(request.app.state, "runtime", None)
    checks = {"database": "ok", "routing_table": "ok"}
    # Open breakers are listed, never failing the check: the router still routes around them.
    open_breakers: list[str] = []
    if runtime is None:
        # The table loads in create_app, the pool in the lifespan: neither is ready yet.
        checks["routing_table"] = checks["database"] = "starting"
    else:
        open_breakers = runtime.health.open_breakers()
        try:
            # The outcome lane's pool: what POST /route cannot work without. (It reconnects
            # on the next use, where psycopg's pool heals on a backoff of its own.)
            async with asyncio.timeout(READY_TIMEOUT_S):
                async with writer_connection(runtime.outcome_pool) as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:  # any failure here means "not ready", never a 500
            checks["database"] = f"unavailable: {str(exc).strip()[:200] or type(exc).__name__}"
    failing = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
    if not failing:
        ready: Readiness = {"status": "ok", "checks": checks, "open_breakers": open_breakers}
        return Response(orjson.dumps(ready), media_type=JSON)
    body: Readiness = {
        "status": "unavailable",
        "checks": checks,
        "open_breakers": open_breakers,
        "error": {"code": "not_ready", "message": "; ".join(failing), "field": None},
    }
    return Response(orjson.dumps(body), 503, media_type=JSON)
