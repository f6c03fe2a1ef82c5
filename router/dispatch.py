"""Fan-out of one signal to its agents: retries with backoff, a deadline, per-agent concurrency."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from router.agent_client import AgentClient, AgentConnectionError, clip
from router.agent_health import AgentHealth, RetryBudget
from router.balance import Balancer, Replica, replica_labels
from router.model import AgentOutcome, AttemptKind, Mode
from router.retry import RetryPolicy, is_retryable_status, parse_retry_after
from router.routing import AgentConfig
from router.signing import signature_header

__all__ = ["DispatchObserver", "Dispatcher", "NullObserver", "new_traceparent"]

_JSON = "application/json"
# How one attempt ends for the retry loop: another attempt may follow, or the delivery is over.
AttemptEnd = Literal["retry", "done"]
MAX_STORED_RESPONSE_BYTES = 65_536


class DispatchObserver(Protocol):
    """Metrics hooks the dispatcher calls."""

    def attempt_finished(
        self, agent: str, replica: str, outcome: AttemptKind, seconds: float
    ) -> None: ...
    def retry(self, agent: str) -> None: ...
    def agent_failed(self, agent: str) -> None: ...
    def inflight(self, agent: str, delta: int) -> None: ...


class NullObserver:
    """An observer that records nothing."""

    def attempt_finished(
        self, agent: str, replica: str, outcome: AttemptKind, seconds: float
    ) -> None:
        """Ignore an attempt."""

    def retry(self, agent: str) -> None:
        """Ignore a retry."""

    def agent_failed(self, agent: str) -> None:
        """Ignore a failed delivery."""

    def inflight(self, agent: str, delta: int) -> None:
        """Ignore in-flight changes."""


class _AgentState:
    """What is built once per agent: its semaphore, replicas and their balancer, default
    timeout, policy, and the process's retry budget for it."""

    __slots__ = (
        "agent",
        "balancer",
        "budget",
        "name",
        "policy",
        "semaphore",
        "signing_keys",
        "timeout_error",
        "timeout_s",
    )

    def __init__(self, agent: AgentConfig, health: AgentHealth, clock: Callable[[], float]) -> None:
        self.agent = agent
        self.name = agent.name
        replicas = [
            Replica(
                i,
                url,
                label,
                health.breaker(
                    agent.name,
                    label,
                    failures=agent.breaker_failures,
                    open_s=agent.breaker_open_ms / 1000,
                ),
                clock,
            )
            for i, (url, label) in enumerate(
                zip(agent.urls, replica_labels(agent.urls), strict=True)
            )
        ]
        self.balancer = Balancer(replicas, agent.balance, clock=clock)
        self.budget: RetryBudget = health.budget(agent.name, ratio=agent.retry_budget)
        self.signing_keys = agent.signing_keys
        self.semaphore = asyncio.Semaphore(agent.concurrency)
        self.timeout_s = agent.timeout_ms / 1000
        self.timeout_error = f"timeout after {agent.timeout_ms} ms"
        self.policy = RetryPolicy.for_agent(agent)


@dataclass(slots=True)
class _Delivery:
    """The progress of one signal to one agent, readable even when its task was cancelled."""

    state: _AgentState
    body: bytes
    headers: dict[str, str]
    deadline: float
    started: float
    attempts: int = 0
    ok: bool = False
    status: int | None = None
    response: Any = None
    error: str | None = None
    retry_after: float | None = None
    latency_s: float | None = None
    # What the last request said of the agent's health; None when none was sent.
    healthy: bool | None = None
    # A bit per replica index already attempted: a retry prefers the others.
    tried: int = 0

    def outcome(self) -> AgentOutcome:
        """The final, immutable-by-convention view of this delivery."""
        return AgentOutcome(
            agent=self.state.name,
            ok=self.ok,
            status_code=self.status,
            attempts=self.attempts,
            latency_ms=round((self.latency_s or 0.0) * 1000, 3),
            response=self.response,
            error=self.error,
        )


