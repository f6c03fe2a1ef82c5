"""The dead-letter queue API: list, read, discard and replay entries, for admin keys."""

from __future__ import annotations

import contextlib
from typing import Annotated

import pydantic
import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from router.api.auth import require_admin
from router.api.body import read_capped
from router.api.cursor import InvalidCursor, decode_dlq_cursor, encode_dlq_cursor
from router.api.deps import config_of, pool_of, runtime_of
from router.api.errors import ApiError, from_validation_errors, retry_later
from router.api.params import choice_filter, json_response, text_filter
from router.model import (
    DLQ_STATUSES,
    MAX_ID,
    DlqEntry,
    DlqPage,
    ReplayAnswer,
    ReplayRequest,
)
from router.openapi import ADMIN_ERRORS, error, request_body
from router.replay import Replayer, ReplayResult
from router.store import dlq
from router.store.errors import StoreError
from router.store.recovery import dlq_backlog

log = structlog.get_logger("router.api.dlq")

DEFAULT_REPLAY_LIMIT = 100
# An API call replays this many batches at once, one pool connection each.
REPLAY_WORKERS = 2

router = APIRouter(
    prefix="/dlq",
    tags=["dlq"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)

EntryId = Annotated[int, Path(alias="id", ge=1, le=MAX_ID, description="the entry's id")]


@router.get(
    "",
    summary="List DLQ entries, newest first (keyset pagination)",
    response_model=None,
    responses={
        200: {"model": DlqPage, "description": "a page; follow next_cursor"},
        400: error("a cursor this API did not return"),
        422: error("a bad filter or limit; `field` names it"),
    },
)
async def list_entries(
    request: Request,
    status: Annotated[
        str | None,
        Query(
            description="every status unless given", json_schema_extra={"enum": list(DLQ_STATUSES)}
        ),
    ] = None,
    agent: Annotated[str | None, Query(description="entries with this failed agent")] = None,
    kind: Annotated[str | None, Query(description="exact kind")] = None,
    log_id: Annotated[str | None, Query(description="the entry of this signal")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """A page of entries matching every filter given; empty parameters are ignored."""
    filters = dlq.DlqFilter(
        status=choice_filter(status, "status", DLQ_STATUSES),
        agent=text_filter(agent, "agent"),
        kind=text_filter(kind, "kind"),
    )
    before_id = None
    if cursor:
        try:
            before_id = decode_dlq_cursor(cursor)
        except InvalidCursor as exc:
            raise ApiError(400, "invalid_cursor", str(exc), "cursor") from None
    entries = await dlq.fetch_page(
        pool_of(request),
        filters,
        limit=limit + 1,
        before_id=before_id,
        log_id=text_filter(log_id, "log_id"),
    )
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = encode_dlq_cursor(entries[-1].id)
    page: DlqPage = {"items": entries, "next_cursor": next_cursor}
    return json_response(page)


@router.post(
    "/replay",
    summary="Replay entries by id, or the oldest pending ones matching a filter",
    response_model=None,
    openapi_extra=request_body(ReplayRequest),
    responses={
        200: {"model": ReplayAnswer, "description": "what was replayed and how it ended"},
        400: error("the body is not JSON"),
        413: error("the body is too large"),
        422: error("not of the request's shape, or both ids and a filter"),
    },
)
async def replay(request: Request) -> Response:
    """Re-dispatch to each entry's failed agents under its original log_id; resolve or park it."""
    body = await _replay_request(request)
    runtime = runtime_of(request)
    replayer = Replayer(
        runtime.replay_pool,
        runtime.replay_dispatcher,
        runtime.config.table,
        max_replays=runtime.config.settings.dlq_max_replays,
        workers=REPLAY_WORKERS,
    )
    try:
        if body.ids is not None:
            result = await replayer.replay_ids(body.ids, dry_run=body.dry_run)
        else:
            filters = dlq.DlqFilter(agent=body.agent, kind=body.kind)
            limit = body.limit or DEFAULT_REPLAY_LIMIT
            result = await replayer.replay_pending(filters, limit=limit, dry_run=body.dry_run)
    finally:
        await _refresh_backlog(request)
    if not body.dry_run:
        log.info("dlq_replayed", by_id=body.ids is not None, **result.counts())
    return json_response(_result_body(result))


@router.get(
    "/{id}",
    summary="One DLQ entry",
    response_model=None,
    responses={
        200: {"model": DlqEntry, "description": "the entry"},
        404: error("no entry with this id"),
        422: error("the id is not a positive integer"),
    },
)
async def get_entry(request: Request, entry_id: EntryId) -> Response:
    """One entry, 404 when there is none."""
    entry = await dlq.fetch_one(pool_of(request), entry_id)
    if entry is None:
        raise _not_found()
    return json_response(entry)


@router.delete(
    "/{id}",
    summary="Discard an entry: it is kept, marked discarded, and never replayed",
    response_model=None,
    responses={
        200: {"model": DlqEntry, "description": "the entry, now discarded"},
        404: error("no entry with this id"),
        409: error("the entry is resolved, or a replay of it is in progress"),
        422: error("the id is not a positive integer"),
    },
)
async def discard_entry(request: Request, entry_id: EntryId) -> Response:
    """Mark a pending or parked entry discarded (again: a no-op); a resolved one is refused."""
    try:
        entry = await dlq.discard(pool_of(request), entry_id)
    except dlq.EntryBusy as exc:
        raise retry_later("in_progress", str(exc), status=409) from None
    finally:
        await _refresh_backlog(request)
    if entry is None:
        raise _not_found()
    if entry.status == "resolved":
        raise ApiError(409, "already_resolved", "the entry was delivered by a replay already")
    return json_response(entry)


async def _replay_request(request: Request) -> ReplayRequest:
    """The body, read with a cap and validated only after the key was checked."""
    cap = config_of(request).settings.max_body_bytes
    raw = await read_capped(request.receive, request.headers.get("content-length"), cap)
    try:
        body = ReplayRequest.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None
    if body.ids is not None and (body.agent, body.kind, body.limit) != (None, None, None):
        raise ApiError(
            422, "invalid_request", "give ids or a filter (agent, kind, limit), not both", "ids"
        )
    return body


def _result_body(result: ReplayResult) -> ReplayAnswer:
    # Spelled out: mypy cannot check a TypedDict with optional keys built from `**counts`.
    body: ReplayAnswer = {
        "replayed": result.replayed,
        "resolved": result.resolved,
        "failed": result.failed,
        "parked": result.parked,
        "skipped": result.skipped,
        "dry_run": result.dry_run,
    }
    if result.dry_run:
        body["ids"] = [e.id for e in result.would_replay]
        body["entries"] = result.would_replay
    return body


async def _refresh_backlog(request: Request) -> None:
    """Set dlq_backlog from the table: a replay or discard just changed it."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        with contextlib.suppress(StoreError):
            runtime.config.metrics.dlq_backlog.set(await dlq_backlog(runtime.pool))


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no DLQ entry with this id", "id")
