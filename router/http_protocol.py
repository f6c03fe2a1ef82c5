"""uvicorn's httptools protocol, with the answers uvicorn writes itself in the contract's shape.

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

HTTP_PROTOCOL = "router.http_protocol:JsonHttpToolsProtocol"

_INTERNAL_ERROR = error_body("internal_error", "the router failed to handle this request")
_OVERLOADED = error_body("overloaded", "the router is shedding load; nothing was dispatched")


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


class JsonHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose own 400, 500 and 503 answers are the contract's JSON errors."""

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
