"""DLQ replay: claim entries, re-dispatch them to their failed agents, resolve or park them.

Claim strategy: a batch is claimed with `SELECT … FOR UPDATE SKIP LOCKED` and its rows stay
locked, in a transaction held on one pool connection, while the batch is dispatched; the
outcomes are written and committed in that same transaction. Chosen over a lease column
because the lock is released by PostgreSQL itself the moment a replayer dies (no lease to
expire, no sweeper, no schema change), and a concurrent replayer can never see a row as
free while it is in flight. The cost, one connection per batch in flight, is why batches
are small and the number of concurrent batches (`workers`) is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from psycopg_pool import AsyncConnectionPool

from router.dispatch import Dispatcher, new_traceparent
from router.model import DlqEntry, ReplayCounts, Skipped, SkipReason
from router.replay_plan import Attempt, Plan, plan
from router.routing import RoutingTable
from router.store import dlq
from router.store.dlq import ClaimedBatch, DlqFilter

log = structlog.get_logger("router.replay")

BATCH_SIZE = 20
# A dry run without a limit lists at most this many entries.
DRY_RUN_LIMIT = 1000
# Locks outlive the longest dispatch by this much before PostgreSQL ends a wedged replayer.
HOLD_MARGIN_S = 60.0

# Why an entry asked for by id was not dispatched, by its status.
_SKIPPED_BECAUSE: dict[str, SkipReason] = {"resolved": "resolved", "discarded": "discarded"}

Progress = Callable[["ReplayResult"], None]
_Claim = contextlib.AbstractAsyncContextManager[ClaimedBatch]


@dataclass(slots=True)
class ReplayResult:
    """What one replay call did; in a dry run, what it would dispatch."""

    replayed: int = 0
    resolved: int = 0
    failed: int = 0
    parked: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    dry_run: bool = False
    would_replay: list[DlqEntry] = field(default_factory=list)
    # Why replays failed: agent -> error -> deliveries ("*" for an entry not dispatched at all).
    failures: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> ReplayCounts:
        """`{"replayed", "resolved", "failed", "parked"}`: the parked are among the failed."""
        return {
            "replayed": self.replayed,
            "resolved": self.resolved,
            "failed": self.failed,
            "parked": self.parked,
        }

    def add(self, done: Sequence[tuple[Plan, Attempt]]) -> None:
        """Count the committed outcome of one batch, and why its failures failed."""
        for p, attempt in done:
            reasons = [(o.agent, o.error or "failed") for o in attempt.outcomes if not o.ok]
            if attempt.error is not None:
                reasons.append(("*", attempt.error))
            for agent, error in reasons:
                errors = self.failures.setdefault(agent, {})
                errors[error] = errors.get(error, 0) + 1
            self.replayed += 1
            status = p.entry.status
            if status == "resolved":
                self.resolved += 1
            else:
                self.failed += 1
                self.parked += status == "parked"


class Replayer:
    """Replays DLQ entries with the current routing table's agents and retry policy."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        dispatcher: Dispatcher,
        table: RoutingTable,
        *,
        max_replays: int | None,
        batch_size: int = BATCH_SIZE,
        workers: int = 1,
    ) -> None:
        self._pool = pool
        self._dispatcher = dispatcher
        self._table = table
        self._max_replays = max_replays
        self._batch = batch_size
        self._workers = workers
        self._deadlines = {rule.kind: rule.deadline_ms for rule in table.rules}
        self._default_deadline = table.rules[-1].deadline_ms
        self._hold_s = max(self._deadlines.values()) / 1000 + HOLD_MARGIN_S

    async def replay_pending(
        self,
        filters: DlqFilter,
        *,
        limit: int | None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ReplayResult:
        """Replay pending entries oldest first, each at most once in this round; parked skipped."""
        result = ReplayResult(dry_run=dry_run)
        round_started = await dlq.round_clock(self._pool)
        if dry_run:
            result.would_replay = await dlq.list_claimable(
                self._pool, filters, round_started=round_started, limit=limit or DRY_RUN_LIMIT
            )
            return result
        source = _PendingSource(
            self._pool,
            filters,
            round_started=round_started,
            limit=limit,
            batch_size=self._batch,
            hold_s=self._hold_s,
        )
        await self._run(source, result, progress)
        return result

    async def replay_ids(self, ids: Sequence[int], *, dry_run: bool = False) -> ReplayResult:
        """Replay these entries, parked ones too; resolved, discarded, absent ones are skipped."""
        wanted = list(dict.fromkeys(ids))
        result = ReplayResult(dry_run=dry_run)
        handled: set[int] = set()
        if dry_run:
            result.would_replay = await dlq.fetch_replayable(self._pool, wanted)
            handled = {e.id for e in result.would_replay}
        else:
            source = _IdSource(
                self._pool, wanted, handled, batch_size=self._batch, hold_s=self._hold_s
            )
            await self._run(source, result, None)
        rest = [i for i in wanted if i not in handled]
        if rest:
            found = await dlq.statuses(self._pool, rest)
            for entry_id in rest:
                status = found.get(entry_id)
                # Pending or parked yet not claimed: another replayer holds it right now.
                reason: SkipReason = (
                    "not_found" if status is None else _SKIPPED_BECAUSE.get(status, "in_progress")
                )
                result.skipped.append({"id": entry_id, "reason": reason})
        return result

    async def _run(self, source: _Source, result: ReplayResult, progress: Progress | None) -> None:
        async def worker() -> None:
            while (claim := source.next()) is not None:
                done = await self._replay_claim(claim, source)
                if done is None:
                    return
                result.add(done)  # counted once committed
                if progress is not None and done:
                    progress(result)

        tasks = [asyncio.create_task(worker()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _replay_claim(
        self, claim: tuple[_Claim, int], source: _Source
    ) -> list[tuple[Plan, Attempt]] | None:
        """Dispatch one claimed batch and write its outcomes; None when nothing was left."""
        context, wanted = claim
        async with context as batch:
            source.claimed(wanted, batch)
            if not batch.entries:
                return None if source.stop_when_empty else []
            attempts = await asyncio.gather(*(self._dispatch(e) for e in batch.entries))
            plans = [
                plan(e, a, batch.signals.get(e.log_id), max_replays=self._max_replays)
                for e, a in zip(batch.entries, attempts, strict=True)
            ]
            await batch.settle(
                [p.entry for p in plans], [p.signal for p in plans if p.signal is not None]
            )
        for p in plans:
            if p.entry.status == "parked":
                log.warning("dlq_entry_parked", id=p.entry.id, last_error=p.entry.last_error)
        return list(zip(plans, attempts, strict=True))

    async def _dispatch(self, entry: DlqEntry) -> Attempt:
        """Send the entry's original body to its failed agents, under its original log_id."""
        agents = [self._table.agents.get(name) for name in entry.agents]
        missing = [name for name, agent in zip(entry.agents, agents, strict=True) if agent is None]
        if missing:
            return Attempt(
                error=f"agent {', '.join(missing)} is not in the routing table "
                f"({self._table.source}); add it back and replay by id, or discard the entry",
                park=True,
            )
        configs = [agent for agent in agents if agent is not None]
        # The entry's trace continues with a new span; a malformed stored id starts a new trace.
        traceparent, _ = new_traceparent(f"00-{entry.trace_id}-{'0' * 15}1-01")
        try:
            outcomes = await self._dispatcher.dispatch(
                configs,
                entry.mode,
                entry.forwarded_body(),
                log_id=entry.log_id,
                traceparent=traceparent,
                deadline_ms=self._deadlines.get(entry.kind, self._default_deadline),
                replay=True,
            )
        except Exception as exc:  # one entry's failure must not fail its batch
            log.exception("dlq_replay_dispatch_failed", id=entry.id)
            return Attempt(error=f"replay failed: {type(exc).__name__}: {exc}")
        return Attempt(outcomes)


class _Source(ABC):
    """Hands workers their next claim; `None` when the round is over."""

    stop_when_empty = False

    @abstractmethod
    def next(self) -> tuple[_Claim, int] | None:
        """The next claim and how many entries it asks for."""

    def claimed(self, wanted: int, batch: ClaimedBatch) -> None:  # noqa: B027 (optional hook)
        """Told what a claim returned; sources that need it override this."""


class _PendingSource(_Source):
    """Bulk claims of this round's pending entries, at most `limit` in all."""

    stop_when_empty = True

    def __init__(
        self,
        pool: AsyncConnectionPool,
        filters: DlqFilter,
        *,
        round_started: datetime,
        limit: int | None,
        batch_size: int,
        hold_s: float,
    ) -> None:
        self._pool = pool
        self._filters = filters
        self._round_started = round_started
        self._remaining = limit
        self._batch = batch_size
        self._hold_s = hold_s
        self._exhausted = False
        self._floor: tuple[datetime, int] | None = None

    def next(self) -> tuple[_Claim, int] | None:
        wanted = self._batch if self._remaining is None else min(self._batch, self._remaining)
        if self._exhausted or wanted <= 0:
            return None
        # Reserved now, given back in `claimed`: concurrent workers never overshoot the limit.
        if self._remaining is not None:
            self._remaining -= wanted
        claim = dlq.claim_pending(
            self._pool,
            self._filters,
            round_started=self._round_started,
            limit=wanted,
            hold_s=self._hold_s,
            after=self._floor,
        )
        return claim, wanted

    def claimed(self, wanted: int, batch: ClaimedBatch) -> None:
        if self._remaining is not None:
            self._remaining += wanted - len(batch.entries)
        if not batch.entries:
            self._exhausted = True
            return
        # Concurrent claims may return out of order: the floor only moves forward.
        last = batch.entries[-1]
        position = (last.created_at, last.id)
        if self._floor is None or position > self._floor:
            self._floor = position


class _IdSource(_Source):
    """Claims of the given ids, a batch at a time; records which were claimed."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        ids: list[int],
        handled: set[int],
        *,
        batch_size: int,
        hold_s: float,
    ) -> None:
        self._pool = pool
        self._chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        self._chunks.reverse()
        self._handled = handled
        self._hold_s = hold_s

    def next(self) -> tuple[_Claim, int] | None:
        if not self._chunks:
            return None
        chunk = self._chunks.pop()
        return dlq.claim_ids(self._pool, chunk, hold_s=self._hold_s), len(chunk)

    def claimed(self, wanted: int, batch: ClaimedBatch) -> None:
        self._handled.update(e.id for e in batch.entries)
