"""The psycopg connection pool: opened in the app's lifespan, shared by every query."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A request must learn that PostgreSQL is away within 2 s (the contract), so nothing
# on the request path waits longer than this for a connection.
CONNECT_TIMEOUT_S = 1.5


async def _configure(conn: AsyncConnection) -> None:
    # Autocommit: every unit of work opens its own explicit transaction, so a failed
    # statement never leaves a connection idle in an aborted transaction.
    await conn.set_autocommit(True)


async def open_pool(url: str, *, min_size: int, max_size: int, wait: bool) -> AsyncConnectionPool:
    """Open the pool; with `wait`, fail when the database cannot be reached at start."""
    pool: AsyncConnectionPool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=CONNECT_TIMEOUT_S,
        configure=_configure,
        kwargs={"connect_timeout": 2, "application_name": "signal-router"},
        max_idle=300,
    )
    await pool.open(wait=wait, timeout=10)
    return pool
