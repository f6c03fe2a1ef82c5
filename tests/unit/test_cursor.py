"""The opaque keyset cursors of /logs and /dlq."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from router.api.cursor import (
    InvalidCursor,
    decode_dlq_cursor,
    decode_log_cursor,
    encode_dlq_cursor,
    encode_log_cursor,
)


def forge(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_log_cursor_round_trips_to_the_microsecond() -> None:
    """A /logs cursor gives back the exact created_at and log_id it was made from."""
    created = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    token = encode_log_cursor(created, "sig-abc:1.2_3")
    assert decode_log_cursor(token) == (created, "sig-abc:1.2_3")
    assert token.replace("-", "").replace("_", "").isalnum()  # safe in a query string as is


def test_dlq_cursor_round_trips() -> None:
    """A /dlq cursor gives back its id, up to the largest bigint."""
    for entry_id in (1, 42, 2**63 - 1):
        assert decode_dlq_cursor(encode_dlq_cursor(entry_id)) == entry_id


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "not a cursor",
        "A" * 601,
        forge(b"not json"),
        forge(b"{}"),
        forge(b"[]"),
        forge(b'["l"]'),
        forge(b'["l", "2026-11-23T10:00:00+00:00"]'),
        forge(b'["l", "2026-11-23T10:00:00", "x"]'),  # no offset
        forge(b'["l", "yesterday", "x"]'),
        forge(b'["l", 5, "x"]'),
        forge(b'["l", "2026-11-23T10:00:00+00:00", 5]'),
        forge(b'["l", "2026-11-23T10:00:00+00:00", "a\\u0000b"]'),
        forge(b'["l", "2026-11-23T10:00:00+00:00", "x", "extra"]'),
        forge(b'["d", 5]'),  # a /dlq cursor
    ],
)
def test_malformed_log_cursors_are_refused(token: str) -> None:
    """Anything but a cursor this API made for /logs raises InvalidCursor."""
    with pytest.raises(InvalidCursor):
        decode_log_cursor(token)


@pytest.mark.parametrize(
    "raw",
    [b'["d"]', b'["d", 0]', b'["d", -1]', b'["d", true]', b'["d", 1.5]', b'["d", "5"]',
     b'["d", 9223372036854775808]', b'["l", 5]', b'["d", 5, 6]'],
)  # fmt: skip
def test_malformed_dlq_cursors_are_refused(raw: bytes) -> None:
    """A /dlq cursor must hold one id in bigint range."""
    with pytest.raises(InvalidCursor):
        decode_dlq_cursor(forge(raw))


def test_padding_is_optional() -> None:
    """Cursors are given without '=' padding; a padded one is accepted too."""
    token = encode_log_cursor(datetime(2026, 1, 1, tzinfo=UTC), "a")
    assert "=" not in token
    padded = token + "=" * (-len(token) % 4)
    assert padded != token and decode_log_cursor(padded) == decode_log_cursor(token)
