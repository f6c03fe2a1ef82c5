"""The agent client against raw loopback servers that script every byte of their answers."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from router import http11_client
from router.agent_client import AgentConnectionError
from router.http11_client import Http11Client
from tests.support import free_port

pytestmark = pytest.mark.asyncio

JSON = {"Content-Type": "application/json", "Idempotency-Key": "sig-1"}
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


@dataclass
class Request:
    head: bytes
    body: bytes
    reader: asyncio.StreamReader


@dataclass
class Server:
    """A loopback TCP server: each request is read whole, then `answer` writes what it likes."""

    answer: Callable[[Request, asyncio.StreamWriter], Awaitable[None]]
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    # Set when a connection's peer (the client) closed it.
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/handle"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = Request(head, await reader.readexactly(length), reader)
                self.requests.append(request)
                await self.answer(request, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


ServeFn = Callable[[Callable[[Request, asyncio.StreamWriter], Awaitable[None]]], Awaitable[Server]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[ServeFn]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[Request, asyncio.StreamWriter], Awaitable[None]]) -> Server:
        server = Server(answer)
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return server

    yield start
    for srv in servers:
        srv.close()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Http11Client]:
    c = Http11Client()
    yield c
    await c.close()


def answering(raw: bytes) -> Callable[[Request, asyncio.StreamWriter], Awaitable[None]]:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return answer


async def test_keep_alive_reuses_one_connection(serve: ServeFn, client: Http11Client) -> None:
    """Sequential POSTs share one connection; each request is well formed."""
    server = await serve(answering(OK))
    for _ in range(5):
        reply = await client.post(server.url, b'{"a": 1}', JSON, 2.0)
        assert (reply.status, reply.content_type, reply.body) == (
            200,
            "application/json",
            b'{"ok": true}',
        )
    assert server.connections == 1
    head = server.requests[0].head.decode()
    assert head.startswith("POST /handle HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Content-Length: 8\r\n" in head
    assert "Idempotency-Key: sig-1\r\n" in head and server.requests[0].body == b'{"a": 1}'


async def test_idle_connections_expire_before_the_servers_timeout(
    serve: ServeFn, client: Http11Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle longer than KEEPALIVE_S is closed, not reused."""
    monkeypatch.setattr(http11_client, "KEEPALIVE_S", 0.2)
    server = await serve(answering(OK))
    await client.post(server.url, b"{}", JSON, 2.0)
    await asyncio.sleep(0.3)
    await client.post(server.url, b"{}", JSON, 2.0)
    assert server.connections == 2
    await asyncio.wait_for(server.closed_by_client.wait(), 2)


async def test_connection_close_and_a_server_closed_idle_connection(
    serve: ServeFn, client: Http11Client
) -> None:
    """`Connection: close` is honoured, and a connection the server closed while idle is
    never used again: the next POST opens a new one and succeeds."""
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(closing)
        await writer.drain()
        writer.close()

    server = await serve(answer)
    for _ in range(3):
        assert (await client.post(server.url, b"{}", JSON, 2.0)).status == 200
        await asyncio.sleep(0.05)
    assert server.connections == 3


