"""uvicorn's own answers (the app failed, over limit_concurrency, not HTTP) in the contract's
JSON shape, with the protocol class `router serve` gives uvicorn, served in this event loop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from router.http_protocol import HTTP_PROTOCOL, ROUTE_PATH_STATE

pytestmark = pytest.mark.asyncio

Scope = dict[str, Any]


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def failing_app(scope: Scope, receive: Any, send: Any) -> None:
    raise RuntimeError("a bug before any response")


async def silent_app(scope: Scope, receive: Any, send: Any) -> None:
    return None


@asynccontextmanager
async def started(
    app: Any, **config: Any
) -> AsyncIterator[tuple[uvicorn.Server, asyncio.Task[None], int]]:
    """uvicorn with the router's protocol on a free loopback port: the server, the task
    serving it, the port; stopped on the way out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config.setdefault("lifespan", "off")
    config.setdefault("access_log", False)  # as `router serve` runs it
    cfg = uvicorn.Config(app, http=HTTP_PROTOCOL, log_level="critical", **config)
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server, task, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """As `started`, yielding only the port."""
    async with started(app, **config) as (_, _, port):
        yield port


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return data


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


GET = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("app", [failing_app, silent_app])
async def test_app_that_starts_no_response_gets_json_500(app: Any) -> None:
    """uvicorn's fallback 500 (the app raised, or returned without answering) is JSON."""
    async with serving(app) as port:
        status, headers, body = parse(await exchange(port, GET))
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["error"]["code"] == "internal_error"


async def test_over_limit_concurrency_gets_json_503_with_retry_after() -> None:
    """uvicorn's own load shedding answers like the router's: 503 overloaded, Retry-After."""
    async with serving(ok_app, limit_concurrency=1) as port:
        status, headers, body = parse(await exchange(port, GET))
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "overloaded"


async def test_not_http_gets_json_400_naming_the_fault() -> None:
    """A NUL in a header value: 400 bad_request with the parser's reason, then the close."""
    async with serving(ok_app) as port:
        status, headers, body = parse(
            await exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n")
        )
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert (error["code"], error["field"]) == ("bad_request", None)
    assert "header value" in error["message"].lower()


async def test_pipelined_requests_are_still_answered_in_order() -> None:
    """Requests queued on one connection start through the same hook and are all answered."""
    async with serving(ok_app) as port:
        data = await exchange(
            port,
            b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"/one") < data.index(b"/two") < data.index(b"/three")


async def slow_body_app(scope: Scope, receive: Any, send: Any) -> None:
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await asyncio.sleep(0.2)  # long enough for a head written on its own to arrive alone
    await send({"type": "http.response.body", "body": body})


async def test_head_and_body_leave_in_one_write() -> None:
    """The status line and headers wait for the body and go out with it: the client's first
    read holds the whole answer (uvicorn alone sends the head 0.2 s ahead here). A HEAD
    answer, which has no body to wait for, still gets its head."""
    async with serving(slow_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /route HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        first = await asyncio.wait_for(reader.read(65536), timeout=5)
        status, _, body = parse(first)
        assert (status, body) == (200, b'{"ok": true}'), first
        writer.write(b"HEAD /route HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n"), head


class FakeRoutePath:
    """Stands in for RoutePath where the protocol serves POST /route itself: records what it
    was handed, answers with the body's length, holds answers while `held` is clear."""

    max_body_bytes = 64

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[bytes, bytes]], bytes]] = []
        self.replied: list[int] = []
        self.held = asyncio.Event()
        self.held.set()
        self.started = asyncio.Event()

    async def answer(
        self, headers: list[tuple[bytes, bytes]], body: bytes, started: float, reply: Any
    ) -> None:
        self.calls.append((headers, body))
        self.started.set()
        await self.held.wait()
        answer = json.dumps({"served_by": "protocol", "length": len(body)}).encode()
        await reply(200, answer, [(b"idempotent-replayed", b"true")])
        self.replied.append(len(body))


