"""The agent client: HTTP/1.1 POSTs over pooled keep-alive connections, parsed by httptools.

What the dispatcher needs is narrow (router/agent_client.py): POST a body, read the whole
answer, never follow a redirect, keep connections alive but drop idle ones before the
agent's server does, abort on timeout or cancellation. aiohttp spends ~70 µs of CPU per POST
on this machine doing that and far more (cookies, redirects, multipart, tracing hooks);
this client, one asyncio.Protocol per connection with httptools (uvicorn's C parser) reading
the answers, spends ~25 µs (docs/PERFORMANCE.md, "The agent client").
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from router.agent_client import KEEPALIVE_S, AgentConnectionError, AgentReply, clip

__all__ = ["Http11Client"]

# What aiohttp reported for an answer without a Content-Type.
_DEFAULT_TYPE = "application/octet-stream"
# An answer larger than this fails the attempt instead of filling the router's memory.
MAX_REPLY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Target:
    """One agent URL, parsed once: where to connect and the request's first lines."""

    key: tuple[str, int, bool]
    host: str
    port: int
    tls: bool
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: <host>\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[AgentReply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._content_type = b""
        self._retry_after: bytes | None = None
        # Set once headers are in: an answer with neither length nor chunking ends at EOF.
        self._until_eof = False
        self._framed = False

    def request(self, data: bytes, timeout_s: float) -> asyncio.Future[AgentReply]:
        """Send one request; the future gets its whole answer, or TimeoutError after
        `timeout_s` (one loop timer: asyncio.timeout's bookkeeping costs more per call)."""
        assert self.transport is not None
        self.reusable = False
        loop = self._loop
        self._waiter = waiter = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._time_out)
        self.transport.write(data)
        return waiter

    def _time_out(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(f"connection error: invalid HTTP answer: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if exc is None and self._until_eof:
            self._complete()  # an HTTP/1.0-style answer: its body is all that came before EOF
        elif exc is None:
            self._fail("connection error: server disconnected")
        else:
            self._fail(clip(f"connection error: {type(exc).__name__}: {exc}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._chunks = []
        self._size = 0
        self._content_type = b""
        self._retry_after = None
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self._content_type = value
        elif name == b"retry-after":
            self._retry_after = value
        elif name in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._until_eof = not self._framed

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_REPLY_BYTES:
            self._fail(f"connection error: answer larger than {MAX_REPLY_BYTES} bytes")
            self.close()
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._until_eof = False
        self.reusable = self._parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        mime = self._content_type.split(b";", 1)[0].strip().lower()
        retry_after = self._retry_after if status in (429, 503) else None
        waiter.set_result(
            AgentReply(
                status,
                mime.decode("latin-1") if mime else _DEFAULT_TYPE,
                b"".join(self._chunks),
                retry_after.decode("latin-1") if retry_after is not None else None,
            )
        )

    def _fail(self, message: str) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        if waiter is not None and not waiter.done():
            waiter.set_exception(AgentConnectionError(message))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Http11Client:
    """The process's agent client; concurrency is bounded by each agent's semaphore, so the
    pool keeps as many idle connections per agent as were ever in use at once."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: how https agents are verified (default: the system's CAs)."""
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, int, bool], collections.deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> AgentReply:
        """One POST; the whole answer read. The connection is closed on a timeout, a
        cancellation or a failure (the agent sees the request abandoned), else kept."""
        target = self._targets.get(url) or self._target(url)
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        # One CR and one LF per header line: anything else would smuggle a header or a request.
        if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
            raise ValueError("a header name or value holds a line break")
        data = b"%sContent-Length: %d\r\n%s\r\n%s" % (
            target.head,
            len(body),
            lines.encode("latin-1"),
            body,
        )
        loop = self._loop or self._bind_loop()
        deadline = loop.time() + timeout_s
        conn = self._reuse(target.key, loop)
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn = await self._connect(target)
        try:
            reply = await conn.request(data, deadline - loop.time())
        except BaseException:
            self._discard(conn)
            raise
        if conn.reusable and not conn.closed:
            conn.idle_since = loop.time()
            self._idle.setdefault(target.key, collections.deque()).append(conn)
        else:
            self._discard(conn)
        return reply

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() syscall.
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _reuse(
        self, key: tuple[str, int, bool], loop: asyncio.AbstractEventLoop
    ) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        expired = loop.time() - KEEPALIVE_S
        # The oldest idle ones expire first; the newest is the one most surely still open.
        while idle and idle[0].idle_since < expired:
            self._discard(idle.popleft())
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            self._discard(conn)
        return None

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: Any = None
        if target.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            _, conn = await loop.create_connection(_Connection, target.host, target.port, ssl=tls)
        except TimeoutError:
            raise
        except ConnectionRefusedError:
            raise AgentConnectionError(f"connection refused: {target.host}:{target.port}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise AgentConnectionError(
                clip(f"connection error: {target.host}:{target.port}: {reason}")
            ) from None
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default_port = port == (443 if tls else 80)
        host_header = parts.hostname if default_port else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # an IPv6 literal keeps its brackets in Host
            host_header = f"[{parts.hostname}]" + ("" if default_port else f":{port}")
        head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
        target = _Target((parts.hostname, port, tls), parts.hostname, port, tls, head)
        if len(self._targets) < 4096:  # the table's URLs; anything beyond is parsed per call
            self._targets[url] = target
        return target
