"""Liveness and readiness: fast, and never a 500."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.errors import JSON

READY_TIMEOUT_S = 1.0

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: 200 while the process serves")
async def health() -> Response:
    """200 while the process serves."""
    return Response(b'{"status":"ok"}', media_type=JSON)


@router.get(
    "/health/ready",
    summary="Readiness: PostgreSQL answers within 1 s and the routing table is loaded",
    responses={503: {"description": "a check failed; the body names it"}},
)
async def ready(request: Request) -> Response:
    """200 when the database answers within 1 s and the routing table is loaded, else 503."""
    runtime = getattr(request.app.state, "runtime", None)
    checks = {"database": "ok", "routing_table": "ok"}
    if runtime is None:
        # The table loads in create_app, the pool in the lifespan: neither is ready yet.
        checks["routing_table"] = checks["database"] = "starting"
    else:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                async with runtime.pool.connection(timeout=READY_TIMEOUT_S) as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:  # any failure here means "not ready", never a 500
            checks["database"] = f"unavailable: {str(exc).strip()[:200] or type(exc).__name__}"
    failing = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
    if not failing:
        return Response(orjson.dumps({"status": "ok", "checks": checks}), media_type=JSON)
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {"code": "not_ready", "message": "; ".join(failing), "field": None},
    }
    return Response(orjson.dumps(body), 503, media_type=JSON)
