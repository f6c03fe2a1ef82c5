"""uvicorn's httptools protocol, with POST /route served by the protocol itself and the
answers uvicorn writes itself in the contract's shape.

POST /route skips ASGI: once its body has arrived, the protocol hands the headers and body to
the route path (found in the lifespan state under `ROUTE_PATH_STATE`) and writes its answer
in one write. uvicorn's per-request scope, ASGI messages, receive and send coroutines and
middleware cost the router ~25 µs of its ~175 per signal here. A request the plain case does
not cover (a body too large, chunked or expecting 100-continue; HTTP/1.0; one pipelined behind
an answer not yet written; an upgrade; a write buffer that is full) takes uvicorn's ASGI path
to the same route path, which handles every case.

uvicorn answers a few requests without the app: 400 to what is not HTTP (a NUL in a header, a
garbage request line), 500 when the app fails before starting a response, 503 over
`limit_concurrency`. Its bodies are plain text; these are `{"error": {...}}` JSON like every
other answer. (A WebSocket upgrade is not one of them: `router serve` runs uvicorn with
ws="none", so the app answers it as HTTP.) `router serve` passes this class to uvicorn by
import path (`HTTP_PROTOCOL`), so each worker imports it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from router.api.errors import error_body

if TYPE_CHECKING:
    from uvicorn._types import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGISendCallable,
        ASGISendEvent,
        Scope,
    )

    from router.api.route import RoutePath

HTTP_PROTOCOL = "router.http_protocol:JsonHttpToolsProtocol"
# The lifespan state's key for the RoutePath the protocol serves POST /route with.
ROUTE_PATH_STATE = "router.route_path"

_INTERNAL_ERROR = error_body("internal_error", "the router failed to handle this request")
_OVERLOADED = error_body("overloaded", "the router is shedding load; nothing was dispatched")


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


class _NoWaiter:
    """The message event of a request nothing waits on (uvicorn sets it when the client goes)."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_WAITER = _NoWaiter()


