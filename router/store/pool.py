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


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    wait: bool,
    synchronous_commit: bool = True,
    name: str = "signal-router",
) -> AsyncConnectionPool:
    """Open the pool; with `wait`, fail when the database cannot be reached at start.

    `synchronous_commit=False` makes every commit of the pool's sessions skip the wait for
    the WAL flush: for writes that protect against the router dying, not the database.
    """
    kwargs: dict[str, str | int] = {"connect_timeout": 2, "application_name": name}
    if not synchronous_commit:
        kwargs["options"] = "-c synchronous_commit=off"
    pool: AsyncConnectionPool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=CONNECT_TIMEOUT_S,
        configure=_configure,
        kwargs=kwargs,
        max_idle=300,
        name=name,
    )
    await pool.open(wait=wait, timeout=10)
    return pool
