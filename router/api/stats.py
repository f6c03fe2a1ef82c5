"""GET /stats: per-minute latency statistics from latency_stats, for admin keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from router.api.auth import require_admin
from router.api.deps import read_pool_of
from router.api.params import json_response, text_filter, time_filter
from router.model import StatsPage
from router.openapi import ADMIN_ERRORS, error
from router.store import stats

router = APIRouter(tags=["stats"], dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)


@router.get(
    "/stats",
    summary="Per-minute delivery latency by kind and agent, newest first",
    response_model=None,
    responses={
        200: {"model": StatsPage, "description": "rows merged over every router process"},
        422: error("a bad filter or limit; `field` names it"),
    },
)
async def list_stats(
    request: Request,
    since: Annotated[
        str | None,
        Query(
            description="RFC 3339; minutes starting at or after",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            description="RFC 3339; minutes starting before",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    kind: Annotated[str | None, Query(description="exact kind")] = None,
    agent: Annotated[str | None, Query(description="exact agent")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="rows at most")] = 1000,
) -> Response:
    """Rows matching every filter given; empty parameters are ignored."""
    filters = stats.StatsFilter(
        kind=text_filter(kind, "kind"),
        agent=text_filter(agent, "agent"),
        since=time_filter(since, "since"),
        until=time_filter(until, "until"),
    )
    page: StatsPage = {"items": await stats.fetch_page(read_pool_of(request), filters, limit=limit)}
    return json_response(page)
