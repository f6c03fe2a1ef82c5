"""What one replay of a DLQ entry changes: pure functions from outcomes to row updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from router.model import AgentOutcome, DlqEntry, LogStatus, clip_last_error
from router.store.dlq import EntryUpdate, SignalRow, SignalUpdate


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of re-dispatching one entry; `error` when it could not be dispatched."""

    outcomes: Sequence[AgentOutcome] = ()
    error: str | None = None
    park: bool = False  # the entry cannot succeed until an operator acts (agent not in table)

    @property
    def attempts(self) -> int:
        """HTTP attempts made, retries included."""
        return sum(o.attempts for o in self.outcomes)

    @property
    def refused(self) -> bool:
        """Every failed agent's breaker was open: nothing was sent, so the replay does not count."""
        failed = [o for o in self.outcomes if not o.ok]
        return bool(failed) and all(o.error == "circuit_open" for o in failed)


@dataclass(frozen=True, slots=True)
class Plan:
    """The updates one replay makes: the entry, and the signal's log row when it had one."""

    entry: EntryUpdate
    signal: SignalUpdate | None = field(default=None)


def is_resolved(entry: DlqEntry, attempt: Attempt) -> bool:
    """first_success: one agent succeeded; all: every agent still listed succeeded."""
    if attempt.error is not None:
        return False
    if not entry.agents:
        return True  # nothing was left to deliver
    if entry.mode == "first_success":
        return any(o.ok for o in attempt.outcomes)
    return all(o.ok for o in attempt.outcomes)


def plan(
    entry: DlqEntry, attempt: Attempt, signal: SignalRow | None, *, max_replays: int | None
) -> Plan:
    """The entry resolved, or its failure counted (and parked after `max_replays`).

    `max_replays` None: a probe of a sick agent, whose failure is neither counted nor parks;
    nor does a replay an open breaker refused.
    """
    attempts = entry.attempts + attempt.attempts
    if is_resolved(entry, attempt):
        # The agents stay listed: they say, for the audit, what this replay delivered.
        update = EntryUpdate(
            entry.id, "resolved", entry.agents, entry.last_error, attempts, entry.replay_count
        )
    else:
        counted = max_replays is not None and not attempt.refused
        replays = entry.replay_count + counted
        parked = (
            attempt.park
            or entry.status == "parked"
            or (max_replays is not None and counted and replays >= max_replays)
        )
        update = EntryUpdate(
            entry.id,
            "parked" if parked else "pending",
            _still_failing(entry, attempt),
            _describe_failure(attempt),
            attempts,
            replays,
        )
    return Plan(update, _signal_update(entry, attempt, signal, update))


def merge_outcomes(
    stored: Sequence[Any] | None, fresh: Sequence[AgentOutcome]
) -> list[dict[str, Any]]:
    """The stored outcome list with each replayed agent's entry replaced (or appended)."""
    merged: dict[str, dict[str, Any]] = {}
    for item in stored or ():
        if isinstance(item, dict) and isinstance(item.get("agent"), str):
            merged[item["agent"]] = item
    for outcome in fresh:
        merged[outcome.agent] = asdict(outcome)
    return list(merged.values())


def _still_failing(entry: DlqEntry, attempt: Attempt) -> list[str]:
    if attempt.error is not None or entry.mode == "first_success":
        return list(entry.agents)
    # all: the agents this replay delivered to are done; the next replay retries the rest.
    return [o.agent for o in attempt.outcomes if not o.ok]


def _describe_failure(attempt: Attempt) -> str:
    text = attempt.error or "; ".join(f"{o.agent}: {o.error}" for o in attempt.outcomes if not o.ok)
    return clip_last_error(text or "replay failed")


def _signal_update(
    entry: DlqEntry, attempt: Attempt, signal: SignalRow | None, update: EntryUpdate
) -> SignalUpdate | None:
    if signal is None or not attempt.outcomes:
        return None
    merged = merge_outcomes(signal.response, attempt.outcomes)
    status: LogStatus
    if update.status == "resolved":
        status = "delivered"
    elif entry.mode == "all" and any(item.get("ok") is True for item in merged):
        status = "partial"
    else:
        status = signal.status
    return SignalUpdate(entry.log_id, status, _dumps(merged), attempt.attempts, signal)


def _dumps(outcomes: list[dict[str, Any]]) -> str:
    """JSON text; an agent reply too deep to serialize is dropped, not fatal."""
    try:
        return orjson.dumps(outcomes).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps([{**item, "response": None} for item in outcomes]).decode()
