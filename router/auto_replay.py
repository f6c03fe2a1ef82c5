"""Auto-replay: an agent's pending DLQ entries replay on their own once its breaker closes.

It listens to AgentHealth. While a breaker is open, a probe replays the agent's oldest entry
after each `breaker_open_ms` (its failure is not counted against DLQ_MAX_REPLAYS), so an
agent that comes back is found even when no new signal arrives for it. When the breaker
closes, the whole backlog replays oldest first through the same SKIP LOCKED claims as
`router replay-dlq` (so N routers replay each entry once), on the replay dispatcher, whose
per-agent semaphore keeps replays within the agent's `concurrency`. An opening breaker stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Coroutine
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from router.agent_health import BreakerState
from router.dispatch import Dispatcher
from router.metrics import Metrics
from router.replay import BATCH_SIZE, Replayer, ReplayResult
from router.routing import AgentConfig, RoutingTable
from router.store.dlq import DlqFilter
from router.store.errors import StoreError

log = structlog.get_logger("router.auto_replay")

# Batches in flight at once: each holds a replay-pool connection through its dispatch.
MAX_WORKERS = 2


class AutoReplay:
    """One task per agent at a time: a probe while its breaker is open, the backlog once closed."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        dispatcher: Dispatcher,
        table: RoutingTable,
        metrics: Metrics,
        *,
        max_replays: int,
    ) -> None:
        self._pool = pool
        self._dispatcher = dispatcher
        self._table = table
        self._metrics = metrics
        self._max_replays = max_replays
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._drains: dict[str, asyncio.Task[None]] = {}

    def breaker_changed(self, agent: str, state: BreakerState) -> None:
        """An AgentHealth listener; runs in the event loop that dispatches."""
        config = self._table.agents.get(agent)
        if config is None or not config.auto_replay or state == "half_open":
            return
        if state == "open":
            # A batch cut short rolls back: its entries stay pending for the next drain.
            drain = self._drains.pop(agent, None)
            if drain is not None:
                drain.cancel()
            self._start(self._probes, agent, self._probe(config))
        else:
            self._start(self._drains, agent, self._drain(config))

    def _start(
        self, tasks: dict[str, asyncio.Task[None]], agent: str, work: Coroutine[Any, Any, None]
    ) -> None:
        if agent in tasks:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work, name=f"auto-replay-{agent}")
        tasks[agent] = task
        task.add_done_callback(lambda done: tasks.pop(agent) if tasks.get(agent) is done else None)

    async def close(self) -> None:
        """Stop every replay; what a batch had not committed stays pending for the next one."""
        tasks = [*self._probes.values(), *self._drains.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self, agent: AgentConfig) -> None:
        replayer = Replayer(self._pool, self._dispatcher, self._table, max_replays=None)
        while True:
            # The breaker lets one attempt through once open_ms has passed: this replay is it.
            await asyncio.sleep(agent.breaker_open_ms / 1000)
            result = await self._run(agent, replayer, limit=1)
            # A failed probe reopens the breaker while this task still runs, so the listener
            # starts no new one: this loop is the next probe. Nothing pending: nothing to probe.
            if result is not None and not result.failed:
                return

    async def _drain(self, agent: AgentConfig) -> None:
        batch = min(BATCH_SIZE, agent.concurrency)
        workers = min(MAX_WORKERS, math.ceil(agent.concurrency / batch))
        replayer = Replayer(
            self._pool,
            self._dispatcher,
            self._table,
            max_replays=self._max_replays,
            batch_size=batch,
            workers=workers,
        )
        await self._run(agent, replayer, limit=None)

    async def _run(
        self, agent: AgentConfig, replayer: Replayer, *, limit: int | None
    ) -> ReplayResult | None:
        """Replay the agent's pending entries; None when the store failed."""
        counter = self._metrics.auto_replayed.labels(agent.name)
        counted = 0

        def progress(result: ReplayResult) -> None:
            nonlocal counted
            counter.inc(result.replayed - counted)
            counted = result.replayed

        try:
            result = await replayer.replay_pending(
                DlqFilter(agent=agent.name), limit=limit, progress=progress
            )
        except StoreError as exc:
            log.warning("auto_replay_failed", agent=agent.name, error=str(exc))
            return None
        if result.replayed:
            log.info("auto_replayed", agent=agent.name, probe=limit == 1, **result.counts())
        return result
