"""POST /route, top to bottom: cap, auth, parse, classify, claim, fan out, commit, answer."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response

from router.api.errors import JSON, ApiError, api_error_response
from router.dispatch import AgentOutcome, Dispatcher, new_traceparent
from router.metrics import Metrics
from router.routing import RoutingTable, Rule
from router.signals import InvalidSignal, Signal, parse_signal
from router.store.errors import DatabaseUnavailable, RejectedByDatabase, StoreError
from router.store.recovery import sweep_abandoned
from router.store.writer import (
    Claim,
    DeadLetter,
    ExistingSignal,
    GroupCommitWriter,
    Outcome,
    fetch_existing,
)

log = structlog.get_logger("router.route")

# A claim must commit within the contract's 2 s, or the caller hears 503 and nothing is sent.
CLAIM_TIMEOUT_S = 2.0
# How long the outcome may take to commit before the caller is told it was not recorded.
OUTCOME_TIMEOUT_S = 10.0
# A claim is abandoned once its deadline has passed by this much: the margin lets a
# dispatch that ended right at its deadline commit before the sweeper takes it.
CLAIM_GRACE_S = 1.0
MAX_LAST_ERROR = 1000
RETRY_AFTER = {"Retry-After": "1"}
REPLAYED = {"Idempotent-Replayed": "true"}
HTTP_FOR_STATUS = {"delivered": 200, "partial": 200, "dead_lettered": 202, "interrupted": 202}


class RoutePath:
    """Everything POST /route needs, built once at start-up."""

    def __init__(
        self,
        *,
        table: RoutingTable,
        dispatcher: Dispatcher,
        writer: GroupCommitWriter,
        pool: AsyncConnectionPool,
        metrics: Metrics,
        route_keys: frozenset[str],
        max_body_bytes: int,
        max_in_flight: int = 4096,
    ) -> None:
        self._table = table
        self._dispatcher = dispatcher
        self._writer = writer
        self._pool = pool
        self._metrics = metrics
        self._keys = tuple(k.encode() for k in route_keys)
        self._max_body = max_body_bytes
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    async def handle(self, request: Request) -> Response:
        """Answer one POST /route; never raises."""
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            response = await self._route(request, started, fields)
        except ApiError as exc:
            self._metrics.outcome["rejected"].inc()
            fields["status"] = "rejected"
            fields["error"] = exc.code
            response = api_error_response(exc)
        self._metrics.responded(response.status_code)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info("signal", http_status=response.status_code, latency_ms=latency_ms, **fields)
        return response

    async def _route(self, request: Request, started: float, fields: dict[str, Any]) -> Response:
        raw = await self._read_body(request)
        self._authenticate(request)
        try:
            signal = parse_signal(raw)
        except InvalidSignal as exc:
            raise ApiError(exc.status, exc.code, exc.message, exc.field) from None
        rule = self._table.classify(signal.strings)
        traceparent, trace_id = new_traceparent(request.headers.get("traceparent"))
        fields.update(trace_id=trace_id, log_id=signal.log_id, kind=rule.kind)
        self._metrics.received_by_kind[rule.kind].inc()

        if self._in_flight >= self._max_in_flight:
            raise ApiError(503, "overloaded", "the router is shedding load", headers=RETRY_AFTER)
        self._in_flight += 1
        try:
            payload_json = orjson.dumps(signal.payload).decode()
            metadata_json = (
                None if signal.metadata is None else orjson.dumps(signal.metadata).decode()
            )
            existing = await self._claim(signal, rule, trace_id, payload_json, metadata_json)
            if existing is not None:
                return await self._answer_existing(signal, existing, started, fields)

            outcomes = await self._dispatcher.dispatch(
                rule.agents,
                rule.mode,
                orjson.dumps(
                    {
                        "log_id": signal.log_id,
                        "sender_id": signal.sender_id,
                        "kind": rule.kind,
                        "payload": signal.payload,
                        "metadata": signal.metadata,
                        "timestamp": signal.timestamp,
                    }
                ),
                log_id=signal.log_id,
                traceparent=traceparent,
                deadline_ms=rule.deadline_ms,
            )
            status, failed = _status_of(rule, outcomes)
            agents_json = [o.as_dict() for o in outcomes]
            response_json = _dumps_outcomes(agents_json)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            await self._commit_outcome(
                Outcome(
                    log_id=signal.log_id,
                    status=status,
                    response=response_json,
                    attempts=sum(o.attempts for o in outcomes),
                    latency_ms=latency_ms,
                    dead_letter=None
                    if not failed
                    else _dead_letter(signal, rule, trace_id, failed, payload_json, metadata_json),
                )
            )
        finally:
            self._in_flight -= 1

        if failed:
            self._metrics.dlq_total.inc()
        self._metrics.outcome[status].inc()
        self._metrics.latency_by_kind[rule.kind].observe(time.perf_counter() - started)
        fields["status"] = status
        body = {
            "log_id": signal.log_id,
            "kind": rule.kind,
            "status": status,
            "duplicate": False,
            "trace_id": trace_id,
            "agents": agents_json,
        }
        return Response(orjson.dumps(body), HTTP_FOR_STATUS[status], media_type=JSON)

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 before it is parsed (or even fully read) when too large."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise _too_large(self._max_body)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise _too_large(self._max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    def _authenticate(self, request: Request) -> None:
        """Constant-time comparison against every key, so timing reveals nothing."""
        given = request.headers.get("x-api-key")
        if not given:
            raise ApiError(401, "unauthorized", "the X-API-Key header is required")
        given_bytes = given.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given_bytes, key)
        if not matched:
            raise ApiError(401, "unauthorized", "unknown API key")

    async def _claim(
        self,
        signal: Signal,
        rule: Rule,
        trace_id: str,
        payload_json: str,
        metadata_json: str | None,
    ) -> ExistingSignal | None:
        """Record the signal before any agent hears of it; the database picks the log_id's owner."""
        claim = Claim(
            log_id=signal.log_id,
            sender_id=signal.sender_id,
            kind=rule.kind,
            mode=rule.mode,
            payload=payload_json,
            metadata=metadata_json,
            event_time=signal.timestamp,
            routed_agents=orjson.dumps([a.name for a in rule.agents]).decode(),
            trace_id=trace_id,
            payload_hash=signal.body_hash,
            expires_in_s=rule.deadline_ms / 1000 + CLAIM_GRACE_S,
        )
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT_S):
                return await self._writer.claim(claim)
        except (DatabaseUnavailable, TimeoutError):
            raise _database_unavailable() from None
        except RejectedByDatabase as exc:
            raise ApiError(422, "unstorable", str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, "database_error", str(exc), headers=RETRY_AFTER) from None

    async def _commit_outcome(self, outcome: Outcome) -> None:
        """Wait for the final row's commit: nothing is acknowledged that is not durable."""
        try:
            async with asyncio.timeout(OUTCOME_TIMEOUT_S):
                await self._writer.finish(outcome)
        except (StoreError, TimeoutError) as exc:
            # The claim stays in flight; once abandoned, the sweeper parks it in the DLQ and
            # a replay re-delivers it under the same Idempotency-Key.
            raise ApiError(
                503,
                "outcome_not_recorded",
                "the signal was dispatched but its outcome could not be recorded "
                f"({exc or 'timeout'}); it will be recovered from its claim and replayed",
                headers=RETRY_AFTER,
            ) from None

    async def _answer_existing(
        self, signal: Signal, existing: ExistingSignal, started: float, fields: dict[str, Any]
    ) -> Response:
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
        status = "dead_lettered" if existing.status == "interrupted" else existing.status
        agents = existing.response
        if agents is None:
            agents = [_interrupted(name) for name in existing.routed_agents]
        self._metrics.outcome["duplicate"].inc()
        self._metrics.latency_by_kind[existing.kind].observe(time.perf_counter() - started)
        fields.update(status=status, duplicate=True, trace_id=existing.trace_id)
        body = {
            "log_id": existing.log_id,
            "kind": existing.kind,
            "status": status,
            "duplicate": True,
            "trace_id": existing.trace_id,
            "agents": agents,
        }
        return Response(
            orjson.dumps(body), HTTP_FOR_STATUS[existing.status], REPLAYED, media_type=JSON
        )

    async def _take_over(self, existing: ExistingSignal) -> ExistingSignal:
        """An abandoned claim (its router died): sweep it to the DLQ, then answer what is stored."""
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT_S):
                swept = await sweep_abandoned(self._pool)
                rows = await fetch_existing(self._pool, [existing.log_id])
        except (StoreError, TimeoutError):
            raise _database_unavailable() from None
        if swept:
            self._metrics.dlq_total.inc(swept)
            self._writer.dead_letters_written.set()
        return rows.get(existing.log_id, existing)


