"""The request body, read with a cap: the one copy the route path and the admin API share."""

from __future__ import annotations

from starlette.types import Receive

from router.api.errors import ApiError


async def read_capped(receive: Receive, content_length: bytes | str | None, cap: int) -> bytes:
    """The whole body; 413 before it is read (or while it arrives) when larger than `cap`."""
    if content_length is not None and content_length.isdigit() and int(content_length) > cap:
        raise _too_large(cap)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ApiError(400, "client_disconnected", "the request body did not arrive")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(cap: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {cap} bytes")
