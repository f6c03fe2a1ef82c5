"""The group-commit writer against real PostgreSQL: rows/s from many concurrent signals."""

# Each simulated signal does what POST /route does to the writer: a claim, then its outcome,
# both awaited. Rows/s counts both (two rows' worth of writes per signal).

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from router.model import AgentOutcome
from router.store.writer import Claim, GroupCommitWriter, Outcome
from router.store.writer_pool import open_writer_pool

PAYLOAD = {"message": "help me understand the policy"}
RESPONSE = [
    AgentOutcome(
        agent="bench",
        ok=True,
        status_code=200,
        attempts=1,
        latency_ms=1.2,
        response={"received": 1},
        error=None,
    )
]


def _claim(log_id: str) -> Claim:
    return Claim(
        log_id=log_id,
        sender_id="bench-user",
        kind="policy_question",
        mode="all",
        payload=PAYLOAD,
        metadata=None,
        event_time=None,
        routed_agents=["bench"],
        trace_id="0af7651916cd43dd8448eb211c80319c",
        payload_hash="0" * 64,
        claim_token=uuid.uuid4().hex[:16],
        expires_in_s=25.0,
    )


def _outcome(claim: Claim) -> Outcome:
    return Outcome(
        claim=claim,
        status="delivered",
        response=RESPONSE,
        attempts=1,
        latency_ms=1.2,
    )


async def _signals(writer: GroupCommitWriter, tasks: int, per_task: int) -> None:
    async def one_task() -> None:
        for _ in range(per_task):
            claim = _claim(f"bench-{uuid.uuid4().hex}")
            assert await writer.claim(claim, valid_for_s=1.5) is None
            assert (await writer.finish(_outcome(claim), retry_for_s=10.0)).written

    await asyncio.gather(*(one_task() for _ in range(tasks)))


@pytest.mark.parametrize(("tasks", "per_task"), [(1, 100), (64, 40)])
def test_writer_rows_per_second(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    bench_db: str,
    micro_budgets: dict[str, float],
    tasks: int,
    per_task: int,
) -> None:
    """Claims + outcomes from `tasks` concurrent signals; rows/s and CPU µs per signal."""
    pool = loop.run_until_complete(
        open_writer_pool(bench_db, max_size=2, statement_timeout_s=3.0, name="bench-outcomes")
    )
    claim_pool = loop.run_until_complete(
        open_writer_pool(
            bench_db,
            max_size=2,
            synchronous_commit=False,
            statement_timeout_s=2.0,
            name="bench-claims",
        )
    )

    async def start() -> GroupCommitWriter:
        writer = GroupCommitWriter(pool, claim_pool=claim_pool)
        writer.start()
        return writer

    writer = loop.run_until_complete(start())
    samples: list[tuple[float, float]] = []

    def run() -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        loop.run_until_complete(_signals(writer, tasks, per_task))
        samples.append((time.perf_counter() - wall, time.process_time() - cpu))

    try:
        loop.run_until_complete(_signals(writer, tasks, 5))  # warm the pool's connections
        benchmark.pedantic(run, rounds=3, iterations=1)
    finally:
        loop.run_until_complete(writer.stop())
        loop.run_until_complete(pool.close())
        loop.run_until_complete(claim_pool.close())
    signals = tasks * per_task
    wall, cpu = sorted(samples)[len(samples) // 2]
    rows_per_s = 2 * signals / wall
    benchmark.extra_info.update(
        signals=signals,
        rows_per_s=round(rows_per_s),
        signals_per_s=round(signals / wall),
        cpu_us_per_signal=round(cpu / signals * 1e6, 1),
    )
    print(f"\nwriter tasks={tasks}: {benchmark.extra_info}")
    if benchmark.stats is not None:
        floor = micro_budgets[f"writer_rows_per_s_{tasks}"]
        assert rows_per_s >= floor, f"{rows_per_s:.0f} rows/s < {floor} (gate.toml [micro])"
