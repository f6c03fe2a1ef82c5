"""The contract floor (benches/contract_floor_app.py) does the work it stands for.

It is only a floor if every answer it gives was claimed, delivered and durably recorded:
a cheaper app that skipped a step would make the router's gap to it look larger than it is.
"""

from __future__ import annotations

import psycopg

from benches.stack import start_app
from tests.support import AgentProcess, http_json


def test_every_answer_was_claimed_delivered_and_recorded(
    database_url: str, fresh_agents: dict[str, AgentProcess]
) -> None:
    agent = fresh_agents["alpha"]
    floor = start_app("benches.contract_floor_app", database_url, agent.url)
    try:
        answers = [
            http_json("POST", floor.url, {"sender_id": f"s{i}", "payload": {"n": i}})
            for i in range(5)
        ]
    finally:
        floor.stop()

    log_ids = [answer["log_id"] for answer in answers]
    assert len(set(log_ids)) == 5
    assert [answer["status"] for answer in answers] == ["delivered"] * 5
    assert [answer["agents"][0]["log_id"] for answer in answers] == log_ids
    delivered = agent.requests()
    assert sorted(r["idempotency_key"] for r in delivered) == sorted(log_ids)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT log_id, sender_id, payload, status, response FROM floor_log"
        ).fetchall()
    by_id = {row[0]: row[1:] for row in rows}
    assert sorted(by_id) == sorted(log_ids)
    for i, (answer, log_id) in enumerate(zip(answers, log_ids, strict=True)):
        assert by_id[log_id] == (f"s{i}", {"n": i}, "delivered", answer["agents"][0])