async def test_chunked_and_read_until_close_bodies(serve: ServeFn, client: Http11Client) -> None:
    """A chunked answer is reassembled (its media type without parameters); an HTTP/1.0
    answer with no length ends at EOF."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: Application/JSON; charset=utf-8\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
    )
    server = await serve(answering(chunked))
    reply = await client.post(server.url, b"{}", JSON, 2.0)
    assert (reply.content_type, reply.body) == ("application/json", b'{"a": 1}')

    async def until_close(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 201 Created\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    eof = await serve(until_close)
    reply = await client.post(eof.url, b"{}", JSON, 2.0)
    assert (reply.status, reply.content_type, reply.body) == (
        201,
        "application/octet-stream",
        b"all of it",
    )


async def test_redirect_and_retry_after_are_the_agents_answer(
    serve: ServeFn, client: Http11Client
) -> None:
    """A 302 is returned, not followed; Retry-After is read on 429 and 503 only."""
    redirect = await serve(
        answering(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n"
        )
    )
    assert (await client.post(redirect.url, b"{}", JSON, 2.0)).status == 302
    assert len(redirect.requests) == 1
    for status, expected in ((429, "7"), (503, "7"), (500, None)):
        server = await serve(
            answering(
                f"HTTP/1.1 {status} X\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n".encode()
            )
        )
        assert (await client.post(server.url, b"{}", JSON, 2.0)).retry_after == expected


async def test_timeout_and_cancellation_abort_the_request(
    serve: ServeFn, client: Http11Client
) -> None:
    """A request past its timeout raises TimeoutError and a cancelled one CancelledError; in
    both the connection is closed, so the agent sees the request abandoned."""

    async def never(request: Request, writer: asyncio.StreamWriter) -> None:
        # No answer; what comes next is the client's EOF (read() returns b"" then).
        assert await request.reader.read() == b""
        raise ConnectionError("closed by the client")

    server = await serve(never)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await client.post(server.url, b"{}", JSON, 0.2)
    assert asyncio.get_running_loop().time() - started < 1.0

    loser = await serve(never)
    task = asyncio.create_task(client.post(loser.url, b"{}", JSON, 10.0))
    while not loser.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The server's read of a next request hits EOF: the client closed the connection.
    await asyncio.wait_for(loser.closed_by_client.wait(), 2)


async def test_transport_failures_are_described(serve: ServeFn, client: Http11Client) -> None:
    """Refused, dropped mid-answer, and not HTTP: AgentConnectionError, log-safe messages."""
    port = free_port()
    with pytest.raises(AgentConnectionError, match=f"^connection refused: 127.0.0.1:{port}$"):
        await client.post(f"http://127.0.0.1:{port}/x", b"{}", JSON, 2.0)

    async def drop(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"par')
        await writer.drain()
        writer.close()

    dropped = await serve(drop)
    with pytest.raises(AgentConnectionError, match=r"^connection error: server disconnected$"):
        await client.post(dropped.url, b"{}", JSON, 2.0)
    garbage = await serve(answering(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(AgentConnectionError, match=r"^connection error: invalid HTTP answer"):
        await client.post(garbage.url, b"{}", JSON, 2.0)
    with pytest.raises(AgentConnectionError, match=r"^connection error: no-such-host\.invalid:80"):
        await client.post("http://no-such-host.invalid/x", b"{}", JSON, 2.0)


async def test_an_oversized_answer_fails_the_attempt(
    serve: ServeFn, client: Http11Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http11_client, "MAX_REPLY_BYTES", 1000)
    server = await serve(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    )
    with pytest.raises(AgentConnectionError, match="answer larger than 1000 bytes"):
        await client.post(server.url, b"{}", JSON, 2.0)


async def test_bad_headers_are_refused_before_anything_is_sent(
    serve: ServeFn, client: Http11Client
) -> None:
    """A line break in a header would smuggle a header or a whole request: ValueError."""
    server = await serve(answering(OK))
    for headers in ({"X-A": "1\r\nX-Injected: 1"}, {"X-A\n": "1"}, {"X-A": "1\r"}):
        with pytest.raises(ValueError, match="line break"):
            await client.post(server.url, b"{}", headers, 2.0)
    assert server.connections == 0


async def test_a_body_at_the_cap_arrives_whole(serve: ServeFn, client: Http11Client) -> None:
    """MAX_BODY_BYTES (1 MiB) of body, sent in one write, arrives byte for byte."""
    server = await serve(answering(OK))
    body = bytes(range(256)) * 4096
    assert (await client.post(server.url, body, JSON, 5.0)).status == 200
    assert server.requests[0].body == body


async def test_https_agents(tmp_path: Path) -> None:
    """An https URL is served over TLS, verified against the CA the client is given."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = Server(answering(OK))
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_tls)
    port = srv.sockets[0].getsockname()[1]
    trusting = Http11Client(tls=ssl.create_default_context(cafile=str(cert)))
    untrusting = Http11Client()
    try:
        for _ in range(2):
            reply = await trusting.post(f"https://127.0.0.1:{port}/handle", b"{}", JSON, 5.0)
            assert reply.body == b'{"ok": true}'
        assert server.connections == 1
        with pytest.raises(AgentConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post(f"https://127.0.0.1:{port}/handle", b"{}", JSON, 5.0)
    finally:
        await trusting.close()
        await untrusting.close()
        srv.close()