def app_with_route_path(route: FakeRoutePath) -> Any:
    """An ASGI app whose lifespan puts `route` in the state, answering other requests itself."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"][ROUTE_PATH_STATE] = route
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = json.dumps({"served_by": "asgi", "length": len(body)}).encode()
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def route_request(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    head = b"POST /route HTTP/" + version + b"\r\nHost: t\r\nX-API-Key: k\r\n"
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_plain_post_route_is_served_by_the_protocol_in_the_contracts_shape() -> None:
    """Headers and body go to the route path as they arrived; the answer carries uvicorn's
    default headers, the route's own, its JSON type and exact length, on a kept connection."""
    route = FakeRoutePath()
    async with serving(app_with_route_path(route), lifespan="on") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for body in (b'{"a": 1}', b'{"b": 22}'):
            writer.write(route_request(body))
            answers.append(parse(await asyncio.wait_for(reader.read(65536), timeout=5)))
        writer.write(route_request(b"{}", b"Connection: close\r\n"))
        last = parse(await asyncio.wait_for(reader.read(), timeout=5))
        writer.close()
    assert [body for _, body in route.calls] == [b'{"a": 1}', b'{"b": 22}', b"{}"]
    assert (b"x-api-key", b"k") in route.calls[0][0]
    for (status, headers, body), length in zip([*answers, last], (8, 9, 2), strict=True):
        assert status == 200
        assert json.loads(body) == {"served_by": "protocol", "length": length}
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        assert headers["idempotent-replayed"] == "true"
        assert "date" in headers and "server" in headers
    assert "connection" not in answers[0][1]
    assert last[1]["connection"] == "close"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(route_request(b"x" * 65), id="over the cap"),
        pytest.param(route_request(b"{}", version=b"1.0"), id="HTTP/1.0"),
        pytest.param(route_request(b"{}", b"Expect: 100-continue\r\n"), id="100-continue"),
        pytest.param(
            b"POST /route HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(route_request(b"{}").replace(b"/route", b"/route?x=1"), id="a query"),
        pytest.param(route_request(b"{}").replace(b"POST", b"PUT"), id="another method"),
    ],
)
async def test_what_the_plain_case_does_not_cover_takes_the_asgi_path(
    request_bytes: bytes,
) -> None:
    """Each of these reaches the app through uvicorn, which handles every case."""
    route = FakeRoutePath()
    async with serving(app_with_route_path(route), lifespan="on") as port:
        data = await exchange(port, request_bytes.replace(b"t\r\n", b"t\r\nConnection: close\r\n"))
    status, _, body = parse(data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
    assert (status, json.loads(body)["served_by"]) == (200, "asgi")
    assert route.calls == []


async def test_a_request_pipelined_behind_an_unanswered_one_is_answered_after_it() -> None:
    route = FakeRoutePath()
    route.held.clear()
    async with serving(app_with_route_path(route), lifespan="on") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(route_request(b"{1}") + route_request(b"{22}", b"Connection: close\r\n"))
        await asyncio.wait_for(route.started.wait(), timeout=5)
        await asyncio.sleep(0.1)
        route.held.set()
        data = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert json.loads(first.partition(b"\r\n\r\n")[2]) == {"served_by": "protocol", "length": 3}
    assert json.loads(second.partition(b"\r\n\r\n")[2]) == {"served_by": "asgi", "length": 4}


async def test_a_graceful_shutdown_waits_for_the_answer_and_then_closes() -> None:
    route = FakeRoutePath()
    route.held.clear()
    async with started(app_with_route_path(route), lifespan="on") as (server, task, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(route_request(b"{}"))
        await asyncio.wait_for(route.started.wait(), timeout=5)
        server.should_exit = True
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the answer in flight
        route.held.set()
        data = await asyncio.wait_for(reader.read(), timeout=5)  # then EOF: the server closed
        await asyncio.wait_for(task, timeout=5)
        writer.close()
    status, headers, body = parse(data)
    assert (status, headers["connection"]) == (200, "close")
    assert json.loads(body)["served_by"] == "protocol"


async def test_a_shutdown_past_its_grace_cancels_the_answer_which_ends_in_a_json_500() -> None:
    """uvicorn cancels its tasks when the grace runs out: the protocol's own is one of them,
    and a cancellation that escapes the route path still answers, in the contract's shape."""
    route = FakeRoutePath()
    route.held.clear()  # never released
    config = {"lifespan": "on", "timeout_graceful_shutdown": 0.3}
    async with started(app_with_route_path(route), **config) as (server, task, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(route_request(b"{}"))
        await asyncio.wait_for(route.started.wait(), timeout=5)
        server.should_exit = True
        data = await asyncio.wait_for(reader.read(), timeout=5)
        await asyncio.wait_for(task, timeout=5)
        writer.close()
    status, headers, body = parse(data)
    assert (status, headers["connection"]) == (500, "close")
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert route.replied == []


async def test_a_client_gone_before_its_answer_gets_nothing_written_and_no_error() -> None:
    route = FakeRoutePath()
    route.held.clear()
    async with serving(app_with_route_path(route), lifespan="on") as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(route_request(b"{}"))
        await asyncio.wait_for(route.started.wait(), timeout=5)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.1)
        route.held.set()
        for _ in range(100):
            if route.replied:
                break
            await asyncio.sleep(0.01)
    assert route.replied == [2]  # reply() returned: nothing raised into the route path