def _status_of(rule: Rule, outcomes: Sequence[AgentOutcome]) -> tuple[str, list[AgentOutcome]]:
    """delivered, partial or dead_lettered, and the agents that go to the DLQ."""
    succeeded = [o for o in outcomes if o.ok]
    if rule.mode == "first_success":
        return ("delivered", []) if succeeded else ("dead_lettered", list(outcomes))
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return "delivered", []
    return ("partial" if succeeded else "dead_lettered"), failed


def _dumps_outcomes(agents_json: list[dict[str, Any]]) -> str:
    """The outcomes as JSON text; an agent reply too deep to serialize is dropped, not fatal."""
    try:
        return orjson.dumps(agents_json).decode()
    except orjson.JSONEncodeError:
        for item in agents_json:
            item["response"] = None
        return orjson.dumps(agents_json).decode()


def _dead_letter(
    signal: Signal,
    rule: Rule,
    trace_id: str,
    failed: list[AgentOutcome],
    payload_json: str,
    metadata_json: str | None,
) -> DeadLetter:
    last_error = "; ".join(f"{o.agent}: {o.error}" for o in failed)
    return DeadLetter(
        log_id=signal.log_id,
        sender_id=signal.sender_id,
        kind=rule.kind,
        agents=orjson.dumps([o.agent for o in failed]).decode(),
        mode=rule.mode,
        payload=payload_json,
        metadata=metadata_json,
        event_time=signal.timestamp,
        trace_id=trace_id,
        last_error=last_error[:MAX_LAST_ERROR],
        attempts=sum(o.attempts for o in failed),
    )


def _interrupted(agent: str) -> dict[str, Any]:
    return {
        "agent": agent,
        "ok": False,
        "status_code": None,
        "attempts": 0,
        "latency_ms": 0.0,
        "response": None,
        "error": "interrupted",
    }


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")


def _database_unavailable() -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        "the log database is unreachable; nothing was dispatched",
        headers=RETRY_AFTER,
    )
