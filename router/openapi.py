"""The OpenAPI document, generated from router/model.py: what each endpoint answers, and why."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from router.model import ErrorBody, ReplayRequest, RouteAnswer, SignalBody

DESCRIPTION = (
    "Services POST signals; the router classifies each by the routing table's rules, fans it out "
    "to HTTP agents with retries, records it durably, and parks failures in a dead-letter queue. "
    'Every error body is `{"error": {"code", "message", "field"}}`.'
)
# Bodies read by hand (capped, after the key check), so FastAPI does not see them as parameters.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (SignalBody, ReplayRequest)
_REF = "#/components/schemas/{model}"
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}

Responses = dict[int | str, dict[str, Any]]


def error(description: str, *, retry: bool = False) -> dict[str, Any]:
    """A response entry whose body is the contract's error; `retry` documents Retry-After."""
    entry: dict[str, Any] = {"model": ErrorBody, "description": description}
    if retry:
        entry["headers"] = _RETRY_AFTER
    return entry


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for an endpoint whose JSON body is one of REQUEST_MODELS."""
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once: FastAPI's, plus the hand-read request bodies."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        # FastAPI adds a 422 of its own shape to every operation with parameters; each
        # endpoint that can refuse a parameter documents its real 422 (ErrorBody) instead.
        for operations in doc["paths"].values():
            for operation in operations.values():
                default = operation["responses"].get("422", {})
                if "HTTPValidationError" in str(default.get("content")):
                    del operation["responses"]["422"]
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        for model in REQUEST_MODELS:
            schema = model.model_json_schema(ref_template=_REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        app.openapi_schema = doc
    return app.openapi_schema


ADMIN_ERRORS: Responses = {
    401: error("missing or unknown X-API-Key"),
    403: error("a route-only key: the admin API needs an ADMIN_API_KEY key"),
    503: error("PostgreSQL unreachable or the router starting; try again", retry=True),
}

ROUTE_RESPONSES: Responses = {
    200: {
        "model": RouteAnswer,
        "description": "delivered, or partial (the failed agents are in the DLQ); "
        "a repeat of a seen log_id answers the stored outcome with duplicate=true "
        "and header Idempotent-Replayed: true",
    },
    202: {
        "model": RouteAnswer,
        "description": "dead_lettered: nothing succeeded; the signal is in the DLQ for replay",
    },
    400: error("the body is not JSON"),
    401: error("missing or unknown X-API-Key"),
    409: error("the same log_id is being dispatched right now"),
    413: error("the body is larger than MAX_BODY_BYTES"),
    422: error(
        "not of the signal's shape, content that cannot be stored, "
        "or a seen log_id with a different body"
    ),
    429: error(
        "rate_limited: the sender_id is over SENDER_RATE_LIMIT; nothing was recorded", retry=True
    ),
    503: error(
        "PostgreSQL unreachable, the router shedding load or stopping; nothing was dispatched, "
        "or the outcome was not recorded and will be replayed",
        retry=True,
    ),
}
