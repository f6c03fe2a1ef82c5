"""The whole history of a scenario (answers, deliveries, rows) checked against the promises."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.load import Sent

INVARIANTS = {
    "V1": "a 2xx answer without its durable final row (or with a row that contradicts it)",
    "V2": "a delivery with no signal_log row",
    "V3": "a delivery of a signal whose only answer promised nothing was dispatched",
    "V4": "a second route-path dispatch (not a replay) of one log_id to one agent",
    "V5": "a row still in_flight after recovery",
    "V6": "a delivery whose Idempotency-Key is not its log_id",
    "V7": "an answer that was not JSON",
    "V8": "a DLQ entry still pending after a replay with every agent healthy",
    "V9": "503 outcome_not_recorded although the database never failed",
}


@dataclass
class Delivery:
    agent: str
    key: str
    log_id: str | None
    nonce: str | None
    attempt: Any
    replay: bool


@dataclass
class Verdict:
    """Counts of one scenario's history and the violations found in it."""

    sent: int = 0
    acknowledged: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    deliveries: int = 0
    replayed: int = 0
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, invariant: str, detail: str) -> None:
        self.violations[invariant].append(detail)

    @property
    def violation_count(self) -> int:
        return sum(len(v) for v in self.violations.values())


def deliveries_of(agent: str, records: list[dict[str, Any]]) -> list[Delivery]:
    found = []
    for record in records:
        body = record.get("body") or {}
        payload = body.get("payload") if isinstance(body, dict) else None
        nonce = payload.get("nonce") if isinstance(payload, dict) else None
        found.append(
            Delivery(
                agent,
                record.get("idempotency_key") or "",
                body.get("log_id") if isinstance(body, dict) else None,
                nonce,
                record.get("attempt"),
                bool(record.get("replay")),
            )
        )
    return found


def check(
    database_url: str, signals: list[Sent], deliveries: list[Delivery], *, database_faulted: bool
) -> Verdict:
    """Every invariant over every signal, delivery and row of the scenario's database."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT log_id, status, payload->>'nonce' FROM signal_log").fetchall()
        dlq: dict[str, str] = dict(conn.execute("SELECT log_id, status FROM dlq").fetchall())
    verdict = Verdict(sent=len(signals), rows=len(rows), deliveries=len(deliveries))
    verdict.replayed = sum(d.replay for d in deliveries)
    status_of = {r[0]: r[1] for r in rows}
    by_nonce: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        if d.nonce is not None:
            by_nonce[d.nonce].append(d)

    for sent in signals:
        acked = False
        for answer in sent.answers:
            label = str(answer.status) if answer.status is not None else "no answer"
            if answer.code:
                label += f" {answer.code}"
            verdict.answers[label] += 1
            if answer.code == "outcome_not_recorded" and not database_faulted:
                verdict.add("V9", f"{sent.log_id or sent.nonce}: {answer.body}")
            if answer.status is not None and not answer.json:
                verdict.add("V7", f"{sent.nonce}: {answer.status} {str(answer.body)[:80]!r}")
            if answer.status is not None and 200 <= answer.status < 300:
                acked = True
                _check_ack(verdict, answer.body, status_of, dlq)
        verdict.acknowledged += acked
        if (
            len(sent.answers) == 1
            and sent.answers[0].nothing_dispatched
            and by_nonce.get(sent.nonce)
        ):
            first = sent.answers[0]
            verdict.add(
                "V3",
                f"{sent.log_id or sent.nonce}: answered {first.status}"
                f" {first.code or first.failure}, delivered {len(by_nonce[sent.nonce])}x",
            )

    first_dispatches: Counter[tuple[str, str]] = Counter()
    for d in deliveries:
        if d.log_id is None or d.log_id not in status_of:
            verdict.add("V2", f"{d.agent}: {d.key}")
        if d.key != d.log_id:
            verdict.add("V6", f"{d.agent}: key {d.key!r} for log_id {d.log_id!r}")
        if not d.replay and str(d.attempt) == "1":
            first_dispatches[(d.log_id or d.key, d.agent)] += 1
    for (log_id, agent), count in first_dispatches.items():
        if count > 1:
            verdict.add("V4", f"{log_id} → {agent}: {count} route-path dispatches")
    for log_id, status in status_of.items():
        if status == "in_flight":
            verdict.add("V5", log_id)
    for log_id, status in dlq.items():
        if status == "pending":
            verdict.add("V8", log_id)
    return verdict


def _check_ack(verdict: Verdict, body: Any, status_of: dict[str, str], dlq: dict[str, str]) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("log_id"), str):
        verdict.add("V1", f"2xx without a log_id: {str(body)[:80]!r}")
        return
    log_id, said = body["log_id"], body.get("status")
    stored = status_of.get(log_id)
    if stored is None or stored == "in_flight":
        verdict.add("V1", f"{log_id}: answered {said}, row {stored}")
    elif said == "delivered" and stored != "delivered":
        verdict.add("V1", f"{log_id}: answered delivered, row {stored}")
    elif said in ("partial", "dead_lettered") and log_id not in dlq:
        verdict.add("V1", f"{log_id}: answered {said}, no DLQ entry")
