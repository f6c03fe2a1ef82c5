"""POST /route, top to bottom: cap, auth, parse, classify, claim, fan out, commit, answer."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from psycopg_pool import AsyncConnectionPool
from starlette.types import Receive, Scope, Send

from router import budget
from router.api.auth import ApiKeys
from router.api.body import read_capped
from router.api.errors import ApiError, error_body, from_store_error, retry_later
from router.dispatch import Dispatcher, new_traceparent
from router.logging import SignalLine
from router.metrics import Metrics
from router.model import (
    HTTP_FOR_STATUS,
    AgentOutcome,
    AnswerStatus,
    RouteAnswer,
    clip_last_error,
)
from router.rate_limit import SenderLimiter
from router.routing import RoutingTable, Rule
from router.signals import Signal, parse_signal
from router.stats import LatencyStats
from router.store.errors import DatabaseUnavailable, Overloaded, StoreError
from router.store.recovery import sweep_abandoned
from router.store.writer import (
    Claim,
    ExistingSignal,
    GroupCommitWriter,
    Outcome,
)
from router.timeouts import FixedTimeouts

log = structlog.get_logger("router.route")

INTERRUPTED_ERROR = (
    "interrupted: the router stopped while this signal was being dispatched; "
    "a replay delivers it again with the same Idempotency-Key"
)
_CONTENT_TYPE = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")

# (status, body, extra headers) of one answer.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
# Writes an answer to the client: (status, JSON body, extra headers).
Reply = Callable[[int, bytes, list[tuple[bytes, bytes]]], Awaitable[None]]


@dataclass(slots=True, kw_only=True)
class RoutePath:
    """Everything POST /route needs, built once at start-up."""

    table: RoutingTable
    dispatcher: Dispatcher
    writer: GroupCommitWriter
    pool: AsyncConnectionPool
    metrics: Metrics
    keys: ApiKeys
    max_body_bytes: int
    outcome_timeout_s: float
    stats: LatencyStats
    # The per-signal log line (router.logging.signal_line: buffered JSON by default).
    signal_line: SignalLine
    limiter: SenderLimiter | None = None
    max_in_flight: int = 4096
    in_flight: int = field(default=0, init=False)
    # Built in the running loop and kept: on Python 3.11 every asyncio.get_running_loop()
    # is a getpid() syscall (a fork check), several per signal.
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop, init=False)
    # How long a request waits for its claim, and for its outcome's commit.
    claim_waits: FixedTimeouts = field(init=False)
    outcome_waits: FixedTimeouts = field(init=False)

    def __post_init__(self) -> None:
        self.claim_waits = FixedTimeouts(self.loop, budget.CLAIM_WAIT_S)
        self.outcome_waits = FixedTimeouts(
            self.loop, self.outcome_timeout_s + budget.STATEMENT_TIMEOUT_S
        )

    def close(self) -> None:
        """Stop the two wait timers (the server has answered or cancelled every request)."""
        self.claim_waits.close()
        self.outcome_waits.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one POST /route at the ASGI level: the requests the server's own route
        (router.http_protocol) leaves to uvicorn, and servers other than `router serve`."""
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body: bytes | ApiError
        try:
            body = await read_capped(receive, _content_length(headers), self.max_body_bytes)
        except ApiError as exc:
            body = exc

        async def reply(status: int, content: bytes, extra: list[tuple[bytes, bytes]]) -> None:
            extra.append(_CONTENT_TYPE)
            extra.append((b"content-length", str(len(content)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": extra})
            await send({"type": "http.response.body", "body": content})

        await self.answer(headers, body, started, reply)

    async def answer(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes | ApiError,
        started: float,
        reply: Reply,
    ) -> None:
        """Route one signal whose body was read (or could not be), answer it through `reply`,
        then count and log it; never raises.

        Not a FastAPI route: the framework's request, dependency and response objects cost
        more per signal than the rest of the router's own work.
        """
        fields: dict[str, Any] = {}
        try:
            if isinstance(body, ApiError):
                raise body
            status, content, extra = await self._route(headers, body, started, fields)
        except (ApiError, StoreError) as exc:
            error = exc if isinstance(exc, ApiError) else from_store_error(exc)
            self.metrics.outcome["rejected"].inc()
            fields["status"] = "rejected"
            fields["error"] = error.code
            status, content, extra = _error_answer(error)
        except Exception:  # a bug: logged with its traceback, answered in the contract's shape
            log.exception("route_failed", **fields)
            status, content, extra = _error_answer(
                ApiError(500, "internal_error", "the router failed to handle this signal")
            )
        await reply(status, content, extra)
        self.metrics.responded(status)
        fields["http_status"] = status
        fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.signal_line(fields)

    async def _route(
        self,
        headers: list[tuple[bytes, bytes]],
        raw: bytes,
        started: float,
        fields: dict[str, Any],
    ) -> Answer:
        api_key = parent = None
        for name, value in headers:
            if name == b"x-api-key":
                api_key = value
            elif name == b"traceparent":
                parent = value
        self.keys.require_route(api_key)
        signal = parse_signal(raw)  # InvalidSignal is an ApiError: 400/413/422 as it says
        if self.limiter is not None:
            self._admit(signal.sender_id)
        rule = self.table.classify(signal.strings)
        traceparent, trace_id = new_traceparent(
            parent.decode("latin-1") if parent is not None else None
        )
        fields.update(trace_id=trace_id, log_id=signal.log_id, kind=rule.kind)

        if self.in_flight >= self.max_in_flight:
            raise _overloaded()
        self.in_flight += 1
        try:
            claim = self._new_claim(signal, rule, trace_id)
            existing = await self._claim(claim)
            if existing is not None:
                return await self._answer_existing(signal, existing, started, fields)
            self.metrics.received_by_kind[rule.kind].inc()
            try:
                outcomes = await self.dispatcher.dispatch(
                    rule.agents,
                    rule.mode,
                    claim.forwarded_body(),
                    log_id=signal.log_id,
                    traceparent=traceparent,
                    deadline_ms=rule.deadline_ms,
                )
            except asyncio.CancelledError:
                # The server's drain ran out mid-dispatch: the agents may have it. Recorded as
                # interrupted at once (the lane writes it even though nobody waits), so it is
                # replayed without waiting for the claim to expire.
                with contextlib.suppress(StoreError):
                    self.writer.finish(_interrupted_outcome(claim, started), retry_for_s=1.0)
                raise _cut_short() from None
            self.stats.record(rule.kind, outcomes)
            status, failed = _status_of(rule, outcomes)
            # Serialized before the commit: an agent reply too deep to encode is dropped here
            # rather than failing the batch it would share.
            body = _answer_body(signal.log_id, rule.kind, status, trace_id, outcomes)
            outcome = Outcome(
                claim=claim,
                status=status,
                response=outcomes,
                attempts=sum(o.attempts for o in outcomes),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            if failed:
                outcome.dl_agents = [o.agent for o in failed]
                outcome.dl_last_error = clip_last_error(
                    "; ".join(f"{o.agent}: {o.error}" for o in failed)
                )
                outcome.dl_attempts = sum(o.attempts for o in failed)
            await self._commit_outcome(outcome)
        finally:
            self.in_flight -= 1

        self.metrics.outcome[status].inc()
        self.metrics.observe_latency(rule.kind, time.perf_counter() - started)
        fields["status"] = status
        return HTTP_FOR_STATUS[status], body, []

    def _admit(self, sender_id: str) -> None:
        """The sender's token bucket, before anything is claimed: 429 when it is empty."""
        assert self.limiter is not None
        wait_s = self.limiter.take(sender_id)
        if wait_s is not None:
            self.metrics.rate_limited.inc()
            raise retry_later(
                "rate_limited",
                "this sender_id is over SENDER_RATE_LIMIT; nothing was recorded or dispatched",
                status=429,
                after_s=max(1, math.ceil(wait_s)),
            )

    def _new_claim(self, signal: Signal, rule: Rule, trace_id: str) -> Claim:
        return Claim(
            log_id=signal.log_id,
            sender_id=signal.sender_id,
            kind=rule.kind,
            mode=rule.mode,
            payload=signal.payload,
            metadata=signal.metadata,
            event_time=signal.timestamp,
            routed_agents=rule.agent_names,
            trace_id=trace_id,
            payload_hash=signal.body_hash,
            claim_token=secrets.token_hex(8),
            deduplicable=signal.deduplicable,
            expires_in_s=budget.claim_expiry_s(rule.deadline_ms, self.outcome_timeout_s),
        )

    async def _claim(self, claim: Claim) -> ExistingSignal | None:
        """Record the signal before any agent hears of it; the database picks the log_id's owner.

        Whatever ends the wait (timeout, shutdown), a claim that was won but will not be
        dispatched is removed, so a 503 here always means nothing will be sent.
        """
        future: asyncio.Future[ExistingSignal | None] | None = None
        try:
            future = self.writer.claim(claim, valid_for_s=budget.CLAIM_VALID_S)
            self.claim_waits.add(future)
            return await future
        except (TimeoutError, asyncio.CancelledError) as exc:
            if (
                future is not None
                and future.done()
                and not future.cancelled()
                and future.exception() is None
                and future.result() is None
            ):
                self.writer.void(claim)
            if isinstance(exc, asyncio.CancelledError):
                raise retry_later(
                    "shutting_down", "the router is shutting down; nothing was dispatched"
                ) from None
            raise _database_unavailable() from None
        except DatabaseUnavailable:
            raise _database_unavailable() from None

    async def _commit_outcome(self, outcome: Outcome) -> None:
        """Wait for the final row's commit: nothing is acknowledged that is not durable.

        The lane retries through an outage for the outcome timeout, and writes the row even
        if this request stops waiting; it is a compare-and-set on this request's claim.
        """
        future = self.writer.finish(outcome, retry_for_s=self.outcome_timeout_s)
        try:
            # Not shielded: a cancelled future only stops the lane from answering this
            # request; the lane writes every outcome it was given.
            self.outcome_waits.add(future)
            recorded = await future
        except asyncio.CancelledError:
            raise _cut_short() from None
        except (StoreError, TimeoutError) as exc:
            # The claim stays in flight; once abandoned, the sweeper parks it in the DLQ and
            # a replay re-delivers it under the same Idempotency-Key.
            raise _not_recorded(str(exc) or "timeout") from None
        if not recorded.written:
            raise _not_recorded("the signal's row is no longer this request's claim")
        if recorded.dead_lettered:
            self.metrics.dlq_total.inc()

    async def _answer_existing(
        self, signal: Signal, existing: ExistingSignal, started: float, fields: dict[str, Any]
    ) -> Answer:
        """A seen log_id: the stored outcome, 409 while in flight, 422 for another body."""
        if existing.payload_hash != signal.body_hash:
            raise ApiError(
                422,
                "log_id_conflict",
                "this log_id was already used for a different signal",
                "log_id",
            )
        if existing.status == "in_flight" and existing.abandoned:
            existing = await self._take_over(existing)
        if existing.status == "in_flight":
            raise ApiError(
                409,
                "in_flight",
                "a signal with this log_id is being dispatched right now",
                "log_id",
            )
        status: AnswerStatus = (
            "dead_lettered" if existing.status == "interrupted" else existing.status
        )
        # Stored outcomes are the JSON AgentOutcome was written as.
        agents: list[Any] | None = existing.response
        if agents is None:
            agents = [_interrupted(name) for name in existing.routed_agents]
        self.metrics.outcome["duplicate"].inc()
        self.metrics.observe_latency(existing.kind, time.perf_counter() - started)
        fields.update(status=status, duplicate=True, trace_id=existing.trace_id)
        body = _answer_body(
            existing.log_id, existing.kind, status, existing.trace_id, agents, duplicate=True
        )
        return HTTP_FOR_STATUS[existing.status], body, [_REPLAYED]

    async def _take_over(self, existing: ExistingSignal) -> ExistingSignal:
        """An abandoned claim (its router died): sweep it to the DLQ, then answer what is stored."""
        try:
            async with asyncio.timeout(budget.CLAIM_WAIT_S):
                swept = await sweep_abandoned(self.pool)
                rows = await self.writer.existing([existing.log_id])
        except (StoreError, TimeoutError):
            raise _database_unavailable() from None
        if swept:
            self.metrics.dlq_total.inc(swept)
            self.writer.dead_letters_written.set()
        return rows.get(existing.log_id, existing)


def _status_of(
    rule: Rule, outcomes: Sequence[AgentOutcome]
) -> tuple[AnswerStatus, list[AgentOutcome]]:
    """delivered, partial or dead_lettered, and the agents that go to the DLQ."""
    succeeded = [o for o in outcomes if o.ok]
    if rule.mode == "first_success":
        return ("delivered", []) if succeeded else ("dead_lettered", list(outcomes))
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return "delivered", []
    return ("partial" if succeeded else "dead_lettered"), failed


def _answer_body(
    log_id: str,
    kind: str,
    status: AnswerStatus,
    trace_id: str,
    agents: list[AgentOutcome],
    *,
    duplicate: bool = False,
) -> bytes:
    """The response body; agent replies that cannot be serialized are dropped, not fatal."""
    body: RouteAnswer = {
        "log_id": log_id,
        "kind": kind,
        "status": status,
        "duplicate": duplicate,
        "trace_id": trace_id,
        "agents": agents,
    }
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        for agent in agents:
            agent.response = None
        return orjson.dumps(body)


def _interrupted(agent: str) -> AgentOutcome:
    return AgentOutcome(agent, False, None, 0, 0.0, None, "interrupted")


def _interrupted_outcome(claim: Claim, started: float) -> Outcome:
    """The row of a dispatch cut short: every routed agent goes to the DLQ."""
    return Outcome(
        claim=claim,
        status="interrupted",
        response=[_interrupted(name) for name in claim.routed_agents],
        attempts=0,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        dl_agents=list(claim.routed_agents),
        dl_last_error=INTERRUPTED_ERROR,
        dl_attempts=0,
    )


def _content_length(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-length":
            return value
    return None


def _error_answer(exc: ApiError) -> Answer:
    body = error_body(exc.code, exc.message, exc.field)
    headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    return exc.status, body, headers


def _overloaded() -> ApiError:
    return from_store_error(Overloaded(Overloaded.__doc__))


def _cut_short() -> ApiError:
    return retry_later(
        "interrupted",
        "the router stopped before this signal's outcome was confirmed; a retry of its log_id "
        "gets the stored outcome, and what was not recorded is replayed with the same "
        "Idempotency-Key",
    )


def _not_recorded(reason: str) -> ApiError:
    return retry_later(
        "outcome_not_recorded",
        f"the signal was dispatched but its outcome could not be recorded ({reason}); "
        "it will be recovered from its claim and replayed",
    )


def _database_unavailable() -> ApiError:
    return from_store_error(
        DatabaseUnavailable("the log database is unreachable; nothing was dispatched")
    )
