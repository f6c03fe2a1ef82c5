"""What one replay of a DLQ entry changes, decided without a database or agents."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from router.model import MAX_LAST_ERROR, AgentOutcome, DlqEntry
from router.replay_plan import Attempt, merge_outcomes, plan
from router.store.dlq import SignalRow

READ_AT = datetime(2026, 12, 1, tzinfo=UTC)


def entry(agents: list[str], mode: str = "all", **changes: Any) -> DlqEntry:
    values: dict[str, Any] = {
        "id": 7,
        "log_id": "sig-1",
        "sender_id": "s",
        "kind": "pair",
        "agents": agents,
        "mode": mode,
        "payload": {},
        "metadata": None,
        "event_time": None,
        "trace_id": "ab" * 16,
        "last_error": "old error",
        "attempts": 3,
        "replay_count": 0,
        "status": "pending",
        "created_at": datetime(2026, 11, 23, tzinfo=UTC),
        "last_attempt_at": None,
    }
    values.update(changes)
    return DlqEntry(**values)


def outcome(agent: str, ok: bool, attempts: int = 1, error: str | None = None) -> AgentOutcome:
    return AgentOutcome(agent, ok, 200 if ok else 503, attempts, 1.0, None, error)


def test_all_mode_success_resolves_and_marks_the_log_delivered() -> None:
    """Every listed agent succeeding resolves the entry and the log row becomes delivered."""
    stored = [asdict(outcome("alpha", True)), asdict(outcome("beta", False, 3, "HTTP 503"))]
    signal = SignalRow("sig-1", "partial", stored, READ_AT)
    result = plan(entry(["beta"]), Attempt([outcome("beta", True)]), signal, max_replays=5)
    assert result.entry.status == "resolved" and result.entry.agents == ["beta"]
    assert result.entry.attempts == 4 and result.entry.replay_count == 0
    assert result.entry.last_error == "old error"
    assert result.signal is not None and result.signal.status == "delivered"
    assert result.signal.attempts == 1
    assert '"agent":"beta","ok":true' in result.signal.response


def test_all_mode_partial_success_keeps_only_the_failing_agents() -> None:
    """Agents delivered by this replay leave the entry; the failure is counted."""
    attempt = Attempt([outcome("alpha", True), outcome("beta", False, 3, "HTTP 503")])
    signal = SignalRow("sig-1", "dead_lettered", None, READ_AT)
    result = plan(entry(["alpha", "beta"]), attempt, signal, max_replays=5)
    assert result.entry.status == "pending" and result.entry.agents == ["beta"]
    assert result.entry.replay_count == 1 and result.entry.last_error == "beta: HTTP 503"
    assert result.signal is not None and result.signal.status == "partial"


def test_first_success_needs_one_success() -> None:
    """A first_success entry resolves on one success; all failing keeps every agent."""
    both = ["alpha", "beta"]
    won = Attempt([outcome("alpha", False, 3, "HTTP 503"), outcome("beta", True)])
    assert plan(entry(both, "first_success"), won, None, max_replays=5).entry.status == "resolved"
    lost = Attempt([outcome("alpha", False, 3, "x"), outcome("beta", False, 3, "y")])
    result = plan(entry(both, "first_success"), lost, None, max_replays=5)
    assert result.entry.status == "pending" and result.entry.agents == both
    assert result.entry.last_error == "alpha: x; beta: y" and result.signal is None


def test_parks_after_max_replays_and_stays_parked() -> None:
    """The failure that reaches max_replays parks; a parked entry that fails stays parked."""
    failed = Attempt([outcome("beta", False, 3, "HTTP 503")])
    assert plan(entry(["beta"], replay_count=0), failed, None, max_replays=2).entry.status == (
        "pending"
    )
    assert plan(entry(["beta"], replay_count=1), failed, None, max_replays=2).entry.status == (
        "parked"
    )
    again = plan(entry(["beta"], replay_count=7, status="parked"), failed, None, max_replays=50)
    assert again.entry.status == "parked" and again.entry.replay_count == 8
    healed = Attempt([outcome("beta", True)])
    assert plan(entry(["beta"], status="parked"), healed, None, max_replays=2).entry.status == (
        "resolved"
    )


def test_a_failed_probe_neither_counts_nor_parks() -> None:
    """Auto-replay's probes of a sick agent (max_replays None) leave the entry as it was."""
    failed = Attempt([outcome("beta", False, 1, "HTTP 503")])
    probe = plan(entry(["beta"], replay_count=4), failed, None, max_replays=None)
    assert (probe.entry.status, probe.entry.replay_count) == ("pending", 4)
    assert probe.entry.last_error == "beta: HTTP 503" and probe.entry.attempts == 4
    healed = plan(entry(["beta"]), Attempt([outcome("beta", True)]), None, max_replays=None)
    assert healed.entry.status == "resolved"


def test_a_replay_refused_by_an_open_breaker_does_not_count() -> None:
    """circuit_open: no attempt was made, so the entry is not one replay closer to parking."""
    refused = Attempt([AgentOutcome("beta", False, None, 0, 0.0, None, "circuit_open")])
    result = plan(entry(["beta"], replay_count=4), refused, None, max_replays=5)
    assert (result.entry.status, result.entry.replay_count) == ("pending", 4)
    failed = Attempt([outcome("beta", False, 1, "HTTP 503")])
    assert plan(entry(["beta"], replay_count=4), failed, None, max_replays=5).entry.status == (
        "parked"
    )


def test_an_entry_that_could_not_be_dispatched_is_parked_at_once() -> None:
    """An agent missing from the table parks the entry, its agents and log row untouched."""
    attempt = Attempt(error="agent zeta is not in the routing table", park=True)
    signal = SignalRow("sig-1", "dead_lettered", None, READ_AT)
    result = plan(entry(["zeta"]), attempt, signal, max_replays=5)
    assert result.entry.status == "parked" and result.entry.agents == ["zeta"]
    assert "zeta" in (result.entry.last_error or "") and result.signal is None


def test_last_error_is_clipped_to_the_contract_length() -> None:
    """last_error never exceeds 1000 characters, however many agents failed."""
    attempt = Attempt([outcome(f"agent{i}", False, 1, "x" * 200) for i in range(20)])
    result = plan(entry([f"agent{i}" for i in range(20)]), attempt, None, max_replays=5)
    assert result.entry.last_error is not None
    assert len(result.entry.last_error) == MAX_LAST_ERROR


def test_merge_replaces_by_agent_name_in_place() -> None:
    """Replayed outcomes replace the stored ones by agent, order kept; junk is dropped."""
    stored = [asdict(outcome("alpha", True)), asdict(outcome("beta", False)), "junk"]
    merged = merge_outcomes(stored, [outcome("beta", True), outcome("gamma", False)])
    assert [(m["agent"], m["ok"]) for m in merged] == [
        ("alpha", True),
        ("beta", True),
        ("gamma", False),
    ]
    assert merge_outcomes(None, []) == []
