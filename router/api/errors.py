"""The contract's error body, and handlers that give every failure that shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from router.model import ApiError as ApiError  # the API layer raises it from here
from router.model import ErrorBody
from router.store.errors import DatabaseUnavailable, Overloaded, RejectedByDatabase, StoreError

log = structlog.get_logger("router.api")

JSON = "application/json"
# Every "try again" answer says when; one second is what the router's own recovery needs.
RETRY_AFTER = {"Retry-After": "1"}


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """The contract's error body; the one place it is built."""
    body: ErrorBody = {"error": {"code": code, "message": message, "field": field}}
    return orjson.dumps(body)


def retry_later(code: str, message: str, status: int = 503, after_s: int = 1) -> ApiError:
    """An answer that tells the client to come back (`Retry-After`)."""
    headers = RETRY_AFTER if after_s == 1 else {"Retry-After": str(after_s)}
    return ApiError(status, code, message, headers=headers)


def starting() -> ApiError:
    """A request that arrived before the lifespan finished opening the runtime."""
    return retry_later("starting", "the router is starting")


def from_store_error(exc: StoreError) -> ApiError:
    """A database failure as the caller sees it, one code per meaning."""
    if isinstance(exc, RejectedByDatabase):
        return ApiError(422, "unstorable", str(exc))
    if isinstance(exc, Overloaded):
        return retry_later("overloaded", "the router is shedding load; nothing was dispatched")
    if isinstance(exc, DatabaseUnavailable):
        return retry_later("database_unavailable", str(exc))
    return retry_later("database_error", str(exc))


def from_validation_errors(errors: Sequence[Any]) -> ApiError:
    """pydantic's first complaint, FastAPI's or our own models', naming the field."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", "the body is not valid JSON")
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    return ApiError(422, "invalid_request", f"{field}: {message}" if field else message, field)


def error_response(exc: ApiError) -> Response:
    """`{"error": {"code", "message", "field"}}` with the error's status and headers."""
    body = error_body(exc.code, exc.message, exc.field)
    return Response(body, status_code=exc.status, media_type=JSON, headers=exc.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or Starlette raises leaves in the contract's shape."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(ApiError(exc.status_code, code, str(exc.detail), None, headers))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_errors(list(exc.errors())))

    async def on_store_error(request: Request, exc: Exception) -> Response:
        # The one place a database failure becomes an answer for the admin API.
        assert isinstance(exc, StoreError)
        return error_response(from_store_error(exc))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # A bug, not the caller's fault: logged with its traceback, still in the contract's shape.
        log.exception("unhandled_error", path=request.url.path)
        return error_response(
            ApiError(500, "internal_error", "the router failed to handle this request")
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StoreError, on_store_error)
    app.add_exception_handler(Exception, on_unexpected)
