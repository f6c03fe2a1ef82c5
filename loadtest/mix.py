"""The signal mix of a load run, against the packaged demo routing table (router/routes.toml)."""

# Kinds by weight, small and large (a few KB) payloads, a share of client-supplied log_ids and a
# share of repeats of earlier bodies. A repeat only deduplicates when the first body had a
# log_id or a timestamp (without either, the router derives a receive-time log_id), so repeats
# are drawn from those; a repeat that races its original gets 409, one that follows it gets
# the stored outcome with `duplicate: true`.

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

# Messages per kind, matched by the demo table's keywords and patterns; rules are tried in
# order, so the later kinds avoid the earlier kinds' words.
MESSAGES: dict[str, tuple[str, ...]] = {
    "policy_question": (
        "help me understand the policy on shared accounts",
        "do your terms allow reselling?",
        "what does GDPR mean for my stored messages",
        "I have a compliance question about data retention",
        "is the privacy notice up to date?",
    ),
    "urgent": (
        "the checkout page is down for everyone",
        "URGENT: we are seeing an outage in eu-west",
        "site down since 10:02, customers cannot log in",
    ),
    "billing": (
        "I was charged twice, please refund one payment",
        "where can I download last month's invoice?",
        "my billing address is wrong on the receipt",
    ),
    "general": (
        "hello, how do I change my display name?",
        "thanks for the quick help yesterday",
        "can I export my conversation history?",
        "what are your opening hours on Sunday",
    ),
}


@dataclass(frozen=True)
class MixConfig:
    """Weights and shares of the mix; the defaults are the documented `make load` mix."""

    weights: tuple[tuple[str, int], ...] = (
        ("policy_question", 30),
        ("urgent", 15),
        ("billing", 20),
        ("general", 35),
    )
    large_share: float = 0.10  # payloads of a few KB (a transcript attached)
    large_turns: int = 24  # x ~200 bytes: about 5 KB
    log_id_share: float = 0.20  # client-supplied log_id
    timestamp_share: float = 0.50  # event time given, so the derived log_id is deterministic
    metadata_share: float = 0.30
    repeat_share: float = 0.05  # an earlier body sent again (a client retry)
    senders: int = 500


@dataclass
class Mix:
    """Draws the next body; one per Locust process, shared by its users."""

    config: MixConfig = field(default_factory=MixConfig)
    rng: random.Random = field(default_factory=random.Random)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _seq: int = 0
    _repeatable: deque[tuple[str, bytes]] = field(default_factory=lambda: deque(maxlen=256))

    def next(self) -> tuple[str, bytes, bool]:
        """(kind expected, JSON body, is a repeat)."""
        if self._repeatable and self.rng.random() < self.config.repeat_share:
            kind, body = self.rng.choice(self._repeatable)
            return kind, body, True
        kinds, weights = zip(*self.config.weights, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        body, repeatable = self._fresh(kind)
        if repeatable:
            self._repeatable.append((kind, body))
        return kind, body, False

    def _fresh(self, kind: str) -> tuple[bytes, bool]:
        self._seq += 1
        c, rng = self.config, self.rng
        payload: dict[str, object] = {
            "message": rng.choice(MESSAGES[kind]),
            # Unique per run, so a second run's timestamped bodies are not its duplicates.
            "ref": f"{self.run_id}-{self._seq}",
        }
        if rng.random() < c.large_share:
            payload["history"] = [
                {"role": "customer" if i % 2 else "agent", "text": _filler(rng, 200), "n": i}
                for i in range(c.large_turns)
            ]
        signal: dict[str, object] = {
            "sender_id": f"user_{rng.randrange(c.senders)}",
            "payload": payload,
        }
        repeatable = False
        if rng.random() < c.log_id_share:
            signal["log_id"] = f"load-{self.run_id}-{self._seq}"
            repeatable = True
        if rng.random() < c.timestamp_share:
            signal["timestamp"] = datetime.now(UTC).isoformat(timespec="microseconds")
            repeatable = True
        if rng.random() < c.metadata_share:
            signal["metadata"] = {"source": "locust", "run": self.run_id}
        return orjson.dumps(signal), repeatable


_WORDS = ("account", "message", "today", "order", "screen", "again", "please", "team", "new")


def _filler(rng: random.Random, size: int) -> str:
    """Neutral words (no rule's keyword) of about `size` characters."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)