class Dispatcher:
    """Delivers a signal's body to its agents over one shared client."""

    def __init__(
        self,
        client: AgentClient,
        agents: Iterable[AgentConfig],
        *,
        observer: DispatchObserver | None = None,
        health: AgentHealth | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._observer: DispatchObserver = observer if observer is not None else NullObserver()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.health = health if health is not None else AgentHealth(clock=clock)
        self._states = {a.name: _AgentState(a, self.health, clock) for a in agents}

    def _state_for(self, agent: AgentConfig) -> _AgentState:
        state = self._states.get(agent.name)
        if state is None or (state.agent is not agent and state.agent != agent):
            # An agent unknown at start, or reconfigured since: it gets its own state.
            state = self._states[agent.name] = _AgentState(agent, self.health, self._clock)
        return state

    async def dispatch(
        self,
        agents: Sequence[AgentConfig],
        mode: Mode,
        body: bytes,
        *,
        log_id: str,
        traceparent: str,
        deadline_ms: int,
        replay: bool = False,
    ) -> list[AgentOutcome]:
        """Send `body` to every agent (`all`) or until one succeeds (`first_success`).

        Outcomes come back in the order of `agents`; cancellation propagates to every attempt.
        A replay says so in `X-Router-Replay: 1`, so an agent can tell a re-delivery from a
        client's new signal.
        """
        started = self._clock()
        deadline = started + deadline_ms / 1000
        # Shared by every agent's first attempt: aiohttp copies it into its own multidict.
        headers = {
            "Content-Type": _JSON,
            "Idempotency-Key": log_id,
            "X-Router-Attempt": "1",
            "traceparent": traceparent,
        }
        if replay:
            headers["X-Router-Replay"] = "1"
        deliveries = [
            _Delivery(self._state_for(agent), body, headers, deadline, started) for agent in agents
        ]
        if len(deliveries) == 1:
            await self._deliver(deliveries[0])
        elif mode == "first_success":
            await self._first_success(deliveries)
        elif deliveries:
            async with asyncio.TaskGroup() as group:
                for delivery in deliveries:
                    group.create_task(self._deliver(delivery))
        return [delivery.outcome() for delivery in deliveries]

    async def _first_success(self, deliveries: list[_Delivery]) -> None:
        """Run every delivery at once; the first success cancels the ones still running."""
        async with asyncio.TaskGroup() as group:
            pending = {group.create_task(self._deliver(d)): d for d in deliveries}
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                won = False
                for task in done:
                    won = pending.pop(task).ok or won
                if won:
                    for task in pending:
                        task.cancel()
                    break
        now = self._clock()
        for task, delivery in pending.items():
            if task.cancelled():
                # A task cancelled before its first step never ran its own handler.
                delivery.ok = False
                delivery.error = "cancelled"
                if delivery.latency_s is None:
                    delivery.latency_s = now - delivery.started

    async def _deliver(self, d: _Delivery) -> None:
        """Attempt one agent until success, a final failure, exhausted attempts or the deadline.

        The whole retry loop: the pure policy (router/retry.py) says how long to wait, this
        says whether to go on. tenacity was the engine before; it cost ~40-55 us per call on
        a path whose budget is a few microseconds per agent, and wrapped a loop this short.
        """
        try:
            while await self._attempt(d) == "retry":
                delay = d.state.policy.delay_s(d.attempts, d.retry_after, self._rng)
                if self._should_stop(d, delay):
                    break
                await self._sleep(delay)
        except asyncio.CancelledError:
            d.ok = False
            d.error = "cancelled"
            raise
        finally:
            d.latency_s = self._clock() - d.started
        if not d.ok:
            self._observer.agent_failed(d.state.name)

    def _should_stop(self, d: _Delivery, delay: float) -> bool:
        if d.attempts >= d.state.policy.max_attempts:
            return True
        if self._clock() + delay >= d.deadline:
            d.error = f"deadline exceeded after {d.error}"
            return True
        return False

    def _deadline_reached(self, d: _Delivery) -> AttemptEnd:
        d.error = "deadline exceeded" if d.attempts == 0 else f"deadline exceeded after {d.error}"
        return "done"

    async def _attempt(self, d: _Delivery) -> AttemptEnd:
        """Make one attempt and record its result on `d`; "retry" when another may follow.

        An open breaker refuses it before it waits for a slot, and a retry must fit the agent's
        retry budget: neither spends the signal's deadline on an agent that is failing.
        """
        state = d.state
        retry = d.attempts > 0
        if retry and not state.budget.allows_retry():
            d.error = f"retry budget exhausted after {d.error}"
            return "done"
        picked = state.balancer.pick(d.tried)
        if picked is None:
            d.error = f"circuit_open after {d.error}" if retry else "circuit_open"
            return "done"
        replica, admission = picked
        d.tried |= 1 << replica.index
        replica.in_flight += 1
        d.healthy = None
        # Counted when admitted, not when sent: retries queued on the semaphore must count
        # against the budget, or a burst of failures all pass the check before any is counted.
        state.budget.attempted(retry=retry)
        state.budget.in_flight += retry
        try:
            semaphore = state.semaphore
            if semaphore.locked():
                left = d.deadline - self._clock()
                if left <= 0:
                    return self._deadline_reached(d)
                try:
                    async with asyncio.timeout(left):
                        await semaphore.acquire()
                except TimeoutError:
                    return self._deadline_reached(d)
            else:
                await semaphore.acquire()
            try:
                return await self._request(d, state, replica)
            finally:
                semaphore.release()
        finally:
            replica.in_flight -= 1
            state.budget.in_flight -= retry
            replica.breaker.finished(admission, None if d.healthy is None else not d.healthy)

    async def _request(self, d: _Delivery, state: _AgentState, replica: Replica) -> AttemptEnd:
        """One HTTP exchange, the agent's semaphore held."""
        start = self._clock()
        left = d.deadline - start
        if left <= 0:
            return self._deadline_reached(d)
        deadline_bound = left < state.timeout_s
        timeout_s = left if deadline_bound else state.timeout_s
        name = state.name
        observer = self._observer
        d.attempts = attempt = d.attempts + 1
        headers = d.headers
        if attempt > 1:
            headers = headers.copy()
            headers["X-Router-Attempt"] = str(attempt)
            observer.retry(name)
        if state.signing_keys:
            headers = _signed(headers, state.signing_keys, d.body)
        d.retry_after = None
        retryable = False
        kind: AttemptKind
        observer.inflight(name, 1)
        try:
            # The client never follows a redirect: it is the agent's answer, not an invitation
            # to re-POST elsewhere.
            reply = await self._client.post(replica.url, d.body, headers, timeout_s)
        except TimeoutError:
            kind = "timeout"
            d.healthy = False
            d.status = d.response = None
            if deadline_bound:
                d.error = "deadline exceeded"
            else:
                d.error = state.timeout_error
                retryable = True
        except AgentConnectionError as exc:
            kind = "connection_error"
            d.healthy = False
            d.status = d.response = None
            d.error = str(exc)
            retryable = True
        except Exception as exc:
            # A request the client refuses to build (a malformed URL or header) fails this
            # agent alone and is not retried, rather than failing the whole signal.
            kind = "connection_error"
            d.status = d.response = None
            d.error = clip(f"request failed: {type(exc).__name__}: {exc}")
        else:
            status = reply.status
            d.status = status
            d.response = _parse_json(reply.body, reply.content_type)
            # A 4xx is the agent answering: the fault is the request's, not the agent's health.
            d.healthy = not is_retryable_status(status)
            if 200 <= status < 300:
                kind = "ok"
                d.ok = True
                d.error = None
            elif is_retryable_status(status):
                kind = "http_429" if status == 429 else "http_5xx"
                d.error = f"HTTP {status}"
                if reply.retry_after is not None:
                    d.retry_after = parse_retry_after(reply.retry_after, time.time())
                retryable = True
            else:
                # 3xx joins 4xx: a non-retried answer that is not a success.
                kind = "http_4xx"
                d.error = f"HTTP {status} (not retried)"
        finally:
            observer.inflight(name, -1)
        seconds = self._clock() - start
        replica.observe(seconds)
        observer.attempt_finished(name, replica.label, kind, seconds)
        return "retry" if retryable else "done"


def _signed(headers: dict[str, str], keys: tuple[bytes, ...], body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers, signed now: a retry carries a fresh timestamp."""
    msg_id = headers["Idempotency-Key"]
    timestamp = int(time.time())
    return {
        **headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }


def _parse_json(raw: bytes, content_type: str) -> Any:
    """The decoded reply when it is declared JSON, parses and can be stored, else None."""
    if not raw or not (content_type == _JSON or content_type.endswith("+json")):
        return None
    # The reply is stored in the signal's jsonb row: PostgreSQL cannot hold NUL, and an
    # agent's oversized reply must not bloat every log row.
    if len(raw) > MAX_STORED_RESPONSE_BYTES or b"\\u0000" in raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


def _random_hex(n_bytes: int) -> str:
    """Random lowercase hex, never all zeros (an invalid W3C id)."""
    while True:
        value = os.urandom(n_bytes).hex()
        if value.strip("0"):
            return value


def new_traceparent(parent: str | None) -> tuple[str, str]:
    """The W3C traceparent to forward and its trace id: the caller's trace continued, or a new one.

    Only version 00 with lowercase hex and non-zero ids continues a trace.
    """
    if parent:
        match = _TRACEPARENT.fullmatch(parent.strip())
        if match is not None:
            trace_id, parent_id, flags = match.groups()
            if trace_id != _ZERO_TRACE_ID and parent_id != _ZERO_SPAN_ID:
                return f"00-{trace_id}-{_random_hex(8)}-{flags}", trace_id
    trace_id = _random_hex(16)
    return f"00-{trace_id}-{_random_hex(8)}-01", trace_id
