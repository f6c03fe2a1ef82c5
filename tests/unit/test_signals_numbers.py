"""Property: every number is stored and forwarded exactly, or the signal is refused naming it."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from router.signals import InvalidSignal, parse_signal

# Number literals as a client may write them: integers of any size, decimals with any number
# of digits and any exponent (subnormals, underflows, overflows), and the shortest reprs of
# doubles, as most JSON writers produce.
integer_literals = st.integers(min_value=-(2**80), max_value=2**80).map(str) | st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})", fullmatch=True
)
decimal_literals = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.from_regex(r"0|[1-9][0-9]{0,25}", fullmatch=True),
    st.just("") | st.from_regex(r"\.[0-9]{1,25}", fullmatch=True),
    st.just("")
    | st.builds(
        lambda e, sign, n: f"{e}{sign}{n}",
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        st.integers(0, 400),
    ),
).filter(lambda text: "." in text or "e" in text.lower())
double_literals = st.floats(allow_nan=False, allow_infinity=False).map(repr)
literals = st.lists(integer_literals | decimal_literals | double_literals, min_size=1, max_size=8)


def _is_integer(literal: str) -> bool:
    return "." not in literal and "e" not in literal.lower()


def _overflows(literal: str) -> bool:
    """Beyond a double: not JSON to the parser (400), as before."""
    return math.isinf(float(literal))


def _kept(literal: str) -> bool:
    """What the contract asks, written independently of the router's code."""
    if _is_integer(literal):
        return -(2**63) <= int(literal) <= 2**64 - 1
    return Decimal(repr(float(literal))) == Decimal(literal)


def _typed(value: Any) -> Any:
    """Each number as its kind and exact value: 1.0 is not 1, and 1e20 is not 10**20."""
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return (type(value).__name__, value)


@settings(max_examples=500, deadline=None)
@given(literals)
@example(["18446744073709551617"])
@example(["9007199254740993", "0.30000000000000004", "5e-324"])
def test_every_accepted_number_comes_back_exactly(numbers: list[str]) -> None:
    """Accepted: orjson writes back each number equal, as a value of the same kind, to its
    literal. Refused: 422 naming the first number a double or 64 bits cannot keep."""
    raw = f'{{"sender_id": "u", "payload": {{"n": [{", ".join(numbers)}]}}}}'.encode()
    try:
        signal = parse_signal(raw)
    except InvalidSignal as exc:
        if any(map(_overflows, numbers)):
            assert (exc.status, exc.code) == (400, "invalid_json")
            return
        first = next(i for i, literal in enumerate(numbers) if not _kept(literal))
        assert (exc.status, exc.code, exc.field) == (422, "inexact_number", f"payload.n[{first}]")
        return
    assert not any(map(_overflows, numbers))
    assert all(map(_kept, numbers)), numbers
    sent = json.loads(orjson.dumps(signal.payload), parse_float=Decimal)
    written = json.loads(raw, parse_float=Decimal)["payload"]
    assert _typed(sent) == _typed(written)
