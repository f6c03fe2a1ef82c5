"""The asyncpg pools of the group-commit writer: the route path's own statements.

The writer's lanes send one statement per flush, two per signal; with psycopg's async
waiting (a reader registered and removed around every statement) a round trip cost this
machine 155 µs of CPU, with asyncpg's protocol (one write, answers parsed as they arrive,
statements prepared once) 75 µs. Everything else, replays, reads and maintenance, stays on
psycopg (store/pool.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

from router.store import jsonb
from router.store.errors import wrap_database_errors
from router.store.pool import CONNECT_TIMEOUT_S

if TYPE_CHECKING:  # generic only in asyncpg-stubs
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.pool.PoolConnectionProxy

# jsonb's binary format is a version byte, then the text.
_JSONB_VERSION = b"\x01"

# Every statement of the lanes finds rows by key, and their plans are cached for the
# connection's life (asyncpg's prepared statements, lock_log_id's PL/pgSQL). One made while a
# partition was analyzed empty reads it whole once it has grown, by a sequential scan: with
# 14 days of partitions and today's analyzed empty (this machine runs without autovacuum),
# deduplicable signals cost the database 890-1,744 µs each in the first session against
# 124-129 in later ones. With sequential scans off, an index is taken wherever one can
# serve. (On such a partition lock_log_id's lookup may still pick the created_at index for
# its range and read it whole; autovacuum's first analyze of the partition replaces the
# plan: docs/OPERATING.md, "Retention and partitions".)
LANE_PLANNER_SETTINGS = {"enable_seqscan": "off"}


class DatabaseClock:
    """The database's wall clock as seen from here: the offset is measured on every new
    connection, so a claim's validity is judged on the clock that will check it."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        """Seconds since the epoch on the database's clock (estimated)."""
        return time.time() + self.offset_s

    async def measure(self, conn: asyncpg.Connection[Any]) -> None:
        """Update the offset from one round trip (its midpoint stands for the server's read)."""
        before = time.time()
        value = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
        after = time.time()
        if value is not None:
            self.offset_s = float(value) - (before + after) / 2


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """The pool's reset on release: nothing to undo. The lanes run single autocommit
    statements (their advisory locks are the transaction's), and asyncpg's default reset
    (UNLISTEN, RESET ALL, unlock all) is a second round trip per statement."""


def _encode_jsonb(value: bytes | str | Any) -> bytes:
    # The writer hands over a batch already serialized by orjson: sent as it is.
    if isinstance(value, bytes):
        return _JSONB_VERSION + value
    if isinstance(value, str):
        return _JSONB_VERSION + value.encode()
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return jsonb.loads(data[1:])


async def open_writer_pool(
    url: str,
    *,
    max_size: int,
    synchronous_commit: bool = True,
    statement_timeout_s: float,
    clock: DatabaseClock | None = None,
    name: str,
) -> Pool:
    """A pool that opens its connections when first asked, so the router starts while the
    database is away. `synchronous_commit=False` for writes that protect against the router
    dying, not the database; `statement_timeout_s` bounds every statement on the server."""
    settings = {
        "application_name": name,
        "statement_timeout": str(int(statement_timeout_s * 1000)),
        **LANE_PLANNER_SETTINGS,
    }
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"

    async def init(conn: asyncpg.Connection[Any]) -> None:
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=_encode_jsonb,
            decoder=_decode_jsonb,
            format="binary",
        )
        if clock is not None:
            await clock.measure(conn)

    pool: Pool = asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        # The connect, then a client-side bound a little past the server's statement_timeout:
        # a server that stopped answering (SIGSTOP, a dead network) frees the lane too.
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=statement_timeout_s + 1.0,
        server_settings=settings,
        init=init,
        reset=_keep_session,
        # Idle connections are kept (there are at most two): with min_size=0, closing them
        # would make the first signal after a quiet spell pay a connect, introspection and
        # clock measurement. A connection the server dropped is replaced on its next use.
        max_inactive_connection_lifetime=0,
    )
    await pool
    return pool


class LaneConnection:
    """The one connection a writer lane keeps between its flushes.

    Acquiring and releasing a pool connection per statement cost 45 µs of CPU and as much
    wall time on this machine (asyncpg's release runs in a shielded task under a timeout),
    twice per signal. A lane sends one statement at a time, so it keeps one; a statement
    that fails for any reason hands it back (asyncpg closes a broken one) and the next
    flush takes a fresh one, as a per-statement acquire would have."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: Connection | None = None

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Run one statement on the kept connection; failures leave as StoreError."""
        with wrap_database_errors():
            conn = self._conn
            if conn is None:
                conn = self._conn = await self._pool.acquire()
            try:
                return await conn.fetch(sql, *args)
            except BaseException:
                self._conn = None
                await self._pool.release(conn)
                raise

    async def close(self) -> None:
        """Hand the kept connection back, so the pool can close."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


@contextlib.asynccontextmanager
async def writer_connection(pool: Pool) -> AsyncIterator[Connection]:
    """A pool connection whose failures, getting it included, leave as StoreError.

    No acquire timeout: asyncpg runs one through asyncio.wait_for, a task per acquire. The
    wait is bounded all the same: a new connection by the connect timeout, a busy one by
    command_timeout, and every caller on the route path by its own deadline."""
    with wrap_database_errors():
        async with pool.acquire() as conn:
            yield conn
