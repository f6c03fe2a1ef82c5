"""API keys: one check, shared by the POST /route fast path and the admin API.

Keys are compared as the bytes the client sent against each configured key in UTF-8, so a
non-ASCII key is accepted or refused the same way everywhere.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from router.api.errors import ApiError

# Declared through fastapi.security so /openapi.json shows the scheme; checked by ApiKeys so
# every failure leaves in the contract's error shape.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an ADMIN_API_KEY key"
)
_HEADER = b"x-api-key"

Role = Literal["admin", "route"]


class ApiKeys:
    """The route and admin keys, encoded once."""

    def __init__(self, route_keys: Iterable[str], admin_keys: Iterable[str]) -> None:
        self._route = tuple(k.encode() for k in route_keys)
        self._admin = tuple(k.encode() for k in admin_keys)

    def role(self, given: bytes | None) -> Role | None:
        """What `given` may do; every key is compared, so timing reveals neither which nor
        how many matched."""
        if not given:
            return None
        admin = route = False
        for key in self._admin:
            admin |= hmac.compare_digest(given, key)
        for key in self._route:
            route |= hmac.compare_digest(given, key)
        return "admin" if admin else "route" if route else None

    def require_route(self, given: bytes | None) -> None:
        """401 unless `given` may route signals."""
        if self.role(given) is None:
            raise _unauthorized(given)

    def require_admin(self, given: bytes | None) -> None:
        """401 without a known key, 403 for a key that may only route."""
        role = self.role(given)
        if role == "admin":
            return
        if role == "route":
            raise ApiError(
                403, "forbidden", "this API key may route signals but not use the admin API"
            )
        raise _unauthorized(given)


def header_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The raw X-API-Key value of an ASGI header list."""
    for name, value in headers:
        if name == _HEADER:
            return value
    return None


async def require_admin(
    request: Request, api_key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """Let the request through only with an admin key (FastAPI dependency)."""
    keys: ApiKeys = request.app.state.config.keys
    keys.require_admin(header_key(request.scope["headers"]))


def _unauthorized(given: bytes | None) -> ApiError:
    if not given:
        return ApiError(401, "unauthorized", "the X-API-Key header is required")
    return ApiError(401, "unauthorized", "unknown API key")
