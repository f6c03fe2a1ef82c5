"""Named SQL queries, loaded once from the package's .sql files."""

from __future__ import annotations

import re
from functools import cache
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
