"""Group commit: one task writes all queued claims and outcomes in one transaction."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from router.metrics import Metrics
from router.store.errors import DatabaseUnavailable, StoreError, wrap_database_errors
from router.store.queries import query

log = structlog.get_logger("router.store.writer")

MAX_BATCH = 256


@dataclass(slots=True)
class Claim:
    """The signal's record before dispatch; JSON fields are already serialized."""

    log_id: str
    sender_id: str
    kind: str
    mode: str
    payload: str
    metadata: str | None
    event_time: str | None
    routed_agents: str
    trace_id: str
    payload_hash: str
    expires_in_s: float


@dataclass(slots=True)
class DeadLetter:
    """A DLQ entry for the agents of one signal that failed."""

    log_id: str
    sender_id: str
    kind: str
    agents: str
    mode: str
    payload: str
    metadata: str | None
    event_time: str | None
    trace_id: str
    last_error: str
    attempts: int


@dataclass(slots=True)
class Outcome:
    """The final row of a signal, plus its DLQ entry when an agent failed."""

    log_id: str
    status: str
    response: str
    attempts: int
    latency_ms: float
    dead_letter: DeadLetter | None


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


@dataclass(slots=True)
class _Item:
    work: Claim | Outcome
    future: asyncio.Future[ExistingSignal | None]


class GroupCommitWriter:
    """Queue claims and outcomes; each flush commits everything queued since the last one."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        metrics: Metrics | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Set after a flush that wrote DLQ entries, so dlq_backlog is refreshed soon after.
        self.dead_letters_written = asyncio.Event()

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def stop(self) -> None:
        """Flush what is queued, then end the task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def claim(self, claim: Claim) -> ExistingSignal | None:
        """Record the claim; None when this request owns the log_id, else the existing row."""
        return await self._submit(claim)

    async def finish(self, outcome: Outcome) -> None:
        """Commit the final row (and DLQ entry); returns once it is durable."""
        await self._submit(outcome)

    def _submit(self, work: Claim | Outcome) -> asyncio.Future[ExistingSignal | None]:
        if self._closing:
            raise DatabaseUnavailable("the router is shutting down")
        future: asyncio.Future[ExistingSignal | None] = asyncio.get_running_loop().create_future()
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

    async def _flush_safely(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            with wrap_database_errors():
                await self._flush(batch)
        except DatabaseUnavailable as exc:
            _fail(batch, exc)
        except StoreError as exc:
            # One row the database refused must not fail the others that shared its batch.
            if len(batch) == 1:
                log.error("log_write_failed", log_id=batch[0].work.log_id, error=str(exc))
                _fail(batch, exc)
            else:
                for item in batch:
                    await self._flush_safely([item])
            return
        except Exception as exc:  # a bug here must not leave waiters hanging forever
            log.exception("log_writer_crashed")
            _fail(batch, StoreError(f"log writer failed: {exc!r}"))
        if self._metrics is not None:
            self._metrics.commit_batch_size.observe(len(batch))
            self._metrics.commit_latency.observe(time.perf_counter() - started)

    async def _flush(self, batch: list[_Item]) -> None:
        claims: list[_Item] = []
        repeats: list[_Item] = []  # a log_id already claimed earlier in this batch: it lost
        outcomes: list[_Item] = []
        batch_ids: set[str] = set()
        for item in batch:
            if isinstance(item.work, Outcome):
                outcomes.append(item)
            elif item.work.log_id in batch_ids:
                repeats.append(item)
            else:
                batch_ids.add(item.work.log_id)
                claims.append(item)
        won: set[str] = set()
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            if not outcomes:
                # A claim guards against the router dying, not the database: it need not
                # wait for the WAL flush. Outcomes in the batch make the commit durable.
                await conn.execute("SET LOCAL synchronous_commit = off")
            claim_cursor = await _write_claims(conn, claims) if claims else None
            if outcomes:
                await _write_outcomes(conn, outcomes)
            if claim_cursor is not None:
                won = {row[0] for row in await claim_cursor.fetchall()}
        if any(i.work.dead_letter is not None for i in outcomes if isinstance(i.work, Outcome)):
            self.dead_letters_written.set()
        lost = [i for i in claims if i.work.log_id not in won] + repeats
        existing = await fetch_existing(self._pool, [i.work.log_id for i in lost]) if lost else {}
        lost_ids = {id(i) for i in lost}
        for item in batch:
            if item.future.done():  # the waiter gave up (timeout, client gone)
                continue
            if id(item) in lost_ids:
                item.future.set_result(existing.get(item.work.log_id))
            else:
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


async def _write_claims(conn: AsyncConnection, items: list[_Item]) -> psycopg.AsyncCursor[Any]:
    claims = [i.work for i in items if isinstance(i.work, Claim)]
    return await conn.execute(
        query("claim_signals"),
        {
            "log_id": [c.log_id for c in claims],
            "sender_id": [c.sender_id for c in claims],
            "kind": [c.kind for c in claims],
            "mode": [c.mode for c in claims],
            "payload": [c.payload for c in claims],
            "metadata": [c.metadata for c in claims],
            "event_time": [c.event_time for c in claims],
            "routed_agents": [c.routed_agents for c in claims],
            "trace_id": [c.trace_id for c in claims],
            "payload_hash": [c.payload_hash for c in claims],
            "expires_in_s": [c.expires_in_s for c in claims],
        },
    )


async def _write_outcomes(conn: AsyncConnection, items: list[_Item]) -> None:
    outcomes = [i.work for i in items if isinstance(i.work, Outcome)]
    await conn.execute(
        query("finish_signals"),
        {
            "log_id": [o.log_id for o in outcomes],
            "status": [o.status for o in outcomes],
            "response": [o.response for o in outcomes],
            "attempts": [o.attempts for o in outcomes],
            "latency_ms": [o.latency_ms for o in outcomes],
        },
    )
    letters = [o.dead_letter for o in outcomes if o.dead_letter is not None]
    if letters:
        await conn.execute(
            query("dead_letter_signals"),
            {
                "log_id": [d.log_id for d in letters],
                "sender_id": [d.sender_id for d in letters],
                "kind": [d.kind for d in letters],
                "agents": [d.agents for d in letters],
                "mode": [d.mode for d in letters],
                "payload": [d.payload for d in letters],
                "metadata": [d.metadata for d in letters],
                "event_time": [d.event_time for d in letters],
                "trace_id": [d.trace_id for d in letters],
                "last_error": [d.last_error for d in letters],
                "attempts": [d.attempts for d in letters],
            },
        )
    delivered = [o.log_id for o in outcomes if o.dead_letter is None]
    if delivered:
        await conn.execute(query("resolve_interrupted"), {"log_ids": delivered})


def _fail(batch: list[_Item], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


def dumps(value: Any) -> str:
    """JSON text for a jsonb parameter."""
    return orjson.dumps(value).decode()
