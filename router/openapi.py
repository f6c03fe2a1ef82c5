"""OpenAPI shapes of the hand-parsed endpoints, so a client can be generated from them."""

from __future__ import annotations

from typing import Any

DESCRIPTION = (
    "Services POST signals; the router classifies each by the routing table's rules, fans it out "
    "to HTTP agents with retries, records it durably, and parks failures in a dead-letter queue. "
    'Every error body is `{"error": {"code", "message", "field"}}`.'
)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "snake_case reason"},
                "message": {"type": "string", "description": "for a person"},
                "field": {
                    "type": ["string", "null"],
                    "description": "path of the field at fault, when one is",
                },
            },
        }
    },
}

SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sender_id", "payload"],
    "properties": {
        "sender_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "payload": {"type": "object", "description": "any JSON object; no NUL characters"},
        "log_id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9._:-]{1,200}$",
            "description": "idempotency key; derived from sender_id, timestamp, payload if absent",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 event time",
        },
        "metadata": {"type": "object"},
    },
}

AGENT_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["agent", "ok", "status_code", "attempts", "latency_ms", "response", "error"],
    "properties": {
        "agent": {"type": "string"},
        "ok": {"type": "boolean"},
        "status_code": {"type": ["integer", "null"]},
        "attempts": {"type": "integer"},
        "latency_ms": {"type": "number"},
        "response": {"description": "the agent's JSON reply, when it sent one"},
        "error": {"type": ["string", "null"]},
    },
}

ROUTE_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["log_id", "kind", "status", "duplicate", "trace_id", "agents"],
    "properties": {
        "log_id": {"type": "string"},
        "kind": {"type": "string"},
        "status": {"type": "string", "enum": ["delivered", "partial", "dead_lettered"]},
        "duplicate": {"type": "boolean"},
        "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "agents": {"type": "array", "items": AGENT_OUTCOME_SCHEMA},
    },
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI `content` entry for a JSON body."""
    return {"application/json": {"schema": schema}}


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response entry whose body is the contract's error."""
    return {"description": description, "content": json_content(ERROR_SCHEMA)}


ROUTE_REQUEST: dict[str, Any] = {
    "requestBody": {"required": True, "content": json_content(SIGNAL_SCHEMA)},
    "parameters": [
        {"name": "X-API-Key", "in": "header", "required": True, "schema": {"type": "string"}},
        {
            "name": "traceparent",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "W3C trace context; continued to the agents when valid",
        },
    ],
}

ROUTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "delivered, or partial (the failed agents are in the DLQ); "
        "a repeat of a seen log_id answers the stored outcome with duplicate=true "
        "and header Idempotent-Replayed: true",
        "content": json_content(ROUTE_RESULT_SCHEMA),
    },
    202: {
        "description": "dead_lettered: nothing succeeded; the signal is in the DLQ for replay",
        "content": json_content(ROUTE_RESULT_SCHEMA),
    },
    400: error_response("the body is not JSON"),
    401: error_response("missing or unknown X-API-Key"),
    409: error_response("the same log_id is being dispatched right now"),
    413: error_response("the body is larger than MAX_BODY_BYTES"),
    422: error_response(
        "not of the signal's shape, content that cannot be stored, "
        "or a seen log_id with a different body"
    ),
    503: error_response(
        "PostgreSQL unreachable or the router shedding load; nothing was dispatched "
        "(Retry-After says when to try again)"
    ),
}
