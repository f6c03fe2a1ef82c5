"""The wire model: log_id derivation, parsing and validation of small and large bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from router.signals import derive_log_id, parse_signal

SMALL_PAYLOAD = {"message": "help me understand the policy"}
SMALL_BODY = orjson.dumps({"sender_id": "user_123", "payload": SMALL_PAYLOAD})
FULL_BODY = orjson.dumps(
    {
        "sender_id": "user_123",
        "payload": SMALL_PAYLOAD,
        "log_id": "client-7f3a9c1e.0001",
        "timestamp": "2026-11-23T10:00:00.123Z",
        "metadata": {"source": "web", "tags": ["a", "b"]},
    }
)
# 64 KiB spread over nested objects and lists, as a chat transcript with attachments would be.
LARGE_PAYLOAD = {
    "message": "see the history below",
    "history": [
        {"role": "user" if i % 2 else "agent", "text": "x" * 200, "meta": {"n": i, "ok": True}}
        for i in range(256)
    ],
}
LARGE_BODY = orjson.dumps({"sender_id": "user_123", "payload": LARGE_PAYLOAD})


def test_derive_log_id(benchmark: Any, within_budget: Callable[[str], None]) -> None:
    """sha256 over sender, event time and the canonical (sorted-keys) payload."""
    log_id = benchmark(derive_log_id, "user_123", "2026-11-23T10:00:00Z", SMALL_PAYLOAD)
    assert log_id.startswith("sig-")
    within_budget("derive_log_id")


def test_parse_small(benchmark: Any, within_budget: Callable[[str], None]) -> None:
    """The common body: sender and a one-line payload, log_id derived."""
    signal = benchmark(parse_signal, SMALL_BODY)
    assert signal.strings == ["help me understand the policy"]
    within_budget("parse_small")


def test_parse_every_field(benchmark: Any, within_budget: Callable[[str], None]) -> None:
    """Every optional field: client log_id, RFC 3339 timestamp, metadata."""
    signal = benchmark(parse_signal, FULL_BODY)
    assert signal.log_id == "client-7f3a9c1e.0001"
    within_budget("parse_every_field")


def test_parse_large(benchmark: Any, within_budget: Callable[[str], None]) -> None:
    """A 64 KiB body of 256 nested records: the storability walk dominates."""
    assert len(LARGE_BODY) > 60_000
    signal = benchmark(parse_signal, LARGE_BODY)
    assert len(signal.strings) == 1 + 2 * 256
    within_budget("parse_large")
