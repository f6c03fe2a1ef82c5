"""Group commit: queued claims and outcomes are each written as one statement per flush.

The two lanes keep different promises. A claim is worth writing only while its caller still
waits: one whose waiter gave up is never inserted (and one that committed too late is
removed), because that caller was told 503, nothing dispatched. An outcome is the truth about
a dispatch that happened, so it is written even when its waiter is gone, and retried through a
database outage until its own time limit.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import structlog

from router.model import AgentOutcome, FinalStatus, LogStatus, StoredSignal
from router.store.errors import DatabaseUnavailable, Overloaded, StoreError
from router.store.observer import StoreObserver
from router.store.queries import LOG_TABLE, finish_statement, is_plain_table, numbered
from router.store.writer_pool import DatabaseClock, LaneConnection, Pool, writer_connection

log = structlog.get_logger("router.store.writer")

MAX_BATCH = 256
# Claims queued beyond this are refused at once (503 overloaded): during a stall a queue
# that only grows holds memory and callers that will all time out anyway.
MAX_QUEUED_CLAIMS = 2048
# Between tries of an outcome batch while the database is away.
RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(slots=True, kw_only=True)
class Claim(StoredSignal):
    """The signal's record before dispatch. A batch is sent as one JSON array of these
    (orjson serializes dataclasses natively), so the field names are the SQL's columns."""

    routed_agents: list[str]
    payload_hash: str
    claim_token: str
    expires_in_s: float
    # False when no other signal can carry this log_id (signals.Signal.deduplicable): its
    # statements skip lock_log_id's lookup of the log_id in every partition.
    deduplicable: bool = True
    # Seconds, database clock; set by the writer from how long the caller will wait.
    valid_before: float = 0.0
    # Set when the claim wins: the row's partition key, which its outcome names, and the
    # partition that holds it, which the outcome is written into.
    created_at: datetime | None = None
    partition: str = LOG_TABLE
    # The claim's row as inserted (its ctid), where the outcome looks for it first.
    claim_tid: str | None = None


@dataclass(slots=True)
class Outcome:
    """The final row of a signal: its claim (so the row stands on its own) and what the
    dispatch did; `dl_*` describe its DLQ entry when an agent failed."""

    claim: Claim
    status: FinalStatus
    response: list[AgentOutcome]
    attempts: int
    latency_ms: float
    dl_agents: list[str] | None = None
    dl_last_error: str | None = None
    dl_attempts: int | None = None


@dataclass(slots=True, frozen=True)
class Recorded:
    """What the outcome flush did with one outcome."""

    written: bool  # False: the row is no longer this request's claim (nothing was changed)
    dead_lettered: bool


@dataclass(slots=True, frozen=True)
class ExistingSignal:
    """What a losing claim found: the row that owns the log_id."""

    log_id: str
    kind: str
    status: LogStatus
    payload_hash: str
    trace_id: str
    routed_agents: list[str]
    response: list[dict[str, Any]] | None
    abandoned: bool


W = TypeVar("W")
R = TypeVar("R")


@dataclass(slots=True)
class _Item(Generic[W, R]):
    work: W
    future: asyncio.Future[R]
    retry_until: float  # loop time; 0: never retried


