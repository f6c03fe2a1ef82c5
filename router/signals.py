"""The wire model of a signal: parsing, validation of everything PostgreSQL must store, log_id."""

from __future__ import annotations

import decimal
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from router.model import LOG_ID_PATTERN, MAX_SENDER_ID, ApiError, SignalBody

ALLOWED_KEYS = frozenset(SignalBody.model_fields)
LOG_ID_RE = re.compile(LOG_ID_PATTERN)
# orjson serializes at most 254 levels; the forwarded body wraps the payload in one more.
MAX_DEPTH = 200
# RFC 3339 date-time; datetime.fromisoformat then checks the calendar (no month 13).
RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)

# Receive-time log_ids must differ even for two signals in the same nanosecond.
_sequence = itertools.count()

# orjson keeps an integer within [-2**63, 2**64-1] and parses any other number as a double.
# A literal of at most 15 significant digits in a double's normal range always comes back
# from a double as the same number. Only a run of 16+ digits and dots, or a negative exponent
# of 3+ digits (a subnormal or an underflow to 0), can be a number a double does not keep.
# `translate` shapes the body in C (digits and dots become 0, E becomes e) so two substring
# searches find either; a hit elsewhere (in a string, say) only costs the exact re-check.
_NUMBER_SHAPE = bytes.maketrans(b"123456789.E", b"0000000000e")
_LONG_RUN = b"0" * 16
_TINY_EXPONENT = b"e-000"


class InvalidSignal(ApiError):
    """The request body is not a signal the router can accept."""


@dataclass(slots=True)
class Signal:
    """A validated signal, with what the hot path needs precomputed."""

    sender_id: str
    payload: dict[str, Any]
    metadata: dict[str, Any] | None
    timestamp: str | None
    log_id: str
    body_hash: str
    strings: list[str]
    # False for a log_id derived from the receive time (no log_id, no timestamp): no other
    # signal can carry it, so nothing needs looking up to deduplicate it.
    deduplicable: bool = True


def parse_signal(raw: bytes) -> Signal:
    """Parse and validate a POST /route body; raise InvalidSignal (400/422) naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidSignal(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise InvalidSignal(422, "invalid_body", "the body must be a JSON object")
    unknown = body.keys() - ALLOWED_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidSignal(
            422,
            "unknown_field",
            f"unknown field {name[:100]!r}; allowed: {', '.join(sorted(ALLOWED_KEYS))}",
            _field_name(name),
        )

    sender_id = body.get("sender_id")
    if sender_id is None:
        raise InvalidSignal(422, "missing_field", "sender_id is required", "sender_id")
    if type(sender_id) is not str:
        raise InvalidSignal(422, "invalid_type", "sender_id must be a string", "sender_id")
    if not 1 <= len(sender_id) <= MAX_SENDER_ID:
        raise InvalidSignal(
            422, "invalid_length", f"sender_id must be 1-{MAX_SENDER_ID} characters", "sender_id"
        )
    if "\x00" in sender_id:
        raise InvalidSignal(422, "unstorable", "sender_id must not contain NUL", "sender_id")

    payload = body.get("payload")
    if payload is None:
        raise InvalidSignal(422, "missing_field", "payload is required", "payload")
    if type(payload) is not dict:
        raise InvalidSignal(422, "invalid_type", "payload must be a JSON object", "payload")
    strings: list[str] = []
    floats = _check_storable(payload, "payload", strings)

    metadata = body.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            raise InvalidSignal(422, "invalid_type", "metadata must be a JSON object", "metadata")
        floats = _check_storable(metadata, "metadata", None) or floats
    # Only a double can stand for a number orjson did not keep exactly (it parses an integer
    # beyond 64 bits as one), so a document without one, the common case, is done.
    if floats and _may_be_inexact(raw):
        _check_exact_numbers(raw, payload, metadata)

    timestamp = body.get("timestamp")
    if timestamp is not None:
        _check_timestamp(timestamp)

    canonical = orjson.dumps([sender_id, payload, metadata, timestamp], option=orjson.OPT_SORT_KEYS)
    body_hash = hashlib.sha256(canonical).hexdigest()

    log_id = body.get("log_id")
    deduplicable = log_id is not None or timestamp is not None
    if log_id is None:
        log_id = derive_log_id(sender_id, timestamp, payload)
    elif type(log_id) is not str or LOG_ID_RE.fullmatch(log_id) is None:
        raise InvalidSignal(
            422, "invalid_log_id", "log_id must be 1-200 characters of [A-Za-z0-9._:-]", "log_id"
        )
    return Signal(sender_id, payload, metadata, timestamp, log_id, body_hash, strings, deduplicable)


def derive_log_id(sender_id: str, timestamp: str | None, payload: dict[str, Any]) -> str:
    """Deterministic from sender, event time and canonical payload.

    Without a timestamp the receive time stands in, so such a signal is never deduplicated.
    """
    if timestamp is None:
        timestamp = f"recv:{time.time_ns()}:{next(_sequence)}"
    payload_hash = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).digest()
    digest = hashlib.sha256(
        b"\x00".join((sender_id.encode(), timestamp.encode(), payload_hash))
    ).hexdigest()
    return f"sig-{digest[:40]}"


def _check_storable(value: Any, root: str, strings: list[str] | None) -> bool:
    """PostgreSQL cannot store NUL in text or jsonb; collect string values for classification.

    Returns whether the document holds a float (see _check_exact_numbers).
    """
    # Iterative, so a deep document cannot exhaust Python's recursion limit.
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    floats = False
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                _raise_unstorable(value, root)
            if strings is not None:
                strings.append(item)
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise InvalidSignal(
                    422, "too_deep", f"{root} is nested deeper than {MAX_DEPTH} levels", root
                )
            if kind is dict:
                for key in item:
                    if "\x00" in key:
                        _raise_unstorable(value, root)
                children = list(item.values())
            else:
                children = item
            # Reversed so strings are collected in document order.
            for child in reversed(children):
                push((child, depth + 1))
        elif kind is float:
            floats = True
    return floats


def _raise_unstorable(value: Any, root: str) -> None:
    """Find the first NUL's path (slow, only on the error path) and refuse the signal."""
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        if type(item) is str and "\x00" in item:
            break
        if type(item) is dict:
            if any("\x00" in key for key in item):
                break
            stack.extend((v, f"{path}.{k}") for k, v in reversed(item.items()))
        elif type(item) is list:
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
    path = path[:300]
    raise InvalidSignal(422, "unstorable", f"{path} contains a NUL character", path)


