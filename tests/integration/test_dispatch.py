"""Fan-out over real loopback HTTP against scripted aiohttp agents; retries never really sleep."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import standardwebhooks
import standardwebhooks.webhooks
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from router.agent_client import AgentClient
from router.dispatch import Dispatcher, DispatchObserver, new_traceparent
from router.http11_client import Http11Client
from router.model import AgentOutcome, Mode
from router.routing import AgentConfig
from router.signing import keys_from_env
from tests.support import start_router

BODY = orjson.dumps({"log_id": "sig-1", "sender_id": "u1", "kind": "k", "payload": {"m": "hé"}})
LOG_ID = "sig-1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Step = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(
    status: int = 200,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Step:
    """A step answering `status` with a JSON body (or `raw` bytes), after `delay` seconds."""

    async def step(request: web.Request) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        payload = raw if raw is not None else orjson.dumps(body if body is not None else {})
        return web.Response(status=status, body=payload, headers=headers, content_type=content_type)

    return step


async def hang(request: web.Request) -> web.StreamResponse:
    """A step that never answers."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def drop(request: web.Request) -> web.StreamResponse:
    """A step that closes the connection without answering."""
    assert request.transport is not None
    request.transport.close()
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class Agent:
    """A scripted agent: the n-th request gets the n-th step, the last step repeats."""

    def __init__(self, steps: tuple[Step, ...]) -> None:
        self.steps = steps
        self.seen: list[tuple[CIMultiDictProxy[str] | CIMultiDict[str], bytes]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.dropped = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # Header names are case-insensitive: a client may send them in any case.
        self.seen.append((request.headers.copy(), await request.read()))
        step = self.steps[min(len(self.seen), len(self.steps)) - 1]
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await step(request)
        except asyncio.CancelledError:
            self.dropped.set()
            raise
        finally:
            self.inflight -= 1

    def header(self, name: str) -> list[str | None]:
        return [headers.get(name) for headers, _ in self.seen]


ServeAgent = Callable[..., Awaitable[Agent]]


def lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers as standardwebhooks reads them: a dict of lower-case names."""
    return {name.lower(): value for name, value in headers.items()}


@pytest_asyncio.fixture
async def serve_agent() -> AsyncIterator[ServeAgent]:
    """Starts scripted agents on 127.0.0.1, each on its own free port."""
    runners: list[web.AppRunner] = []

    async def start(*steps: Step) -> Agent:
        agent = Agent(steps or (reply(),))
        app = web.Application()
        app.router.add_post("/handle", agent.handle)
        # handler_cancellation lets a hung handler see the client drop the connection.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        agent.url = f"http://127.0.0.1:{runner.addresses[0][1]}/handle"
        return agent

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[AgentClient]:
    """The production client."""
    client = Http11Client()
    yield client
    await client.close()


class Sleeps:
    """An injected sleep that records each delay and advances an optional fake clock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(float(seconds))
        if self.clock is not None:
            self.clock.now += seconds
        await asyncio.sleep(0)


class FakeClock:
    """A monotonic clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingObserver:
    """Counts every hook the dispatcher calls."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []
        self.retries: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.inflight_now: Counter[str] = Counter()

    def attempt_finished(self, agent: str, replica: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.attempts.append((agent, outcome))

    def retry(self, agent: str) -> None:
        self.retries[agent] += 1

    def agent_failed(self, agent: str) -> None:
        self.failed[agent] += 1

    def inflight(self, agent: str, delta: int) -> None:
        self.inflight_now[agent] += delta
        assert self.inflight_now[agent] >= 0


def config(
    url: str,
    name: str = "a",
    *,
    timeout_ms: int = 2000,
    max_attempts: int = 3,
    backoff_initial_ms: int = 50,
    backoff_max_ms: int = 2000,
    concurrency: int = 64,
) -> AgentConfig:
    return AgentConfig(
        name, (url,), timeout_ms, max_attempts, backoff_initial_ms, backoff_max_ms, concurrency
    )


def dispatcher(
    session: AgentClient,
    *agents: AgentConfig,
    observer: DispatchObserver | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Dispatcher:
    return Dispatcher(
        session,
        agents,
        observer=observer,
        sleep=sleep or Sleeps(),
        clock=clock,
        rng=lambda: 1.0,
    )


async def run(
    disp: Dispatcher, agents: list[AgentConfig], mode: Mode = "all", deadline_ms: int = 10_000
) -> list[AgentOutcome]:
    return await disp.dispatch(
        agents, mode, BODY, log_id=LOG_ID, traceparent=TRACEPARENT, deadline_ms=deadline_ms
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.asyncio
async def test_success_first_try(serve_agent: ServeAgent, session: AgentClient) -> None:
    """A 2xx on the first attempt is one request with the contract's headers and the body as is."""
    agent = await serve_agent(reply(200, {"answer": 42}))
    a = config(agent.url)
    [outcome] = await run(dispatcher(session, a), [a])
    assert orjson.loads(orjson.dumps(outcome)) == {
        "agent": "a",
        "ok": True,
        "status_code": 200,
        "attempts": 1,
        "latency_ms": outcome.latency_ms,
        "response": {"answer": 42},
        "error": None,
    }
    assert outcome.latency_ms >= 0
    [(headers, body)] = agent.seen
    assert body == BODY
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == LOG_ID
    assert headers["X-Router-Attempt"] == "1"
    assert headers["traceparent"] == TRACEPARENT
    assert "User-Agent" not in headers


@pytest.mark.asyncio
async def test_retries_5xx_then_succeeds(serve_agent: ServeAgent, session: AgentClient) -> None:
    """Two 5xx then a 2xx: three attempts, numbered, same key and body, backoff doubling."""
    agent = await serve_agent(reply(500), reply(502), reply(200, {"ok": 1}))
    a = config(agent.url, backoff_initial_ms=50)
    sleeps = Sleeps()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (True, 3, 200)
    assert outcome.response == {"ok": 1}
    assert agent.header("X-Router-Attempt") == ["1", "2", "3"]
    assert agent.header("Idempotency-Key") == [LOG_ID] * 3
    assert agent.header("traceparent") == [TRACEPARENT] * 3
    assert [body for _, body in agent.seen] == [BODY] * 3
    assert sleeps.delays == pytest.approx([0.05, 0.1])


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_4xx_is_not_retried(
    serve_agent: ServeAgent, session: AgentClient, status: int
) -> None:
    """A 4xx other than 429 fails the agent at once, with its reply kept."""
    agent = await serve_agent(reply(status, {"detail": "bad"}))
    a = config(agent.url)
    sleeps = Sleeps()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (False, 1, status)
    assert outcome.error == f"HTTP {status} (not retried)"
    assert outcome.response == {"detail": "bad"}
    assert len(agent.seen) == 1
    assert sleeps.delays == []


@pytest.mark.asyncio
async def test_redirect_is_not_followed(serve_agent: ServeAgent, session: AgentClient) -> None:
    """A 3xx is a failed delivery, neither followed nor retried."""
    agent = await serve_agent(reply(302, headers={"Location": "/handle"}))
    a = config(agent.url)
    [outcome] = await run(dispatcher(session, a), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (False, 1, 302)
    assert outcome.error == "HTTP 302 (not retried)"
    assert len(agent.seen) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(
    serve_agent: ServeAgent, session: AgentClient, status: int
) -> None:
    """A 429 or 503 with Retry-After waits exactly that long before the next attempt."""
    agent = await serve_agent(reply(status, headers={"Retry-After": "1"}), reply(200))
    a = config(agent.url, backoff_max_ms=2000)
    sleeps = Sleeps()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps), [a])
    assert (outcome.ok, outcome.attempts) == (True, 2)
    assert sleeps.delays == [1.0]


@pytest.mark.asyncio
async def test_retry_after_is_capped_by_backoff_max(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """A Retry-After longer than backoff_max_ms waits only backoff_max_ms."""
    agent = await serve_agent(reply(429, headers={"Retry-After": "30"}), reply(200))
    a = config(agent.url, backoff_max_ms=500)
    sleeps = Sleeps()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps), [a])
    assert outcome.ok
    assert sleeps.delays == [0.5]


@pytest.mark.asyncio
async def test_max_attempts_exhausted(serve_agent: ServeAgent, session: AgentClient) -> None:
    """An agent that keeps failing is tried max_attempts times and reported with its last error."""
    agent = await serve_agent(reply(500), reply(500), reply(503))
    a = config(agent.url, max_attempts=3)
    sleeps = Sleeps()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (False, 3, 503)
    assert outcome.error == "HTTP 503"
    assert len(agent.seen) == 3
    assert len(sleeps.delays) == 2


@pytest.mark.asyncio
async def test_attempt_timeout(serve_agent: ServeAgent, session: AgentClient) -> None:
    """An agent that never answers times each attempt out after timeout_ms and is retried."""
    agent = await serve_agent(hang)
    a = config(agent.url, timeout_ms=50, max_attempts=2)
    observer = RecordingObserver()
    [outcome] = await run(dispatcher(session, a, observer=observer), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (False, 2, None)
    assert outcome.error == "timeout after 50 ms"
    assert observer.attempts == [("a", "timeout"), ("a", "timeout")]


@pytest.mark.asyncio
async def test_deadline_stops_retries(serve_agent: ServeAgent, session: AgentClient) -> None:
    """No attempt starts past the deadline: retries stop when the next sleep would cross it."""
    agent = await serve_agent(reply(500))
    a = config(agent.url, max_attempts=10, backoff_initial_ms=1000, backoff_max_ms=1000)
    clock = FakeClock()
    sleeps = Sleeps(clock)
    disp = dispatcher(session, a, sleep=sleeps, clock=clock)
    [outcome] = await run(disp, [a], deadline_ms=2500)
    # Attempts at t=0, 1 and 2 s; a fourth would start at 3 s, past the 2.5 s deadline.
    assert outcome.attempts == 3
    assert sleeps.delays == [1.0, 1.0]
    assert outcome.error == "deadline exceeded after HTTP 500"
    assert outcome.status_code == 500


@pytest.mark.asyncio
async def test_deadline_bounds_the_attempt_timeout(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """An attempt gets only the time left to the deadline, not the agent's whole timeout."""
    agent = await serve_agent(hang)
    a = config(agent.url, timeout_ms=10_000)
    started = time.monotonic()
    [outcome] = await run(dispatcher(session, a), [a], deadline_ms=100)
    assert time.monotonic() - started < 5
    assert (outcome.ok, outcome.attempts) == (False, 1)
    assert outcome.error == "deadline exceeded"


@pytest.mark.asyncio
async def test_connection_refused_is_retried(session: AgentClient) -> None:
    """A closed port is a connection error, retried up to max_attempts."""
    port = closed_port()
    a = config(f"http://127.0.0.1:{port}/handle", max_attempts=3)
    sleeps = Sleeps()
    observer = RecordingObserver()
    [outcome] = await run(dispatcher(session, a, sleep=sleeps, observer=observer), [a])
    assert (outcome.ok, outcome.attempts, outcome.status_code) == (False, 3, None)
    assert outcome.error == f"connection refused: 127.0.0.1:{port}"
    assert len(sleeps.delays) == 2
    assert observer.attempts == [("a", "connection_error")] * 3


@pytest.mark.asyncio
async def test_dropped_connection_is_retried(serve_agent: ServeAgent, session: AgentClient) -> None:
    """A connection closed without an answer is retried on a fresh one."""
    agent = await serve_agent(drop, reply(200))
    a = config(agent.url)
    observer = RecordingObserver()
    [outcome] = await run(dispatcher(session, a, observer=observer), [a])
    assert (outcome.ok, outcome.attempts) == (True, 2)
    assert observer.attempts == [("a", "connection_error"), ("a", "ok")]


@pytest.mark.asyncio
async def test_all_mode_keeps_order_and_reports_partial_failure(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """`all` calls every agent and lists outcomes in the rule's order, whoever finished first."""
    slow = await serve_agent(reply(200, {"who": "slow"}, delay=0.1))
    bad = await serve_agent(reply(400))
    fast = await serve_agent(reply(200, {"who": "fast"}))
    agents = [config(slow.url, "slow"), config(bad.url, "bad"), config(fast.url, "fast")]
    outcomes = await run(dispatcher(session, *agents), agents, mode="all")
    assert [o.agent for o in outcomes] == ["slow", "bad", "fast"]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert [o.response for o in outcomes] == [{"who": "slow"}, {}, {"who": "fast"}]
    assert outcomes[1].error == "HTTP 400 (not retried)"


@pytest.mark.asyncio
async def test_first_success_cancels_the_others(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """`first_success` returns on the first 2xx; the agent still working is cancelled and told."""
    slow = await serve_agent(hang)
    fast = await serve_agent(reply(200, {"who": "fast"}, delay=0.02))
    agents = [config(slow.url, "slow", timeout_ms=10_000), config(fast.url, "fast")]
    observer = RecordingObserver()
    started = time.monotonic()
    outcomes = await run(dispatcher(session, *agents, observer=observer), agents, "first_success")
    assert time.monotonic() - started < 5
    assert [o.agent for o in outcomes] == ["slow", "fast"]
    slow_outcome, fast_outcome = outcomes
    assert (fast_outcome.ok, fast_outcome.response) == (True, {"who": "fast"})
    assert (slow_outcome.ok, slow_outcome.error, slow_outcome.attempts) == (False, "cancelled", 1)
    assert slow_outcome.status_code is None
    await asyncio.wait_for(slow.dropped.wait(), timeout=5)
    assert observer.failed == Counter()
    assert observer.inflight_now == Counter({"slow": 0, "fast": 0})


@pytest.mark.asyncio
async def test_first_success_outlasts_early_failures(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """An early non-retried failure does not end `first_success`; a later 2xx still wins."""
    bad = await serve_agent(reply(400))
    good = await serve_agent(reply(200, delay=0.05))
    agents = [config(bad.url, "bad"), config(good.url, "good")]
    outcomes = await run(dispatcher(session, *agents), agents, "first_success")
    assert [(o.ok, o.error) for o in outcomes] == [(False, "HTTP 400 (not retried)"), (True, None)]


@pytest.mark.asyncio
async def test_first_success_with_no_success(serve_agent: ServeAgent, session: AgentClient) -> None:
    """When every agent fails, each keeps its own failure and none is marked cancelled."""
    bad = await serve_agent(reply(404))
    worse = await serve_agent(reply(500))
    agents = [config(bad.url, "bad"), config(worse.url, "worse", max_attempts=2)]
    observer = RecordingObserver()
    outcomes = await run(dispatcher(session, *agents, observer=observer), agents, "first_success")
    assert [(o.ok, o.attempts, o.error) for o in outcomes] == [
        (False, 1, "HTTP 404 (not retried)"),
        (False, 2, "HTTP 500"),
    ]
    assert observer.failed == Counter({"bad": 1, "worse": 1})


@pytest.mark.asyncio
async def test_semaphore_bounds_inflight_requests(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """With concurrency=2, ten concurrent signals never put more than two requests in flight."""
    agent = await serve_agent(reply(200, delay=0.05))
    a = config(agent.url, concurrency=2)
    observer = RecordingObserver()
    disp = dispatcher(session, a, observer=observer)
    results = await asyncio.gather(*(run(disp, [a]) for _ in range(10)))
    assert all(outcome.ok for [outcome] in results)
    assert len(agent.seen) == 10
    assert agent.max_inflight == 2
    assert observer.inflight_now["a"] == 0


@pytest.mark.asyncio
async def test_deadline_bounds_the_wait_for_a_permit(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """A signal queued behind a full semaphore gives up at its deadline without sending anything."""
    agent = await serve_agent(hang)
    a = config(agent.url, concurrency=1, timeout_ms=10_000)
    disp = dispatcher(session, a)
    holder = asyncio.create_task(run(disp, [a]))
    while not agent.seen:
        await asyncio.sleep(0.005)
    [outcome] = await asyncio.wait_for(run(disp, [a], deadline_ms=50), timeout=5)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 0, "deadline exceeded")
    assert len(agent.seen) == 1


@pytest.mark.asyncio
async def test_observer_hooks(serve_agent: ServeAgent, session: AgentClient) -> None:
    """Hooks see every attempt, one retry per extra attempt, one failure per failed delivery."""
    flaky = await serve_agent(reply(500), reply(429), reply(200))
    down = await serve_agent(reply(503))
    refuses = await serve_agent(reply(400))
    agents = [
        config(flaky.url, "flaky"),
        config(down.url, "down", max_attempts=2),
        config(refuses.url, "refuses"),
    ]
    observer = RecordingObserver()
    outcomes = await run(dispatcher(session, *agents, observer=observer), agents)
    assert [o.attempts for o in outcomes] == [3, 2, 1]
    assert observer.retries == Counter({"flaky": 2, "down": 1})
    assert observer.failed == Counter({"down": 1, "refuses": 1})
    assert Counter(observer.attempts) == Counter(
        {
            ("flaky", "http_5xx"): 1,
            ("flaky", "http_429"): 1,
            ("flaky", "ok"): 1,
            ("down", "http_5xx"): 2,
            ("refuses", "http_4xx"): 1,
        }
    )
    assert set(observer.inflight_now.values()) == {0}


@pytest.mark.asyncio
async def test_cancelled_dispatch_releases_everything(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """Cancelling a dispatch mid-request propagates, frees the semaphore and the in-flight gauge."""
    agent = await serve_agent(hang, reply(200))
    a = config(agent.url, concurrency=1, timeout_ms=10_000)
    observer = RecordingObserver()
    disp = dispatcher(session, a, observer=observer)
    task = asyncio.create_task(run(disp, [a]))
    while not agent.seen:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert observer.inflight_now["a"] == 0
    assert observer.failed == Counter()
    # concurrency=1: this only gets through if the cancelled attempt gave its permit back.
    [outcome] = await asyncio.wait_for(run(disp, [a]), timeout=5)
    assert (outcome.ok, outcome.attempts) == (True, 1)


@pytest.mark.asyncio
async def test_cancel_during_retry_backoff(serve_agent: ServeAgent, session: AgentClient) -> None:
    """Cancellation while the retry loop sleeps propagates out of the loop untouched."""
    agent = await serve_agent(reply(500))
    a = config(agent.url, max_attempts=5)
    observer = RecordingObserver()
    slept: list[float] = []

    async def sleep_once_then_hang(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 1:
            await asyncio.Event().wait()

    disp = dispatcher(session, a, observer=observer, sleep=sleep_once_then_hang)
    task = asyncio.create_task(run(disp, [a], mode="all"))
    while len(slept) < 2:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(agent.seen) == 2
    assert observer.failed == Counter()
    assert observer.inflight_now["a"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("content_type", "raw", "expected"),
    [
        ("application/json", b'{"a": [1, 2]}', {"a": [1, 2]}),
        ("application/problem+json", b'{"title": "x"}', {"title": "x"}),
        ("application/json", b"[1, 2]", [1, 2]),
        ("application/json", b"not json", None),
        ("application/json", b"", None),
        ("text/plain", b'{"a": 1}', None),
    ],
)
async def test_reply_is_parsed_only_when_json(
    serve_agent: ServeAgent,
    session: AgentClient,
    content_type: str,
    raw: bytes,
    expected: Any,
) -> None:
    """The agent's reply is kept when declared JSON and valid, else None; never the raw bytes."""
    agent = await serve_agent(reply(200, raw=raw, content_type=content_type))
    a = config(agent.url)
    [outcome] = await run(dispatcher(session, a), [a])
    assert outcome.ok
    assert outcome.response == expected


@pytest.mark.asyncio
async def test_agents_unknown_at_start_are_dispatched(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    """An agent the dispatcher was not built with still gets its own state and is called."""
    agent = await serve_agent(reply(200))
    disp = dispatcher(session)
    a = config(agent.url, "late")
    assert [o.ok for o in await run(disp, [a])] == [True]
    assert await run(disp, []) == []


_TRACEPARENT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def test_traceparent_continues_a_valid_parent() -> None:
    """A valid caller traceparent keeps its trace id and flags and gets a new span id."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    forwarded, trace_id = new_traceparent(parent)
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert _TRACEPARENT_RE.fullmatch(forwarded)
    version, fwd_trace, span, flags = forwarded.split("-")
    assert (version, fwd_trace, flags) == ("00", trace_id, "00")
    assert span != "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "parent",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    ],
)
def test_traceparent_replaces_an_invalid_parent(parent: str | None) -> None:
    """Anything but a valid version-00 lowercase traceparent starts a new sampled trace."""
    forwarded, trace_id = new_traceparent(parent)
    assert _TRACEPARENT_RE.fullmatch(forwarded)
    assert forwarded.startswith(f"00-{trace_id}-")
    assert forwarded.endswith("-01")
    assert trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id != "0" * 32


def test_new_traces_are_distinct() -> None:
    """Two new traces never share a trace or span id."""
    (first, first_id), (second, second_id) = new_traceparent(None), new_traceparent(None)
    assert first_id != second_id
    assert first.split("-")[2] != second.split("-")[2]


# --- Standard Webhooks signatures ----------------------------------------------------------

SECRET_OLD = "whsec_" + base64.b64encode(b"the old secret, still accepted").decode()
SECRET_NEW = base64.b64encode(b"the new secret, rotated in").decode().rstrip("=")


@pytest.mark.asyncio
@pytest.mark.parametrize("secrets", [[SECRET_NEW], [SECRET_NEW, SECRET_OLD]])
async def test_signed_requests_verify_with_the_reference_library(
    serve_agent: ServeAgent, session: AgentClient, secrets: list[str]
) -> None:
    """Each secret's signature verifies with `standardwebhooks`; a retry is signed afresh."""
    agent = await serve_agent(reply(503), reply(200))
    keys = keys_from_env("SIGNING", {"SIGNING": " ".join(secrets)})
    a = dataclasses.replace(config(agent.url), signing_secrets_env="SIGNING", signing_keys=keys)
    [outcome] = await run(dispatcher(session, a), [a])
    assert outcome.ok and outcome.attempts == 2
    for headers, body in agent.seen:
        assert headers["webhook-id"] == LOG_ID
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert len(headers["webhook-signature"].split(" ")) == len(secrets)
        for secret in secrets:  # every secret a receiver may hold verifies on its own
            assert standardwebhooks.Webhook(secret).verify(body, lowered(headers)) == orjson.loads(
                BODY
            )
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(
                SECRET_OLD if secrets == [SECRET_NEW] else "whsec_AAAA"
            ).verify(body, lowered(headers))
        tampered = body.replace(b"u1", b"u2")
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secrets[0]).verify(tampered, lowered(headers))


@pytest.mark.asyncio
async def test_unsigned_agents_get_no_webhook_headers(
    serve_agent: ServeAgent, session: AgentClient
) -> None:
    agent = await serve_agent(reply(200))
    a = config(agent.url)
    await run(dispatcher(session, a), [a])
    [(headers, _)] = agent.seen
    assert not [h for h in headers if h.lower().startswith("webhook-")]


@pytest.mark.asyncio
async def test_a_router_signs_from_its_table_and_never_shows_the_secrets(
    serve_agent: ServeAgent,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: the table names the variable, the router signs each attempt (verified with
    `standardwebhooks` for both secrets), and neither secret reaches a row, an answer or a
    metric, although the delivery failed and was dead-lettered with its error."""
    agent = await serve_agent(reply(503))
    monkeypatch.setenv("AGENT_SECRETS", f"{SECRET_NEW} {SECRET_OLD}")
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f"[defaults]\nmax_attempts = 2\nbackoff_initial_ms = 1\nbackoff_max_ms = 2\n"
        f'[agents.signed]\nurl = "{agent.url}"\nsigning_secrets_env = "AGENT_SECRETS"\n'
        f'[[rules]]\nkind = "general"\ndefault = true\nagents = ["signed"]\n'
    )
    async with start_router(database_url, routes) as router:
        status, answer, _ = await router.route({"sender_id": "u1", "payload": {"m": "hé"}})
        shown = [
            orjson.dumps(answer),
            orjson.dumps(await router.get("/logs")),
            orjson.dumps(await router.get("/dlq")),
            (await router.get("/metrics", key=None))[1].encode(),
            orjson.dumps(router.query("SELECT * FROM signal_log")[0], default=str),
            orjson.dumps(router.query("SELECT * FROM dlq")[0], default=str),
        ]
    assert status == 202 and answer["status"] == "dead_lettered"
    assert len(agent.seen) == 2
    for headers, body in agent.seen:
        assert headers["webhook-id"] == answer["log_id"]
        for secret in (SECRET_NEW, SECRET_OLD):
            assert (
                standardwebhooks.Webhook(secret).verify(body, lowered(headers))["log_id"]
                == answer["log_id"]
            )
    for text in shown:
        for secret in (SECRET_NEW, SECRET_OLD):
            assert secret.removeprefix("whsec_").encode() not in text
        assert b"the old secret" not in text and b"the new secret" not in text
