"""The signal's shapes and states, defined once: every layer and the OpenAPI document use these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, with_config

# typing's TypedDict lacks what pydantic needs to describe it on Python < 3.12.
from typing_extensions import TypedDict

# A signal's log row: in_flight while its claim is the only record, then its final status.
LogStatus = Literal["in_flight", "delivered", "partial", "dead_lettered", "interrupted"]
FinalStatus = Literal["delivered", "partial", "dead_lettered", "interrupted"]
# What POST /route answers: an interrupted signal is dead-lettered as far as its sender knows.
AnswerStatus = Literal["delivered", "partial", "dead_lettered"]
# A DLQ entry: pending until a replay resolves it, parked after DLQ_MAX_REPLAYS failures,
# discarded by an operator (kept for audit).
DlqStatus = Literal["pending", "resolved", "parked", "discarded"]
Mode = Literal["all", "first_success"]
# How an agent's replicas share its attempts (router/balance.py).
Balance = Literal["least_latency", "round_robin"]
# How one HTTP attempt to an agent ended (the `outcome` label of agent metrics).
AttemptKind = Literal["ok", "http_4xx", "http_5xx", "http_429", "timeout", "connection_error"]

LOG_STATUSES: tuple[LogStatus, ...] = get_args(LogStatus)
DLQ_STATUSES: tuple[DlqStatus, ...] = get_args(DlqStatus)
BALANCES: tuple[Balance, ...] = get_args(Balance)
ATTEMPT_KINDS: tuple[AttemptKind, ...] = get_args(AttemptKind)

# The HTTP status POST /route answers with for each final status.
HTTP_FOR_STATUS: dict[FinalStatus, int] = {
    "delivered": 200,
    "partial": 200,
    "dead_lettered": 202,
    "interrupted": 202,
}

LOG_ID_PATTERN = r"[A-Za-z0-9._:-]{1,200}"
MAX_SENDER_ID = 200
MAX_LAST_ERROR = 1000
# Agent names and kinds as the routing table allows them.
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
MAX_REPLAY_BATCH = 1000
# Keyset cursors and ids are bigints.
MAX_ID = 2**63 - 1

_CLOSED = ConfigDict(extra="forbid")
JsonObject = dict[str, Any]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
TraceId = Annotated[str, Field(pattern="^[0-9a-f]{32}$")]


class SignalBody(BaseModel):
    """A POST /route body. signals.py parses it by hand for speed, to these constraints."""

    model_config = ConfigDict(extra="forbid")

    sender_id: str = Field(min_length=1, max_length=MAX_SENDER_ID)
    payload: JsonObject = Field(description="any JSON object; no NUL characters")
    log_id: str | None = Field(
        None,
        pattern=f"^{LOG_ID_PATTERN}$",
        description="idempotency key; derived from sender_id, timestamp, payload if absent",
    )
    timestamp: str | None = Field(
        None, json_schema_extra={"format": "date-time"}, description="RFC 3339 event time"
    )
    metadata: JsonObject | None = None


@with_config(_CLOSED)
class ForwardedBody(TypedDict):
    """The body each agent gets, on the first delivery and on every replay."""

    log_id: str
    sender_id: str
    kind: str
    payload: JsonObject
    metadata: JsonObject | None
    timestamp: str | None


@dataclass(slots=True, kw_only=True)
class StoredSignal:
    """What every record of a signal keeps of it: its claim, its log row and its DLQ entry.

    A field added to the signal is added here (and to the SQL that stores and reads it);
    each record's own fields are in its subclass.
    """

    log_id: str
    sender_id: str
    kind: str
    mode: Mode
    payload: JsonObject
    metadata: JsonObject | None
    event_time: Annotated[str | None, Field(description="the signal's timestamp, as sent")]
    trace_id: str

    def forwarded_body(self) -> bytes:
        """The body its agents get, encoded: the same bytes on the first delivery and replays."""
        body: ForwardedBody = {
            "log_id": self.log_id,
            "sender_id": self.sender_id,
            "kind": self.kind,
            "payload": self.payload,
            "metadata": self.metadata,
            "timestamp": self.event_time,
        }
        return orjson.dumps(body)


@with_config(_CLOSED)
@dataclass(slots=True)
class AgentOutcome:
    """One agent's delivery of a signal, as answered, logged and merged by replays."""

    agent: str
    ok: bool
    status_code: int | None
    attempts: int
    latency_ms: float
    response: Annotated[Any, Field(description="the agent's JSON reply, when it sent one")]
    error: str | None


