"""What the admin handlers take from the running app."""

from __future__ import annotations

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from router.api.errors import starting
from router.runtime import AppConfig, Runtime


def config_of(request: Request) -> AppConfig:
    """What create_app built: settings, table, metrics, keys."""
    config: AppConfig = request.app.state.config
    return config


def runtime_of(request: Request) -> Runtime:
    """The open runtime; 503 starting before the lifespan has opened it."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise starting()
    return runtime


def pool_of(request: Request) -> AsyncConnectionPool:
    """The route path's pool, on the primary (the DLQ API reads and writes there)."""
    return runtime_of(request).pool


def read_pool_of(request: Request) -> AsyncConnectionPool:
    """The pool of GET /logs and GET /stats: the read replica when one is configured."""
    return runtime_of(request).read_pool
