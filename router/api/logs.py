"""GET /logs and GET /logs/{log_id}: the signal log, for admin keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from router.api.auth import require_admin
from router.api.cursor import InvalidCursor, decode_log_cursor, encode_log_cursor
from router.api.deps import read_pool_of
from router.api.errors import ApiError
from router.api.params import choice_filter, json_response, text_filter, time_filter
from router.model import LOG_STATUSES, LogItem, LogPage
from router.openapi import ADMIN_ERRORS, error
from router.signals import LOG_ID_RE
from router.store import logs

router = APIRouter(tags=["logs"], dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)


@router.get(
    "/logs",
    summary="List logged signals, newest first (keyset pagination)",
    response_model=None,
    responses={
        200: {"model": LogPage, "description": "a page; follow next_cursor for the next one"},
        400: error("a cursor this API did not return"),
        422: error("a bad filter or limit; `field` names it"),
    },
)
async def list_logs(
    request: Request,
    sender_id: Annotated[str | None, Query(description="exact sender_id")] = None,
    kind: Annotated[str | None, Query(description="exact kind")] = None,
    status: Annotated[
        str | None,
        Query(description="signal status", json_schema_extra={"enum": list(LOG_STATUSES)}),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            description="RFC 3339; created at or after",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(description="RFC 3339; created before", json_schema_extra={"format": "date-time"}),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """A page of log rows matching every filter given; empty parameters are ignored."""
    filters = logs.LogFilter(
        sender_id=text_filter(sender_id, "sender_id"),
        kind=text_filter(kind, "kind"),
        status=choice_filter(status, "status", LOG_STATUSES),
        since=time_filter(since, "since"),
        until=time_filter(until, "until"),
    )
    after = None
    if cursor:
        try:
            after = decode_log_cursor(cursor)
        except InvalidCursor as exc:
            raise ApiError(400, "invalid_cursor", str(exc), "cursor") from None
    rows = await logs.fetch_page(read_pool_of(request), filters, limit=limit + 1, after=after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_log_cursor(last.created_at, last.log_id)
    page: LogPage = {"items": rows, "next_cursor": next_cursor}
    return json_response(page)


@router.get(
    "/logs/{log_id}",
    summary="One logged signal",
    response_model=None,
    responses={
        200: {"model": LogItem, "description": "the signal's row"},
        404: error("no signal with this log_id"),
    },
)
async def get_log(request: Request, log_id: str) -> Response:
    """The row of one signal, 404 when there is none."""
    row = None
    # A log_id the route path would refuse cannot exist (and a NUL could not be queried).
    if LOG_ID_RE.fullmatch(log_id) is not None:
        row = await logs.fetch_one(read_pool_of(request), log_id)
    if row is None:
        raise ApiError(404, "not_found", "no signal with this log_id", "log_id")
    return json_response(row)
