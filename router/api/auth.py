"""The admin key check of /logs and /dlq: 401 without a known key, 403 for a route-only key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from router.api.errors import ApiError

# Declared through fastapi.security so /openapi.json shows the scheme; checked by hand so
# every failure leaves in the contract's error shape.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an ADMIN_API_KEY key"
)


def _matches(given: bytes, keys: frozenset[str]) -> bool:
    # Every key is compared, whatever matched, so timing reveals neither which nor how many.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


async def require_admin(
    request: Request, api_key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """Let the request through only with an admin key."""
    if not api_key:
        raise ApiError(401, "unauthorized", "the X-API-Key header is required")
    settings = request.app.state.runtime.settings
    given = api_key.encode("utf-8", "surrogateescape")
    is_admin = _matches(given, settings.admin_keys)
    is_route_key = _matches(given, settings.route_keys)
    if is_admin:
        return
    if is_route_key:
        raise ApiError(403, "forbidden", "this API key may route signals but not use the admin API")
    raise ApiError(401, "unauthorized", "unknown API key")
