"""Named SQL queries, loaded once from the package's .sql files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into {name: sql}; each query runs to the next `-- name:` line."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def _all() -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    for entry in resources.files("router.store").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            for name, sql in parse_queries(entry.read_text(encoding="utf-8")).items():
                if name in queries:
                    raise RuntimeError(f"query {name!r} is defined twice")
                queries[name] = sql
    return queries


def query(name: str) -> LiteralString:
    """The SQL text of a named query (static text from the package, never user input)."""
    return _all()[name]


_NAMED_PARAM = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class NumberedQuery:
    """A named query with asyncpg's `$1, $2…` placeholders, numbered in order of first use."""

    sql: str
    params: tuple[str, ...]

    def args(self, values: Mapping[str, object]) -> list[object]:
        """The positional arguments, in the placeholders' order."""
        return [values[name] for name in self.params]


def to_numbered(sql: str) -> NumberedQuery:
    """psycopg's `%(name)s` placeholders as asyncpg's `$n`, a repeated name keeping its number."""
    if "%%" in sql:
        raise ValueError("a query that escapes % is not translatable for asyncpg")
    params: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in params:
            params.append(match.group(1))
        return f"${params.index(match.group(1)) + 1}"

    return NumberedQuery(_NAMED_PARAM.sub(number, sql), tuple(params))


@cache
def numbered(name: str) -> NumberedQuery:
    """The named query for asyncpg (the .sql files use psycopg's `%(name)s`)."""
    return to_numbered(query(name))


# The log's parent table, and a table name as PostgreSQL prints a regclass in the default
# search_path: plain, lower case, maybe schema-qualified (anything else is never spliced).
LOG_TABLE = "signal_log"
_PLAIN_TABLE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


def is_plain_table(name: str) -> bool:
    """True for a table name finish_query may write into the SQL text as it is."""
    return _PLAIN_TABLE.fullmatch(name) is not None


def finish_query(partition: str, *, lettering: bool, repeatable: bool = True) -> str:
    """finish_signals into `partition` (a name the database gave, never user input), ended
    by the answer that writes DLQ entries when `lettering`, else by the one that has none,
    with the condition a batch holding a log_id that can repeat needs when `repeatable`."""
    if not is_plain_table(partition):
        raise ValueError(f"not a plain table name: {partition!r}")
    where = query("finish_where_repeatable") if repeatable else ""
    answer = query("finish_answer_lettering" if lettering else "finish_answer")
    body = query("finish_signals").replace("{where}", where)
    return body.replace("{partition}", partition) + "\n" + answer


@lru_cache(maxsize=16)
def finish_statement(partition: str, lettering: bool, repeatable: bool) -> NumberedQuery:
    """finish_query for asyncpg; one text per partition, answer and condition."""
    return to_numbered(finish_query(partition, lettering=lettering, repeatable=repeatable))