def _may_be_inexact(raw: bytes) -> bool:
    """Whether the body could hold a number literal a double does not keep (C speed)."""
    shape = raw.translate(_NUMBER_SHAPE)
    # find, not `in`: bytes.__contains__ first tries its operand as an int, at a cost.
    return shape.find(_LONG_RUN) >= 0 or shape.find(_TINY_EXPONENT) >= 0


def _check_exact_numbers(raw: bytes, payload: Any, metadata: Any) -> None:
    """Refuse a payload or metadata holding a number orjson did not keep exactly.

    Whether a literal is kept depends on the literal alone, so the stdlib parser serves to
    list every number literal of the body as written (it skips strings); orjson then parses
    and writes them back all at once: an integer must stay an integer (within [-2**63,
    2**64-1]), a decimal's text must come back equal as a Decimal.
    """
    decimals: list[str] = []
    integers: list[str] = []
    try:
        json.loads(raw, parse_float=decimals.append, parse_int=integers.append)
    except (ValueError, RecursionError):  # orjson took it, so never expected
        raise InvalidSignal(
            422, "inexact_number", "the body's numbers could not be checked for exactness"
        ) from None
    if _integers_kept(integers) and _decimals_kept(decimals):
        return
    # Slow, only on the error path: the literals again, in place, to name the first one.
    written = json.loads(raw, parse_float=_DecimalLiteral, parse_int=_IntegerLiteral)
    for root, fast in (("payload", payload), ("metadata", metadata)):
        if fast is not None:
            _refuse_inexact(fast, written[root], root)
    # Otherwise the literal was elsewhere (a repeated key's overwritten value, say): what the
    # router stores and forwards is exact.


def _integers_kept(literals: list[str]) -> bool:
    # 19 characters at most, sign included, is always within [-2**63, 2**64-1].
    if not literals or max(map(len, literals)) < 20:
        return True
    return float not in set(map(type, orjson.loads(f"[{','.join(literals)}]")))


def _decimals_kept(literals: list[str]) -> bool:
    if not literals:
        return True
    # What orjson makes of each, written back: what the signal is stored and forwarded as.
    texts = orjson.dumps(orjson.loads(f"[{','.join(literals)}]"))[1:-1].decode().split(",")
    return texts == literals or all(
        text == literal or decimal.Decimal(text) == decimal.Decimal(literal)
        for text, literal in zip(texts, literals, strict=True)
    )


class _DecimalLiteral(str):
    """A decimal number's literal as written."""


class _IntegerLiteral(str):
    """An integer's literal as written."""


def _refuse_inexact(fast: Any, written: Any, root: str) -> None:
    """Raise for the first number of `fast` (orjson's) that is not its literal in `written`."""
    stack: list[tuple[Any, Any, str]] = [(fast, written, root)]
    while stack:
        got, literal, path = stack.pop()
        if type(got) is dict:
            stack.extend((v, literal[k], f"{path}.{k}") for k, v in reversed(got.items()))
        elif type(got) is list:
            stack.extend((v, literal[i], f"{path}[{i}]") for i, v in reversed(list(enumerate(got))))
        elif type(got) is float and (
            type(literal) is _IntegerLiteral or not _decimals_kept([literal])
        ):
            path = path[:300]
            shown = literal if len(literal) <= 40 else f"{literal[:40]}... ({len(literal)} chars)"
            raise InvalidSignal(
                422,
                "inexact_number",
                f"{path} is the number {shown}, which the router cannot store and forward"
                " exactly: it keeps integers within [-2**63, 2**64-1] and decimals as doubles"
                f" (this one would become {orjson.dumps(got).decode()})",
                path,
            )


def _check_timestamp(value: Any) -> None:
    message = "timestamp must be an RFC 3339 date-time such as 2026-11-23T10:00:00Z"
    if type(value) is not str or RFC3339_RE.fullmatch(value) is None:
        raise InvalidSignal(422, "invalid_timestamp", message, "timestamp")
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise InvalidSignal(422, "invalid_timestamp", message, "timestamp") from None


def _field_name(name: str) -> str:
    return name[:100].replace("\x00", "\\u0000")
