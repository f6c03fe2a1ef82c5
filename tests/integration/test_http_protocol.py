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

from router.http_protocol import HTTP_PROTOCOL

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
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """uvicorn with the router's protocol on a free loopback port; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    cfg = uvicorn.Config(app, http=HTTP_PROTOCOL, lifespan="off", log_level="critical", **config)
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


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
