"""Property tests: any document, any string, every code point: a Signal or a 4xx, never a crash."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from router.signals import InvalidSignal, parse_signal

# Every code point, surrogates included (orjson refuses to encode lone ones, which we skip).
any_text = st.text(st.characters(codec=None), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "sender_id": json_values,
        "payload": json_values | st.dictionaries(any_text, json_values, max_size=4),
        "log_id": json_values | st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
        "timestamp": json_values | st.just("2026-11-23T10:00:00Z"),
        "metadata": json_values,
        "kind": json_values,
    },
)


def _encode(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _strings(value: Any) -> list[str]:
    """Every key and string value inside a decoded JSON document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _check(raw: bytes) -> None:
    try:
        signal = parse_signal(raw)
    except InvalidSignal as exc:
        assert exc.status in (400, 422)
        assert exc.code and exc.message
        return
    # Accepted: everything PostgreSQL will be asked to store is storable. Only a real NUL is
    # refused there; the six characters backslash-u-0000 are ordinary text.
    for text in (signal.sender_id, signal.log_id, *_strings(signal.payload)):
        assert "\x00" not in text
    orjson.dumps({"payload": signal.payload, "metadata": signal.metadata})
    assert 1 <= len(signal.sender_id) <= 200 and 1 <= len(signal.log_id) <= 200


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_any_document_is_a_signal_or_a_client_error(body: dict[str, Any]) -> None:
    """Arbitrary JSON documents never raise anything but InvalidSignal."""
    raw = _encode(body)
    if raw is not None:
        _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_signal_or_a_client_error(raw: bytes) -> None:
    """Arbitrary bytes (invalid UTF-8 included) never raise anything but InvalidSignal."""
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(any_text, any_text)
def test_any_strings_in_every_field(sender: str, text: str) -> None:
    """Arbitrary strings as sender_id, payload values and keys: a Signal or a 4xx."""
    raw = _encode(
        {"sender_id": sender, "payload": {text: text, "n": [text]}, "metadata": {text: 1}}
    )
    if raw is not None:
        _check(raw)
