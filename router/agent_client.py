"""What the dispatcher needs of an HTTP client for agent calls: one small interface.

POST a body with headers under a timeout, never follow a redirect, keep connections alive
(closing idle ones before the agent's server does), abort a request whose task is cancelled
(a first_success loser), and say whether it failed by timeout, by transport (described
without secrets) or by a request it could not build. router/http11_client.py implements it;
aiohttp did until it was measured to be most of the router's CPU, and pyreqwest was tried and
not kept (docs/PERFORMANCE.md, "The agent client").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

__all__ = ["AgentClient", "AgentConnectionError", "AgentReply", "clip"]

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
