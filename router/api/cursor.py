"""Opaque keyset cursors: urlsafe base64 of a small JSON array, tagged by the list it pages."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

import orjson

from router.model import MAX_ID

# A cursor is a position, never a query: it holds only the last row's sort key. The tag
# keeps a /dlq cursor from being read as a /logs one.
_LOGS = "l"
_DLQ = "d"
MAX_CURSOR_CHARS = 600
_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class InvalidCursor(ValueError):
    """The cursor was not made by this API (or was altered)."""


def _encode(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


def _decode(token: str, tag: str) -> list[Any]:
    if len(token) > MAX_CURSOR_CHARS or _B64.fullmatch(token) is None:
        raise InvalidCursor("not a cursor returned by this API")
    token = token.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor returned by this API") from None
    if type(value) is not list or not value or value[0] != tag:
        raise InvalidCursor("not a cursor of this list")
    return value


def encode_log_cursor(created_at: datetime, log_id: str) -> str:
    """The cursor that continues /logs after the row (created_at, log_id)."""
    return _encode([_LOGS, created_at.isoformat(), log_id])


def decode_log_cursor(token: str) -> tuple[datetime, str]:
    """(created_at, log_id) of the last row seen; raises InvalidCursor."""
    value = _decode(token, _LOGS)
    if len(value) != 3 or type(value[1]) is not str or type(value[2]) is not str:
        raise InvalidCursor("not a cursor of this list")
    try:
        created_at = datetime.fromisoformat(value[1])
    except ValueError:
        raise InvalidCursor("not a cursor of this list") from None
    log_id = value[2]
    if created_at.tzinfo is None or "\x00" in log_id or len(log_id) > 200:
        raise InvalidCursor("not a cursor of this list")
    return created_at, log_id


def encode_dlq_cursor(entry_id: int) -> str:
    """The cursor that continues /dlq after the entry `entry_id`."""
    return _encode([_DLQ, entry_id])


def decode_dlq_cursor(token: str) -> int:
    """The id of the last entry seen; raises InvalidCursor."""
    value = _decode(token, _DLQ)
    if len(value) != 2 or type(value[1]) is not int or not 1 <= value[1] <= MAX_ID:
        raise InvalidCursor("not a cursor of this list")
    entry_id: int = value[1]
    return entry_id
