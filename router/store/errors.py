"""Database errors as the rest of the router sees them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import psycopg_pool


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
    """Map psycopg's connection failures to DatabaseUnavailable, the rest to StoreError."""
    try:
        yield
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, TimeoutError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
    except psycopg.DataError as exc:
        raise RejectedByDatabase(f"the database refused the data: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"database error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
