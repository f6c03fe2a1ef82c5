"""Parsing and validation of signals, and log_id derivation."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest

from router.signals import MAX_DEPTH, InvalidSignal, derive_log_id, parse_signal


def parse(body: Any) -> Any:
    return parse_signal(orjson.dumps(body))


def refused(raw: bytes) -> InvalidSignal:
    with pytest.raises(InvalidSignal) as info:
        parse_signal(raw)
    return info.value


def test_valid_signal_collects_strings_in_document_order() -> None:
    """String values at any depth are collected for classification; keys are not."""
    s = parse({"sender_id": "u", "payload": {"a": ["x", {"key": "y"}, 3], "b": "z"}})
    assert s.strings == ["x", "y", "z"]
    assert s.sender_id == "u" and s.metadata is None and s.timestamp is None


def test_same_body_same_hash_regardless_of_key_order() -> None:
    """Two bodies equal as JSON values hash the same; a different metadata does not."""
    a = parse_signal(b'{"sender_id":"u","log_id":"x","payload":{"a":1,"b":2},"metadata":{"k":1}}')
    b = parse_signal(
        b'{ "payload":{"b":2, "a":1},"metadata":{"k":1},"log_id":"x", "sender_id":"u"}'
    )
    c = parse_signal(b'{"sender_id":"u","log_id":"x","payload":{"a":1,"b":2},"metadata":{"k":2}}')
    assert a.body_hash == b.body_hash
    assert a.body_hash != c.body_hash


def test_derived_log_id_is_deterministic_with_timestamp() -> None:
    """With a timestamp, the same sender, time and payload always give the same log_id."""
    body = {"sender_id": "u", "timestamp": "2026-01-01T00:00:00Z", "payload": {"b": 1, "a": 2}}
    first = parse(body).log_id
    again = parse_signal(
        b'{"payload":{"a":2,"b":1},"timestamp":"2026-01-01T00:00:00Z","sender_id":"u"}'
    ).log_id
    assert first == again
    assert first != parse({**body, "sender_id": "v"}).log_id
    assert first != parse({**body, "timestamp": "2026-01-01T00:00:01Z"}).log_id
    assert first != parse({**body, "payload": {"a": 3}}).log_id


def test_derived_log_id_without_timestamp_is_never_repeated() -> None:
    """Without a timestamp the receive time stands in, so equal bodies get distinct log_ids."""
    ids = {derive_log_id("u", None, {"a": 1}) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 200 for i in ids)


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        (b"not json", 400, "invalid_json", None),
        (b"", 400, "invalid_json", None),
        (b"[1,2]", 422, "invalid_body", None),
        (b'{"payload":{}}', 422, "missing_field", "sender_id"),
        (b'{"sender_id":"u"}', 422, "missing_field", "payload"),
        (b'{"sender_id":1,"payload":{}}', 422, "invalid_type", "sender_id"),
        (b'{"sender_id":"","payload":{}}', 422, "invalid_length", "sender_id"),
        (b'{"sender_id":"u","payload":[]}', 422, "invalid_type", "payload"),
        (b'{"sender_id":"u","payload":{},"kind":"x"}', 422, "unknown_field", "kind"),
        (b'{"sender_id":"u","payload":{},"metadata":3}', 422, "invalid_type", "metadata"),
        (b'{"sender_id":"u","payload":{},"log_id":"a b"}', 422, "invalid_log_id", "log_id"),
        (b'{"sender_id":"u","payload":{},"log_id":""}', 422, "invalid_log_id", "log_id"),
        (b'{"sender_id":"u","payload":{},"log_id":7}', 422, "invalid_log_id", "log_id"),
        (
            b'{"sender_id":"u","payload":{},"timestamp":"yesterday"}',
            422,
            "invalid_timestamp",
            "timestamp",
        ),
        (
            b'{"sender_id":"u","payload":{},"timestamp":"2026-13-01T00:00:00Z"}',
            422,
            "invalid_timestamp",
            "timestamp",
        ),
        (
            b'{"sender_id":"u","payload":{},"timestamp":"2026-01-01T00:00:00"}',
            422,
            "invalid_timestamp",
            "timestamp",
        ),
        (b'{"sender_id":"a\\u0000","payload":{}}', 422, "unstorable", "sender_id"),
        (b'{"sender_id":"u","payload":{"a":["ok","b\\u0000"]}}', 422, "unstorable", "payload.a[1]"),
        (b'{"sender_id":"u","payload":{"k\\u0000":1}}', 422, "unstorable", "payload"),
        (
            b'{"sender_id":"u","payload":{},"metadata":{"x":"\\u0000"}}',
            422,
            "unstorable",
            "metadata.x",
        ),
        (b'{"sender_id":"u","payload":{"s":"\\ud800"}}', 400, "invalid_json", None),
    ],
)
def test_bad_bodies_are_refused_with_the_field_named(
    raw: bytes, status: int, code: str, field: str | None
) -> None:
    """Each malformed or unstorable body is refused with its status, code and field."""
    err = refused(raw)
    assert (err.status, err.code, err.field) == (status, code, field)
    assert err.message


def test_sender_id_length_limit() -> None:
    """sender_id may be 200 characters, not 201."""
    assert parse({"sender_id": "x" * 200, "payload": {}}).sender_id == "x" * 200
    assert refused(orjson.dumps({"sender_id": "x" * 201, "payload": {}})).code == "invalid_length"


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    """A payload nested past MAX_DEPTH is a 422, not a serializer crash later."""
    ok = b'{"sender_id":"u","payload":' + b'{"a":' * (MAX_DEPTH - 1) + b"1" + b"}" * MAX_DEPTH
    assert parse_signal(ok).sender_id == "u"
    deep = b'{"sender_id":"u","payload":{"a":' + b"[" * 600 + b"]" * 600 + b"}}"
    assert refused(deep).code == "too_deep"


def test_valid_timestamps_are_accepted() -> None:
    """RFC 3339 forms with Z, offsets and fractions are accepted."""
    for ts in (
        "2026-11-23T10:00:00Z",
        "2026-11-23t10:00:00.123456+02:00",
        "2026-11-23 10:00:00-05:30",
    ):
        assert parse({"sender_id": "u", "payload": {}, "timestamp": ts}).timestamp == ts


def test_null_optional_fields_mean_absent() -> None:
    """metadata, timestamp and log_id may be null, meaning not given."""
    s = parse(
        {"sender_id": "u", "payload": {}, "metadata": None, "timestamp": None, "log_id": None}
    )
    assert s.metadata is None and s.timestamp is None and s.log_id.startswith("sig-")


def _numbers(payload: bytes, metadata: bytes = b"null") -> bytes:
    return b'{"sender_id":"u","payload":' + payload + b',"metadata":' + metadata + b"}"


@pytest.mark.parametrize(
    ("raw", "field", "number"),
    [
        # Beyond 64 bits: orjson makes a double of it (1.8446744073709552e+19).
        (
            _numbers(b'{"items":[1,2,{"n":18446744073709551617}]}'),
            "payload.items[2].n",
            "18446744073709551617",
        ),
        (_numbers(b'{"n":-9223372036854775809}'), "payload.n", "-9223372036854775809"),
        # A double holds 1e20 exactly, but it would be forwarded as a decimal, not an integer.
        (_numbers(b'{"n":100000000000000000000}'), "payload.n", "100000000000000000000"),
        # More digits than a double keeps: it would become 0.1.
        (
            _numbers(b"{}", b'{"x":{"y":[0.10000000000000001]}}'),
            "metadata.x.y[0]",
            "0.10000000000000001",
        ),
        # Below the smallest double: it would become 0.0; subnormal: fewer digits kept.
        (_numbers(b'{"n":1e-400}'), "payload.n", "1e-400"),
        (_numbers(b'{"n":1.23456789012345E-320}'), "payload.n", "1.23456789012345E-320"),
        # The first inexact one is named.
        (
            _numbers(b'{"a":1.5,"b":[12345678901234567890123,0.1000000000000000055]}'),
            "payload.b[0]",
            "12345678901234567890123",
        ),
    ],
)
def test_number_the_router_cannot_keep_is_refused_naming_it(
    raw: bytes, field: str, number: str
) -> None:
    """An integer beyond 64 bits or a decimal a double does not keep: 422 inexact_number."""
    err = refused(raw)
    assert (err.status, err.code, err.field) == (422, "inexact_number", field)
    assert number in err.message


def test_inexact_number_message_is_clipped() -> None:
    """A 300-digit integer is named by its first digits and its length, not whole."""
    err = refused(_numbers(b'{"n":' + b"9" * 300 + b"}"))
    assert err.code == "inexact_number" and err.field == "payload.n"
    assert "9" * 40 + "... (300 chars)" in err.message and "9" * 41 not in err.message


def _values(raw: bytes) -> Any:
    """A document with each number as its type and exact value (1.0 is not 1, nor 1e20)."""

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return (type(value).__name__, value)
        return value

    return typed(json.loads(raw, parse_float=Decimal))


@pytest.mark.parametrize(
    "payload",
    [
        b'{"n":18446744073709551615,"m":-9223372036854775808,"k":9007199254740993}',
        b'{"a":0.30000000000000004,"b":5e-324,"c":2.2250738585072014e-308,"d":1.7976931348623157e308}',
        # Equal as values to what orjson writes back (1.0, 100.0, 1.5).
        b'{"a":1.0000000000000000000,"b":1E2,"c":1.50000000000000000000e0,"d":-0.0}',
        # Long digit runs in strings only send the body down the exact re-check.
        b'{"s":"12345678901234567890","t":"1e-400","f":0.5}',
        # A repeated key keeps its last value, and that one is exact.
        b'{"n":0.10000000000000001,"n":0.25}',
    ],
)
def test_numbers_the_router_keeps_are_kept_exactly(payload: bytes) -> None:
    """Accepted numbers re-serialize (as orjson stores and forwards them) to the same values."""
    signal = parse_signal(_numbers(payload, payload))
    assert _values(orjson.dumps(signal.payload)) == _values(payload)
    assert _values(orjson.dumps(signal.metadata)) == _values(payload)


def test_only_a_log_id_from_the_receive_time_is_not_deduplicable() -> None:
    """No log_id and no timestamp: the derived log_id is unique; any other is deduplicable."""
    body = b'{"sender_id": "u", "payload": {"m": 1}'
    assert not parse_signal(body + b"}").deduplicable
    assert parse_signal(body + b', "timestamp": "2026-12-06T10:00:00Z"}').deduplicable
    assert parse_signal(body + b', "log_id": "given-1"}').deduplicable