class _Lane(Generic[W, R]):
    """One queue and the task that drains it: whatever queued meanwhile is one flush.

    No timer: a flush starts as soon as the previous one returns, so a lone request waits
    for one round trip and a crowd shares it.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[_Item[W, R]]], Awaitable[None]],
        metrics: StoreObserver | None,
        *,
        max_batch: int,
        max_queued: int | None,
        drop_abandoned: bool,
    ) -> None:
        self._name = name
        self._flush = flush
        # Bound once: the lane's own series, labelled with its name.
        self._batch_rows = metrics.commit_batch_size.labels(name) if metrics else None
        self._commit_seconds = metrics.commit_latency.labels(name) if metrics else None
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._drop_abandoned = drop_abandoned
        self._queue: list[_Item[W, R]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop
        self._closing = False

    def start(self) -> None:
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() syscall.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"{self._name}-writer")

    async def stop(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, work: W, *, retry_for_s: float = 0.0) -> asyncio.Future[R]:
        if self._closing:
            raise DatabaseUnavailable("the router is shutting down")
        if self._max_queued is not None and len(self._queue) >= self._max_queued:
            raise Overloaded(Overloaded.__doc__)
        loop = self._loop
        future: asyncio.Future[R] = loop.create_future()
        retry_until = loop.time() + retry_for_s if retry_for_s > 0 else 0.0
        self._queue.append(_Item(work, future, retry_until))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                if self._drop_abandoned:
                    # The waiter gave up (timeout, client gone): it answered already.
                    batch = [item for item in batch if not item.future.done()]
                if batch:
                    await self._flush_retrying(batch)
            if self._closing:
                return

    async def _flush_retrying(self, batch: list[_Item[W, R]]) -> None:
        """Flush; while the database is away, retry the items whose time allows it."""
        loop = self._loop
        for backoff in itertools.chain(RETRY_BACKOFF_S, itertools.repeat(RETRY_BACKOFF_S[-1])):
            error = await self._flush_safely(batch)
            if error is None:
                return
            now = loop.time()
            keep = [item for item in batch if item.retry_until > now + backoff]
            _fail([item for item in batch if item.retry_until <= now + backoff], error)
            if not keep:
                return
            log.warning("log_write_retrying", lane=self._name, rows=len(keep), error=str(error))
            await asyncio.sleep(backoff)
            batch = keep

    async def _flush_safely(self, batch: list[_Item[W, R]]) -> DatabaseUnavailable | None:
        """Flush once; the items are settled unless the database was away (then returned)."""
        started = time.perf_counter()
        try:
            await self._flush(batch)
        except DatabaseUnavailable as exc:
            return exc
        except (StoreError, orjson.JSONEncodeError) as exc:
            # One row the database refused must not fail the others that shared its batch.
            if len(batch) == 1:
                log.error("log_write_failed", lane=self._name, error=str(exc))
                _fail(batch, exc)
            else:
                for item in batch:
                    if (error := await self._flush_safely([item])) is not None:
                        _fail([item], error)
            return None
        except Exception as exc:  # a bug here must not leave waiters hanging forever
            log.exception("log_writer_crashed", lane=self._name)
            _fail(batch, StoreError(f"log writer failed: {exc!r}"))
            return None
        if self._batch_rows is not None and self._commit_seconds is not None:
            self._batch_rows.observe(len(batch))
            self._commit_seconds.observe(time.perf_counter() - started)
        return None


class GroupCommitWriter:
    """Claims and outcomes, each group-committed in one statement per flush.

    Two lanes, so a claim never waits behind a durable commit: claims go through
    `claim_pool`, whose sessions commit with synchronous_commit=off (a claim guards against
    the router dying; the outcome does not depend on it surviving a database crash);
    outcomes through `pool`, durably. Both are asyncpg pools (store/writer_pool.py); each
    lane keeps one of its pool's connections, and `claim_pool` lends a second one to a
    losing claim's lookup and a third to voiding late claims.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        claim_pool: Pool,
        clock: DatabaseClock | None = None,
        metrics: StoreObserver | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._claim_pool = claim_pool
        self._claim_conn = LaneConnection(claim_pool)
        self._outcome_conn = LaneConnection(pool)
        self._clock = clock or DatabaseClock()
        self._claims: _Lane[Claim, ExistingSignal | None] = _Lane(
            "claim",
            self._flush_claims,
            metrics,
            max_batch=max_batch,
            max_queued=MAX_QUEUED_CLAIMS,
            drop_abandoned=True,
        )
        self._outcomes: _Lane[Outcome, Recorded] = _Lane(
            "outcome",
            self._flush_outcomes,
            metrics,
            max_batch=max_batch,
            max_queued=None,  # bounded by the signals in flight, each with one outcome
            drop_abandoned=False,
        )
        # Set after a flush that wrote DLQ entries, so dlq_backlog is refreshed soon after.
        self.dead_letters_written = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start both lanes on the running loop."""
        self._claims.start()
        self._outcomes.start()

    async def stop(self) -> None:
        """Flush what is queued (claims still awaited, every outcome), then end both lanes."""
        await self._claims.stop()
        await self._outcomes.stop()
        await self._claim_conn.close()
        await self._outcome_conn.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def claim(self, claim: Claim, *, valid_for_s: float) -> asyncio.Future[ExistingSignal | None]:
        """Queue the claim, to be inserted only within `valid_for_s`; the future gives None when
        this request owns the log_id, else the existing row. Raises Overloaded at once when
        too many claims wait already."""
        claim.valid_before = self._clock.now() + valid_for_s
        return self._claims.submit(claim)

    def void(self, claim: Claim) -> None:
        """Remove a claim this request won but will not dispatch (its caller heard 503)."""
        task = asyncio.create_task(self._void_quietly([claim]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def finish(self, outcome: Outcome, *, retry_for_s: float) -> asyncio.Future[Recorded]:
        """Queue the final row (and DLQ entry); it is written even if nobody awaits the result,
        retried for `retry_for_s` while the database is away."""
        return self._outcomes.submit(outcome, retry_for_s=retry_for_s)

    async def _flush_claims(self, batch: list[_Item[Claim, ExistingSignal | None]]) -> None:
        # Only a log_id's first claim in the batch is inserted; later ones lost already.
        first = _first_per_log_id([item.work for item in batch], lambda claim: claim.log_id)
        rows = await self._claim_conn.fetch(numbered("claim_signals").sql, orjson.dumps(first))
        won: dict[str, tuple[datetime, str, str]] = {r[0]: (r[1], r[2], r[3]) for r in rows}
        winners: list[_Item[Claim, ExistingSignal | None]] = []
        losers: list[_Item[Claim, ExistingSignal | None]] = []
        for item in batch:
            if (row := won.pop(item.work.log_id, None)) is not None:
                item.work.created_at, partition, item.work.claim_tid = row
                # A name that cannot be spliced into SQL as it is: the parent routes the row.
                item.work.partition = partition if is_plain_table(partition) else LOG_TABLE
                winners.append(item)
            else:
                losers.append(item)
        late = [item.work for item in winners if item.future.done()]
        for item in winners:
            if not item.future.done():
                item.future.set_result(None)
        if late:
            await self._void_quietly(late)
        if losers:
            await self._answer_losers(losers)

    async def _void_quietly(self, claims: list[Claim]) -> None:
        """Remove claims that committed after their waiters answered 503. Should this fail
        too (the database is away), the claim expires and is swept: replayed, at least once."""
        log.warning("late_claims_voided", count=len(claims))
        params = {"log_ids": [c.log_id for c in claims], "tokens": [c.claim_token for c in claims]}
        void = numbered("void_claims")
        try:
            async with writer_connection(self._claim_pool) as conn:
                await conn.execute(void.sql, *void.args(params))
        except StoreError as exc:
            log.error("late_claims_not_voided", count=len(claims), error=str(exc))

    async def _answer_losers(self, losers: list[_Item[Claim, ExistingSignal | None]]) -> None:
        try:
            existing = await self.existing([i.work.log_id for i in losers])
        except StoreError as exc:
            _fail(losers, exc)
            return
        for item in losers:
            if item.future.done():
                continue
            row = existing.get(item.work.log_id)
            if row is None:
                # Not inserted and not found: the claim arrived after its own validity.
                item.future.set_exception(
                    DatabaseUnavailable("the database did not record the claim in time")
                )
            else:
                item.future.set_result(row)

    async def _flush_outcomes(self, batch: list[_Item[Outcome, Recorded]]) -> None:
        # One row per log_id in a statement (ON CONFLICT cannot touch a row twice); a second
        # outcome of one claim is a bug, and the first one written wins.
        rows = _first_per_log_id([item.work for item in batch], lambda o: o.claim.log_id)
        # One statement per partition: a batch spans two only around midnight. Should the
        # second fail, the retry writes the first's again, which changes nothing.
        by_partition: dict[str, list[Outcome]] = {}
        for outcome in rows:
            by_partition.setdefault(outcome.claim.partition, []).append(outcome)
        written: dict[str, bool] = {}
        for partition, outcomes in by_partition.items():
            lettering = any(outcome.dl_agents is not None for outcome in outcomes)
            repeatable = any(outcome.claim.deduplicable for outcome in outcomes)
            finish = finish_statement(partition, lettering, repeatable).sql
            for row in await self._outcome_conn.fetch(finish, orjson.dumps(outcomes)):
                written[row[0]] = bool(row[1])
        if any(written.values()):
            self.dead_letters_written.set()
        for item in batch:
            log_id = item.work.claim.log_id
            if log_id not in written:
                log.error("outcome_not_written", log_id=log_id, reason="claim_lost_or_taken")
            if not item.future.done():
                item.future.set_result(Recorded(log_id in written, written.get(log_id, False)))
            written.pop(log_id, None)

    async def existing(self, log_ids: list[str]) -> dict[str, ExistingSignal]:
        """The rows that own these log_ids, by log_id."""
        async with writer_connection(self._claim_pool) as conn:
            rows = await conn.fetch(numbered("existing_signals").sql, log_ids)
        return {
            r[0]: ExistingSignal(
                log_id=r[0],
                kind=r[1],
                status=r[2],
                payload_hash=r[3],
                trace_id=r[4],
                routed_agents=r[5],
                response=r[6],
                abandoned=bool(r[7]),
            )
            for r in rows
        }


T = TypeVar("T")


def _first_per_log_id(works: list[T], log_id: Callable[[T], str]) -> list[T]:
    """The first of each log_id, sorted by log_id: every statement that locks log_ids
    (lock_log_id) then takes its locks in one order, so two batches cannot deadlock."""
    first: dict[str, T] = {}
    for work in works:
        first.setdefault(log_id(work), work)
    return [first[key] for key in sorted(first)]


def _fail(batch: list[_Item[W, R]], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
