"""Query parameters and JSON answers shared by the admin endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from router.api.errors import JSON, ApiError
from router.signals import RFC3339_RE

MAX_FILTER_CHARS = 1000
C = TypeVar("C", bound=str)


def text_filter(value: str | None, field: str) -> str | None:
    """An exact-match filter; empty means none, NUL (unstorable) or a huge value is refused."""
    if not value:
        return None
    if "\x00" in value or len(value) > MAX_FILTER_CHARS:
        raise ApiError(
            422,
            "invalid_filter",
            f"{field} must be at most {MAX_FILTER_CHARS} characters, without NUL",
            field,
        )
    return value


def choice_filter(value: str | None, field: str, choices: tuple[C, ...]) -> C | None:
    """One of `choices`; empty means none."""
    if not value:
        return None
    for choice in choices:
        if value == choice:
            return choice
    raise ApiError(422, "invalid_filter", f"{field} must be one of {', '.join(choices)}", field)


def time_filter(value: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time with its offset; empty means none."""
    if not value:
        return None
    message = f"{field} must be an RFC 3339 date-time such as 2026-11-23T10:00:00Z"
    if RFC3339_RE.fullmatch(value) is None:
        raise ApiError(422, "invalid_timestamp", message, field)
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError:
        raise ApiError(422, "invalid_timestamp", message, field) from None


def json_response(body: Any) -> Response:
    """A JSON answer; datetimes as RFC 3339 in UTC (`…Z`)."""
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=JSON)
