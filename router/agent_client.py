"""The HTTP client of agent calls, behind one small interface.

The dispatcher needs little of a client: POST a body with headers under a timeout, never
follow a redirect, keep connections alive (closing idle ones before the agent's server does),
abort a request whose task is cancelled (a first_success loser), and say whether it failed by
timeout, by transport (described without secrets) or by a request it could not build. aiohttp
does all of it. pyreqwest was evaluated behind this interface and not kept: cheaper per POST
alone, but costlier in the router, and it does not abort a cancelled request
(docs/PERFORMANCE.md, "The agent client").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

import aiohttp
from yarl import URL

__all__ = ["AgentClient", "AgentConnectionError", "AgentReply", "AiohttpClient", "clip"]

# Below the 5 s idle timeout of uvicorn (and most agent servers): a connection the server is
# about to close is dropped here first instead of failing a POST on reuse.
KEEPALIVE_S = 4.0
_MAX_ERROR_CHARS = 300


class AgentReply(NamedTuple):
    """An agent's whole answer."""

    status: int
    content_type: str
    body: bytes
    retry_after: str | None


class AgentConnectionError(Exception):
    """The request did not get an answer: refused, reset, closed, unresolvable. Its message
    is log-safe (no headers, no body)."""


class AgentClient(Protocol):
    """What the dispatcher calls; TimeoutError when `timeout_s` passes, AgentConnectionError
    on a transport failure, any other exception for a request that could not be built."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> AgentReply: ...

    async def close(self) -> None: ...


def clip(text: str) -> str:
    """An error description no longer than the log and the DLQ keep."""
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class AiohttpClient:
    """The process's one aiohttp session for agent calls; make it inside the running loop.
    Concurrency is bounded by each agent's semaphore, so its pool is unlimited."""

    def __init__(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            skip_auto_headers=("User-Agent",),
            trust_env=False,
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        # Parsed once: aiohttp would parse a str URL on every call.
        self._urls: dict[str, URL] = {}

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> AgentReply:
        """One POST; the whole answer read."""
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            if len(self._timeouts) < 64:  # an agent's own timeout; deadline-bound ones vary
                self._timeouts[timeout_s] = timeout
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = URL(url)
        try:
            async with self._session.post(
                parsed, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After") if status in (429, 503) else None
                return AgentReply(status, resp.content_type, raw, retry_after)
        except TimeoutError:
            raise  # an OSError too, and aiohttp's ServerTimeoutError a ClientError
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentConnectionError(_describe_aiohttp(exc)) from None

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()


def _describe_aiohttp(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection refused: {where}"
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return clip(f"connection error: {where}: {reason}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection error: server disconnected"
    detail = str(exc)
    name = type(exc).__name__
    return clip(f"connection error: {name}: {detail}" if detail else f"connection error: {name}")
