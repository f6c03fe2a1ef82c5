"""What the admin handlers take from the running app."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from router.api.errors import ApiError
from router.store.errors import StoreError

if TYPE_CHECKING:
    from router.app import Runtime

RETRY_AFTER = {"Retry-After": "1"}


def runtime_of(request: Request) -> Runtime:
    """The app's Runtime (set by create_app)."""
    return cast("Runtime", request.app.state.runtime)


def pool_of(request: Request) -> AsyncConnectionPool:
    """The app's pool; 503 before the lifespan opened it."""
    pool = runtime_of(request).pool
    if pool is None:
        raise ApiError(503, "database_unavailable", "the router is starting", headers=RETRY_AFTER)
    return pool


def store_failed(exc: StoreError) -> ApiError:
    """A database failure as the caller sees it: 503, try again."""
    return ApiError(503, "database_unavailable", str(exc), headers=RETRY_AFTER)
