"""The psycopg connection pools: opened in the app's lifespan, one per kind of work."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A request must learn that PostgreSQL is away within 2 s (the contract), so nothing
# on the request path waits longer than this for a connection.
CONNECT_TIMEOUT_S = 1.5


class DatabaseClock:
    """The database's wall clock as seen from here: the offset is measured on every new
    connection, so a claim's validity is judged on the clock that will check it."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        """Seconds since the epoch on the database's clock (estimated)."""
        return time.time() + self.offset_s

    async def measure(self, conn: AsyncConnection) -> None:
        """Update the offset from one round trip (its midpoint stands for the server's read)."""
        before = time.time()
        cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        row = await cur.fetchone()
        after = time.time()
        if row is not None:
            self.offset_s = float(row[0]) - (before + after) / 2


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    wait: bool,
    synchronous_commit: bool = True,
    statement_timeout_s: float | None = None,
    clock: DatabaseClock | None = None,
    name: str = "signal-router",
) -> AsyncConnectionPool:
    """Open the pool; with `wait`, fail when the database cannot be reached at start.

    `synchronous_commit=False` makes every commit of the pool's sessions skip the wait for
    the WAL flush: for writes that protect against the router dying, not the database.
    `statement_timeout_s` bounds every statement, so one that hangs (a lock, a stalled
    server) frees its connection and whatever queues behind it.
    """
    options = []
    if not synchronous_commit:
        options.append("-c synchronous_commit=off")
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
        configure=_configure(clock),
        kwargs=kwargs,
        max_idle=300,
        name=name,
    )
    await pool.open(wait=wait, timeout=10)
    return pool


def _configure(clock: DatabaseClock | None) -> Callable[[AsyncConnection], Awaitable[None]]:
    async def configure(conn: AsyncConnection) -> None:
        # Autocommit: every unit of work opens its own explicit transaction, so a failed
        # statement never leaves a connection idle in an aborted transaction.
        await conn.set_autocommit(True)
        if clock is not None:
            await clock.measure(conn)

    return configure
