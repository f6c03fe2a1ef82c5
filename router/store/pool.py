"""The psycopg connection pools: opened in the app's lifespan, one per kind of work."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A request must learn that PostgreSQL is away within 2 s (the contract), so nothing
# on the request path waits longer than this for a connection.
CONNECT_TIMEOUT_S = 1.5


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    wait: bool,
    statement_timeout_s: float | None = None,
    name: str = "signal-router",
) -> AsyncConnectionPool:
    """Open the pool; with `wait`, fail when the database cannot be reached at start.

    `statement_timeout_s` bounds every statement, so one that hangs (a lock, a stalled
    server) frees its connection and whatever queues behind it.
    """
    options = []
    if statement_timeout_s is not None:
        options.append(f"-c statement_timeout={int(statement_timeout_s * 1000)}")
    kwargs: dict[str, str | int] = {"connect_timeout": 2, "application_name": name}
    if options:
        kwargs["options"] = " ".join(options)
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


async def _configure(conn: AsyncConnection) -> None:
    # Autocommit: every unit of work opens its own explicit transaction, so a failed
    # statement never leaves a connection idle in an aborted transaction.
    await conn.set_autocommit(True)
