"""Database errors as the rest of the router sees them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import psycopg_pool
from psycopg import AsyncConnection

# SQLSTATE classes that say the server is away, busy or gave up on the statement (connection,
# authorization, transaction rollback, resources, limits, state, operator, system): psycopg
# raises OperationalError for these, and asyncpg's errors are sorted by the same classes.
_UNAVAILABLE_CLASSES = frozenset({"08", "28", "40", "53", "54", "55", "57", "58"})


class StoreError(Exception):
    """The database failed."""


class DatabaseUnavailable(StoreError):
    """PostgreSQL is unreachable or did not answer in time."""


class Overloaded(StoreError):
    """Too many claims are waiting for the database; nothing was recorded."""


class RejectedByDatabase(StoreError):
    """PostgreSQL refused the data itself (a value it cannot store)."""


@contextlib.contextmanager
def wrap_database_errors() -> Iterator[None]:
    """Map psycopg's and asyncpg's connection failures to DatabaseUnavailable, the rest to
    StoreError."""
    try:
        yield
    except (
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
        TimeoutError,
        OSError,
        asyncpg.InterfaceError,
    ) as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
    except (psycopg.DataError, asyncpg.DataError) as exc:
        raise RejectedByDatabase(f"the database refused the data: {_first_line(exc)}") from exc
    except asyncpg.PostgresError as exc:
        if str(exc.sqlstate)[:2] in _UNAVAILABLE_CLASSES:
            raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
        raise StoreError(f"database error: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"database error: {_first_line(exc)}") from exc


@contextlib.asynccontextmanager
async def connection(pool: psycopg_pool.AsyncConnectionPool) -> AsyncIterator[AsyncConnection]:
    """A pool connection whose failures, getting it included, leave as StoreError: the store's
    one door to PostgreSQL, as a connector is in procrastinate."""
    with wrap_database_errors():
        async with pool.connection() as conn:
            yield conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
