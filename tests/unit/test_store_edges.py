"""The store's two edges that need no database: named queries for asyncpg, error mapping."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from router.store.errors import (
    DatabaseUnavailable,
    RejectedByDatabase,
    StoreError,
    wrap_database_errors,
)
from router.store.queries import (
    finish_query,
    finish_statement,
    is_plain_table,
    numbered,
    query,
    to_numbered,
)


def test_numbered_query_numbers_each_name_once_in_order_of_first_use() -> None:
    """`%(name)s` becomes `$n`, a repeated name keeps its number, args follow the numbers."""
    translated = to_numbered("SELECT %(b)s, %(a)s, %(b)s::text[]")
    assert translated.sql == "SELECT $1, $2, $1::text[]"
    assert translated.params == ("b", "a")
    assert translated.args({"a": 1, "b": 2}) == [2, 1]
    with pytest.raises(ValueError):
        to_numbered("SELECT 5 %% 2, %(a)s")


def test_every_writer_query_translates() -> None:
    """The lanes' statements have no placeholder left over and take the parameters they name."""
    for name, params in {
        "claim_signals": ("rows",),
        "existing_signals": ("log_ids",),
        "void_claims": ("log_ids", "tokens"),
    }.items():
        translated = numbered(name)
        assert translated.params == params, name
        assert "%(" not in translated.sql and "%(" in query(name), name
    for lettering in (False, True):
        for repeatable in (False, True):
            finish = finish_statement("signal_log_p20261207", lettering, repeatable)
            assert finish.params == ("rows",)
            assert "INSERT INTO signal_log_p20261207 AS s" in finish.sql
            assert ("INSERT INTO dlq_open" in finish.sql) is lettering
            assert ("lock_log_id" in finish.sql) is repeatable
            assert ("FROM signal_log_p20261207 AS c" in finish.sql) is repeatable
            assert "{" not in finish.sql and "%(" not in finish.sql


@pytest.mark.parametrize(
    "name", ["signal_log", "public.signal_log_p20261207", "signal_log_default"]
)
def test_a_plain_table_name_is_written_into_the_outcome_statement(name: str) -> None:
    assert f"INSERT INTO {name} AS s" in finish_query(name, lettering=False)


@pytest.mark.parametrize(
    "name", ['"Odd"', "x; DROP TABLE dlq", "signal_log p1", "", "Signal_Log", "a.b.c"]
)
def test_a_name_that_is_not_a_plain_table_never_reaches_sql_text(name: str) -> None:
    assert not is_plain_table(name)
    with pytest.raises(ValueError, match="not a plain table name"):
        finish_query(name, lettering=True)


def _postgres_error(sqlstate: str) -> asyncpg.PostgresError:
    return asyncpg.PostgresError.new({"C": sqlstate, "M": f"server said {sqlstate}"})


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionRefusedError("refused"), DatabaseUnavailable),
        (TimeoutError(), DatabaseUnavailable),
        (asyncpg.ConnectionDoesNotExistError("closed"), DatabaseUnavailable),
        (_postgres_error("57014"), DatabaseUnavailable),  # statement_timeout
        (_postgres_error("57P01"), DatabaseUnavailable),  # admin shutdown
        (_postgres_error("40P01"), DatabaseUnavailable),  # deadlock: retried like an outage
        (_postgres_error("22P02"), RejectedByDatabase),  # invalid text representation
        (_postgres_error("42P01"), StoreError),  # undefined table: a bug, not an outage
        (psycopg.OperationalError("gone"), DatabaseUnavailable),
        (psycopg.DataError("bad"), RejectedByDatabase),
    ],
)
def test_both_drivers_errors_map_onto_one_hierarchy(
    raised: Exception, expected: type[StoreError]
) -> None:
    """asyncpg's errors by SQLSTATE class land where psycopg's classes do."""
    with pytest.raises(StoreError) as caught, wrap_database_errors():
        raise raised
    assert type(caught.value) is expected