class _RouteCycle:
    """One POST /route served by the protocol: what uvicorn's connection handling reads of a
    request/response cycle (response_complete, keep_alive, disconnected, message_event), the
    body as it arrives, and the answer's single write."""

    __slots__ = ("_protocol", "body", "disconnected", "keep_alive", "response_complete")

    message_event = _NO_WAITER

    def __init__(self, protocol: JsonHttpToolsProtocol, keep_alive: bool) -> None:
        self._protocol = protocol
        self.keep_alive = keep_alive  # uvicorn's shutdown clears it: the answer then closes
        self.response_complete = False
        self.disconnected = False
        self.body = b""

    async def reply(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        """Write the answer (status line, uvicorn's default headers, the route's) in one write."""
        protocol = self._protocol
        transport = protocol.transport
        # Gone meanwhile: uvicorn marks only the connection's latest cycle disconnected, and a
        # pipelined request behind this one may be that cycle.
        if self.disconnected or transport.is_closing():
            return
        content = [STATUS_LINE[status]]
        for name, value in protocol.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        for name, value in extra:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.extend([b"\r\n", body])
        transport.write(b"".join(content))
        self.response_complete = True
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()


class JsonHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol serving POST /route itself; its own 400, 500 and 503 answers are the
    contract's JSON errors."""

    _route_cycle: _RouteCycle | None = None

    def on_headers_complete(self) -> None:
        self._route_cycle = None
        route = self.app_state.get(ROUTE_PATH_STATE)
        if route is not None and self.url == b"/route" and self._plain_route_request(route):
            # Read by uvicorn's connection handling (shutdown, connection_lost, pipelining).
            self.cycle = self._route_cycle = _RouteCycle(  # type: ignore[assignment]
                self, self.parser.should_keep_alive()
            )
            return
        super().on_headers_complete()

    def _plain_route_request(self, route: RoutePath) -> bool:
        """A POST with a Content-Length within the cap and nothing that needs uvicorn's
        handling: no 100-continue, HTTP/1.1, no answer pending, no upgrade, no backlog."""
        parser = self.parser
        if (
            parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or self.expect_100_continue
            or parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.flow.write_paused
            or self.limit_concurrency is not None
            or self.access_log
        ):
            return False
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return False
        return length is not None and length.isdigit() and int(length) <= route.max_body_bytes

    def on_body(self, body: bytes) -> None:
        cycle = self._route_cycle
        if cycle is None:
            super().on_body(body)
        else:  # at most the cap (its Content-Length), and nothing reads it before it is whole
            cycle.body += body

    def on_message_complete(self) -> None:
        cycle = self._route_cycle
        if cycle is None:
            super().on_message_complete()
            return
        self._route_cycle = None
        route: RoutePath = self.app_state[ROUTE_PATH_STATE]
        # One of uvicorn's tasks: the shutdown waits for it, and cancels it past its grace.
        task = self.loop.create_task(self._serve_route(route, cycle, self.headers))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve_route(
        self, route: RoutePath, cycle: _RouteCycle, headers: list[tuple[bytes, bytes]]
    ) -> None:
        try:
            await route.answer(headers, cycle.body, time.perf_counter(), cycle.reply)
        except BaseException:
            # answer() never raises; a cancellation outside its routing would land here.
            if not cycle.response_complete and not cycle.disconnected:
                cycle.keep_alive = False
                await cycle.reply(500, _INTERNAL_ERROR, [])
            raise

    def send_400_response(self, msg: str) -> None:
        # Called from data_received's `except httptools.HttpParserError`: name what was wrong.
        exc = sys.exc_info()[1]
        reason = str(exc) if isinstance(exc, httptools.HttpParserError) and str(exc) else msg
        body = error_body("bad_request", f"the request is not valid HTTP/1.1: {reason[:200]}")
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        for name, value in _json_headers(body):
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn runs with ws="none": its second warning (install a WebSocket library) would
        # mislead; the request is answered as plain HTTP.
        self.logger.warning("Unsupported upgrade request: answered as plain HTTP.")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # Every request (pipelined ones too) starts here, with the app uvicorn chose for it.
        # The cycle's class is only swapped for one whose fallback 500 is JSON: uvicorn builds
        # RequestResponseCycle itself, and nothing has run on this one yet.
        cycle.__class__ = _JsonResponseCycle
        if app is service_unavailable:
            app = _overloaded
        super()._start_asgi_task(cycle, app)


class _HeldWrites:
    """The transport as uvicorn sees it while writing a status line and headers: it keeps
    them, to go out with the first piece of body in one write."""

    __slots__ = ("_transport", "held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.held: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.held.append(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Prefixed(_HeldWrites):
    """The transport while uvicorn writes the first piece of body: what was held goes first."""

    def write(self, data: bytes) -> None:
        held, self.held = self.held, []
        self._transport.write(b"".join([*held, data]))


class _JsonResponseCycle(RequestResponseCycle):
    # uvicorn writes the head and the body of an answer with two transport.write calls: two
    # send() syscalls and two TCP segments, each waking the client. Every router answer is a
    # start message then one body, so the head is held and written with the body: one each.
    _head: tuple[bytes, ...] = ()

    async def send(self, message: ASGISendEvent) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.scope["method"] != "HEAD":
            real = self.transport
            holder = _HeldWrites(real)
            self.transport = cast(asyncio.Transport, holder)
            try:
                await super().send(message)
            finally:
                self.transport = real
            self._head = tuple(holder.held)
            return
        if self._head and kind == "http.response.body":
            real = self.transport
            prefixed = _Prefixed(real)
            prefixed.held, self._head = list(self._head), ()
            self.transport = cast(asyncio.Transport, prefixed)
            try:
                await super().send(message)
            finally:
                self.transport = real
            if prefixed.held:  # uvicorn wrote no body (it refused the message): the head anyway
                real.write(b"".join(prefixed.held))
            return
        await super().send(message)

    async def send_500_response(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": _json_headers(_INTERNAL_ERROR),
            }
        )
        await self.send({"type": "http.response.body", "body": _INTERNAL_ERROR, "more_body": False})


async def _overloaded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """uvicorn's answer over `limit_concurrency`, as the router's own load shedding answers."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [*_json_headers(_OVERLOADED), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": _OVERLOADED, "more_body": False})
