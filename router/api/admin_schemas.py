"""Shapes of the admin API (/logs, /dlq) for /openapi.json, and the replay request's validation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.api.cursor import MAX_ID
from router.model import DlqStatus, LogStatus, Mode
from router.openapi import error_response

# Agent names and kinds as the routing table allows them.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")]
MAX_REPLAY_BATCH = 1000


class AgentOutcome(BaseModel):
    """One agent's delivery of a signal."""

    agent: str
    ok: bool
    status_code: int | None
    attempts: int
    latency_ms: float
    response: Any = Field(description="the agent's JSON reply, when it sent one")
    error: str | None


class LogItem(BaseModel):
    """One signal's row in the log."""

    log_id: str
    sender_id: str
    kind: str
    status: LogStatus
    mode: Mode
    payload: dict[str, Any]
    metadata: dict[str, Any] | None
    event_time: str | None = Field(description="the signal's timestamp, as sent")
    routed_agents: list[str]
    response: list[AgentOutcome] | None = Field(description="per-agent outcomes; null in flight")
    trace_id: str
    attempts: int
    latency_ms: float | None
    created_at: datetime
    updated_at: datetime


class LogPage(BaseModel):
    """A page of the log, newest first."""

    items: list[LogItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class DlqEntry(BaseModel):
    """One signal's failed agents, waiting for (or done with) replay."""

    id: int
    log_id: str
    sender_id: str
    kind: str
    agents: list[str] = Field(description="the agents that still have to succeed")
    mode: Mode
    payload: dict[str, Any]
    metadata: dict[str, Any] | None
    event_time: str | None
    trace_id: str
    last_error: str | None = Field(max_length=1000)
    attempts: int
    replay_count: int
    status: DlqStatus
    created_at: datetime
    last_attempt_at: datetime | None


class DlqPage(BaseModel):
    """A page of the DLQ, newest first."""

    items: list[DlqEntry]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class ReplayRequest(BaseModel):
    """Replay by `ids`, or by a filter (`agent`, `kind`, `limit`); not both."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        None, min_length=1, max_length=MAX_REPLAY_BATCH, description="entries to replay"
    )
    agent: Name | None = Field(None, description="pending entries with this failed agent")
    kind: Name | None = Field(None, description="pending entries of this kind")
    limit: int | None = Field(
        None, ge=1, le=MAX_REPLAY_BATCH, description="at most this many (default 100)"
    )
    dry_run: bool = Field(False, description="list what would be replayed; change nothing")


class Skipped(BaseModel):
    """An entry asked for by id that was not dispatched, and why."""

    id: int
    reason: Literal["resolved", "discarded", "not_found", "in_progress"]


class ReplayResult(BaseModel):
    """Counts of one replay call: resolved + failed = replayed; parked: the failed now parked."""

    replayed: int
    resolved: int
    failed: int
    parked: int
    skipped: list[Skipped] = Field(description="ids asked for but not dispatched")
    dry_run: bool
    ids: list[int] | None = Field(None, description="dry run: what would be replayed")
    entries: list[DlqEntry] | None = Field(None, description="dry run: what would be replayed")


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_response("missing or unknown X-API-Key"),
    403: error_response("a route-only key: the admin API needs an ADMIN_API_KEY key"),
    422: error_response("a bad parameter; `field` names it"),
    503: error_response("PostgreSQL unreachable; try again (Retry-After)"),
}