@with_config(_CLOSED)
class RouteAnswer(TypedDict):
    """POST /route's answer: the signal's outcome, fresh or stored (`duplicate`)."""

    log_id: str
    kind: str
    status: AnswerStatus
    duplicate: bool
    trace_id: TraceId
    agents: list[AgentOutcome]


@with_config(_CLOSED)
@dataclass(slots=True, kw_only=True)
class LogItem(StoredSignal):
    """One signal's row in the log."""

    status: LogStatus
    routed_agents: list[str]
    response: Annotated[
        list[AgentOutcome] | None, Field(description="per-agent outcomes; null in flight")
    ]
    attempts: int
    latency_ms: float | None
    created_at: datetime
    updated_at: datetime


@with_config(_CLOSED)
@dataclass(slots=True, kw_only=True)
class DlqEntry(StoredSignal):
    """One signal's failed agents, waiting for (or done with) replay."""

    id: int
    agents: Annotated[list[str], Field(description="the agents that still have to succeed")]
    last_error: Annotated[str | None, Field(max_length=MAX_LAST_ERROR)]
    attempts: int
    replay_count: int
    status: DlqStatus
    created_at: datetime
    last_attempt_at: datetime | None


NextCursor = Annotated[
    str | None, Field(description="pass as ?cursor= for the next page; null at the end")
]


@with_config(_CLOSED)
class StatsItem(TypedDict):
    """One minute of one kind's deliveries to one agent, merged over every router process."""

    minute: Annotated[datetime, Field(description="the minute's start, UTC")]
    kind: str
    agent: str
    count: Annotated[int, Field(description="deliveries (one per signal and agent)")]
    errors: Annotated[int, Field(description="deliveries that failed after their retries")]
    avg_ms: float
    p50_ms: Annotated[float, Field(description="upper bound of the bucket holding the rank")]
    p95_ms: float
    p99_ms: float


@with_config(_CLOSED)
class StatsPage(TypedDict):
    """GET /stats: per-minute rows, newest first."""

    items: list[StatsItem]


@with_config(_CLOSED)
class LogPage(TypedDict):
    """A page of the log, newest first."""

    items: list[LogItem]
    next_cursor: NextCursor


@with_config(_CLOSED)
class DlqPage(TypedDict):
    """A page of the DLQ, newest first."""

    items: list[DlqEntry]
    next_cursor: NextCursor


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


SkipReason = Literal["resolved", "discarded", "not_found", "in_progress"]


@with_config(_CLOSED)
class Skipped(TypedDict):
    """An entry asked for by id that was not dispatched, and why."""

    id: int
    reason: SkipReason


class ReplayCounts(TypedDict):
    """What a replay did: resolved + failed = replayed; parked: those of the failed now parked."""

    replayed: int
    resolved: int
    failed: int
    parked: int


@with_config(_CLOSED)
class ReplayAnswer(ReplayCounts):
    """POST /dlq/replay's answer; a dry run lists what it would replay."""

    skipped: Annotated[list[Skipped], Field(description="ids asked for but not dispatched")]
    dry_run: bool
    ids: NotRequired[Annotated[list[int], Field(description="dry run: what would be replayed")]]
    entries: NotRequired[list[DlqEntry]]


@with_config(_CLOSED)
class ErrorDetail(TypedDict):
    """What went wrong: a snake_case code, a sentence, and the field at fault when one is."""

    code: str
    message: str
    field: str | None


@with_config(_CLOSED)
class ErrorBody(TypedDict):
    """Every error answer's body."""

    error: ErrorDetail


class ApiError(Exception):
    """An answer other than success: its status, ErrorDetail's fields and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


@with_config(_CLOSED)
class Health(TypedDict):
    """GET /health: the process serves."""

    status: Literal["ok"]


@with_config(_CLOSED)
class Readiness(TypedDict):
    """GET /health/ready: each check's state; `error` names the failing ones."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    open_breakers: Annotated[list[str], Field(description="agents whose breaker is open")]
    error: NotRequired[ErrorDetail]


def clip_last_error(text: str) -> str:
    """A DLQ entry's last_error, cut to what the contract allows."""
    return text if len(text) <= MAX_LAST_ERROR else text[: MAX_LAST_ERROR - 1] + "…"
