"""What the admin handlers take from the running app."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from router.api.errors import starting

if TYPE_CHECKING:
    from router.app import Runtime


def runtime_of(request: Request) -> Runtime:
    """The app's Runtime (set by create_app)."""
    return cast("Runtime", request.app.state.runtime)


def pool_of(request: Request) -> AsyncConnectionPool:
    """The app's pool; 503 before the lifespan opened it."""
    pool = runtime_of(request).pool
    if pool is None:
        raise starting()
    return pool
