"""Group commit: queued claims and outcomes are each written as one statement per flush."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import structlog
from psycopg_pool import AsyncConnectionPool

from router.metrics import Metrics
from router.store.errors import DatabaseUnavailable, StoreError, wrap_database_errors
from router.store.queries import query

log = structlog.get_logger("router.store.writer")

MAX_BATCH = 256


@dataclass(slots=True)
class Claim:
    """The signal's record before dispatch. A batch is sent as one JSON array of these
    (orjson serializes dataclasses natively), so the field names are the SQL's columns."""

    log_id: str
    sender_id: str
    kind: str
    mode: str
    payload: dict[str, Any]
    metadata: dict[str, Any] | None
    event_time: str | None
    routed_agents: list[str]
    trace_id: str
    payload_hash: str
    expires_in_s: float


@dataclass(slots=True)
class Outcome:
    """The final row of a signal; `dl_*` describe its DLQ entry when an agent failed (the
    rest of the entry comes from the log row itself)."""

    log_id: str
    status: str
    response: list[dict[str, Any]]
    attempts: int
    latency_ms: float
    dl_agents: list[str] | None = None
    dl_last_error: str | None = None
    dl_attempts: int | None = None


@dataclass(slots=True, frozen=True)
class ExistingSignal:
    """What a losing claim found: the row that owns the log_id."""

    log_id: str
    kind: str
    status: str
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


class _Lane(Generic[W, R]):
    """One queue and the task that drains it: whatever queued meanwhile is one flush.

    No timer: a flush starts as soon as the previous one returns, so a lone request waits
    for one round trip and a crowd shares it.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[_Item[W, R]]], Awaitable[None]],
        metrics: Metrics | None,
        max_batch: int,
    ) -> None:
        self._name = name
        self._flush = flush
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: list[_Item[W, R]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, work: W) -> asyncio.Future[R]:
        if self._closing:
            raise DatabaseUnavailable("the router is shutting down")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(work, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._flush_safely(batch)
            if self._closing:
                return

    async def _flush_safely(self, batch: list[_Item[W, R]]) -> None:
        started = time.perf_counter()
        try:
            with wrap_database_errors():
                await self._flush(batch)
        except DatabaseUnavailable as exc:
            _fail(batch, exc)
        except (StoreError, orjson.JSONEncodeError) as exc:
            # One row the database refused must not fail the others that shared its batch.
            if len(batch) == 1:
                log.error("log_write_failed", lane=self._name, error=str(exc))
                _fail(batch, exc)
            else:
                for item in batch:
                    await self._flush_safely([item])
            return
        except Exception as exc:  # a bug here must not leave waiters hanging forever
            log.exception("log_writer_crashed", lane=self._name)
            _fail(batch, StoreError(f"log writer failed: {exc!r}"))
        if self._metrics is not None:
            self._metrics.commit_batch_size.observe(len(batch))
            self._metrics.commit_latency.observe(time.perf_counter() - started)


class GroupCommitWriter:
    """Claims and outcomes, each group-committed in one statement per flush.

    Two lanes, so a claim never waits behind a durable commit: claims go through
    `claim_pool`, whose sessions commit with synchronous_commit=off (a claim guards against
    the router dying, not the database); outcomes through `pool`, durably.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        claim_pool: AsyncConnectionPool | None = None,
        metrics: Metrics | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._pool = pool
        self._claim_pool = claim_pool or pool
        self._claims: _Lane[Claim, ExistingSignal | None] = _Lane(
            "claim-writer", self._flush_claims, metrics, max_batch
        )
        self._outcomes: _Lane[Outcome, None] = _Lane(
            "outcome-writer", self._flush_outcomes, metrics, max_batch
        )
        # Set after a flush that wrote DLQ entries, so dlq_backlog is refreshed soon after.
        self.dead_letters_written = asyncio.Event()

    def start(self) -> None:
        """Start both lanes on the running loop."""
        self._claims.start()
        self._outcomes.start()

    async def stop(self) -> None:
        """Flush what is queued, then end both lanes."""
        await self._claims.stop()
        await self._outcomes.stop()

    async def claim(self, claim: Claim) -> ExistingSignal | None:
        """Record the claim; None when this request owns the log_id, else the existing row."""
        return await self._claims.submit(claim)

    async def finish(self, outcome: Outcome) -> None:
        """Commit the final row (and DLQ entry); returns once it is durable."""
        await self._outcomes.submit(outcome)

    async def _flush_claims(self, batch: list[_Item[Claim, ExistingSignal | None]]) -> None:
        first: list[Claim] = []
        batch_ids: set[str] = set()
        for item in batch:
            # Only a log_id's first claim in the batch is inserted; later ones lost already.
            if item.work.log_id not in batch_ids:
                batch_ids.add(item.work.log_id)
                first.append(item.work)
        async with self._claim_pool.connection() as conn:
            cur = await conn.execute(query("claim_signals"), {"rows": orjson.dumps(first).decode()})
            won = {row[0] for row in await cur.fetchall()}
        winners: set[int] = set()
        for item in batch:
            if item.work.log_id in won:
                won.discard(item.work.log_id)
                winners.add(id(item))
        lost = [i.work.log_id for i in batch if id(i) not in winners]
        existing = await fetch_existing(self._pool, lost) if lost else {}
        for item in batch:
            if not item.future.done():  # done: the waiter gave up (timeout, client gone)
                item.future.set_result(
                    None if id(item) in winners else existing.get(item.work.log_id)
                )

    async def _flush_outcomes(self, batch: list[_Item[Outcome, None]]) -> None:
        outcomes = [i.work for i in batch]
        params = {
            "rows": orjson.dumps(outcomes).decode(),
            "log_ids": [o.log_id for o in outcomes],
            "delivered_ids": [o.log_id for o in outcomes if o.dl_agents is None],
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(query("finish_signals"), params)
            counts = await cur.fetchone()
        if counts is not None and (counts[1] or counts[2]):
            self.dead_letters_written.set()
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)


async def fetch_existing(
    pool: AsyncConnectionPool, log_ids: list[str]
) -> dict[str, ExistingSignal]:
    """The rows that own these log_ids, by log_id."""
    async with pool.connection() as conn:
        cur = await conn.execute(query("existing_signals"), {"log_ids": log_ids})
        rows = await cur.fetchall()
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


def _fail(batch: list[_Item[W, R]], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
