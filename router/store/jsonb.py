"""Reading jsonb the way the route path wrote it, so every value read can be written back out."""

from __future__ import annotations

import json
from typing import Any

import orjson
from psycopg.abc import AdaptContext
from psycopg.types.json import set_json_loads

_INT64 = range(-(2**63), 2**64)


def _int_or_float(text: str) -> int | float:
    value = int(text)
    return value if value in _INT64 else float(text)  # inf past float's range


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """orjson's reading (an integer past 64 bits becomes a float, as when it was routed).

    jsonb prints 1.2e+29 as 120000000000000000000000000000, which the standard loader
    would hand back as an integer orjson cannot encode; a value written by other tools
    that orjson refuses falls back to the standard loader, big integers as floats.
    """
    raw = bytes(data) if isinstance(data, memoryview | bytearray) else data
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw, parse_int=_int_or_float)


def use_orjson(context: AdaptContext) -> None:
    """Make `context` (a connection or cursor) load json and jsonb with `loads`."""
    set_json_loads(loads, context)
