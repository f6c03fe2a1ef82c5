"""The dead-letter queue API: list, read, discard and replay entries, for admin keys."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from router.api import admin_schemas as schemas
from router.api.auth import require_admin
from router.api.cursor import MAX_ID, InvalidCursor, decode_dlq_cursor, encode_dlq_cursor
from router.api.deps import config_of, pool_of, runtime_of
from router.api.errors import ApiError, from_store_error, retry_later
from router.api.params import choice_filter, json_response, text_filter
from router.model import DLQ_STATUSES
from router.openapi import error_response, json_content
from router.replay import Replayer, ReplayResult
from router.store import dlq
from router.store.errors import StoreError
from router.store.recovery import dlq_backlog

DEFAULT_REPLAY_LIMIT = 100
# An API call replays this many batches at once, one pool connection each.
REPLAY_WORKERS = 2

router = APIRouter(
    prefix="/dlq",
    tags=["dlq"],
    dependencies=[Depends(require_admin)],
    responses=schemas.ADMIN_ERRORS,
)

EntryId = Annotated[int, Path(alias="id", ge=1, le=MAX_ID, description="the entry's id")]


@router.get(
    "",
    summary="List DLQ entries, newest first (keyset pagination)",
    response_model=None,
    responses={
        200: {"model": schemas.DlqPage, "description": "a page; follow next_cursor"},
        400: error_response("a cursor this API did not return"),
        422: error_response("a bad filter or limit; `field` names it"),
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
    try:
        entries = await dlq.fetch_page(
            pool_of(request), filters, limit=limit + 1, before_id=before_id
        )
    except StoreError as exc:
        raise from_store_error(exc) from None
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = encode_dlq_cursor(entries[-1].id)
    return json_response({"items": [e.as_dict() for e in entries], "next_cursor": next_cursor})


@router.post(
    "/replay",
    summary="Replay entries by id, or the oldest pending ones matching a filter",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": json_content(schemas.ReplayRequest.model_json_schema()),
        }
    },
    responses={
        200: {"model": schemas.ReplayResult, "description": "what was replayed and how it ended"},
        400: error_response("the body is not JSON"),
        413: error_response("the body is too large"),
        422: error_response("not of the request's shape, or both ids and a filter"),
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
    except StoreError as exc:
        raise from_store_error(exc) from None
    finally:
        await _refresh_backlog(request)
    return json_response(_result_body(result))


@router.get(
    "/{id}",
    summary="One DLQ entry",
    response_model=None,
    responses={
        200: {"model": schemas.DlqEntry, "description": "the entry"},
        404: error_response("no entry with this id"),
        422: error_response("the id is not a positive integer"),
    },
)
async def get_entry(request: Request, entry_id: EntryId) -> Response:
    """One entry, 404 when there is none."""
    try:
        entry = await dlq.fetch_one(pool_of(request), entry_id)
    except StoreError as exc:
        raise from_store_error(exc) from None
    if entry is None:
        raise _not_found()
    return json_response(entry.as_dict())


@router.delete(
    "/{id}",
    summary="Discard an entry: it is kept, marked discarded, and never replayed",
    response_model=None,
    responses={
        200: {"model": schemas.DlqEntry, "description": "the entry, now discarded"},
        404: error_response("no entry with this id"),
        409: error_response("the entry is resolved, or a replay of it is in progress"),
        422: error_response("the id is not a positive integer"),
    },
)
async def discard_entry(request: Request, entry_id: EntryId) -> Response:
    """Mark a pending or parked entry discarded (again: a no-op); a resolved one is refused."""
    try:
        entry = await dlq.discard(pool_of(request), entry_id)
    except dlq.EntryBusy as exc:
        raise retry_later("in_progress", str(exc), status=409) from None
    except StoreError as exc:
        raise from_store_error(exc) from None
    finally:
        await _refresh_backlog(request)
    if entry is None:
        raise _not_found()
    if entry.status == "resolved":
        raise ApiError(409, "already_resolved", "the entry was delivered by a replay already")
    return json_response(entry.as_dict())


async def _replay_request(request: Request) -> schemas.ReplayRequest:
    """The body, read with a cap and validated only after the key was checked."""
    cap = config_of(request).settings.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "body_too_large", f"the body is larger than {cap} bytes")
        chunks.append(chunk)
    try:
        body = schemas.ReplayRequest.model_validate_json(b"".join(chunks))
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    if body.ids is not None and (body.agent, body.kind, body.limit) != (None, None, None):
        raise ApiError(
            422, "invalid_request", "give ids or a filter (agent, kind, limit), not both", "ids"
        )
    return body


def _invalid(exc: pydantic.ValidationError) -> ApiError:
    first: Any = exc.errors()[0] if exc.error_count() else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", "the body is not valid JSON")
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    message = str(first.get("msg", "invalid request"))
    return ApiError(422, "invalid_request", f"{field}: {message}" if field else message, field)


def _result_body(result: ReplayResult) -> dict[str, Any]:
    body: dict[str, Any] = {**result.counts(), "skipped": result.skipped, "dry_run": result.dry_run}
    if result.dry_run:
        body["ids"] = [e.id for e in result.would_replay]
        body["entries"] = [e.as_dict() for e in result.would_replay]
    return body


async def _refresh_backlog(request: Request) -> None:
    """Set dlq_backlog from the table: a replay or discard just changed it."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        with contextlib.suppress(StoreError):
            runtime.config.metrics.dlq_backlog.set(await dlq_backlog(runtime.pool))


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no DLQ entry with this id", "id")
