"""The typed states of a signal, defined once and imported by every layer (and OpenAPI)."""

from __future__ import annotations

from typing import Literal, get_args

# A signal's log row: in_flight while its claim is the only record, then its final status.
LogStatus = Literal["in_flight", "delivered", "partial", "dead_lettered", "interrupted"]
FinalStatus = Literal["delivered", "partial", "dead_lettered", "interrupted"]
# A DLQ entry: pending until a replay resolves it, parked after DLQ_MAX_REPLAYS failures,
# discarded by an operator (kept for audit).
DlqStatus = Literal["pending", "resolved", "parked", "discarded"]
Mode = Literal["all", "first_success"]
# How one HTTP attempt to an agent ended (the `outcome` label of agent metrics).
AttemptKind = Literal["ok", "http_4xx", "http_5xx", "http_429", "timeout", "connection_error"]

LOG_STATUSES: tuple[LogStatus, ...] = get_args(LogStatus)
FINAL_STATUSES: tuple[FinalStatus, ...] = get_args(FinalStatus)
DLQ_STATUSES: tuple[DlqStatus, ...] = get_args(DlqStatus)
MODES: tuple[Mode, ...] = get_args(Mode)
ATTEMPT_KINDS: tuple[AttemptKind, ...] = get_args(AttemptKind)

# The HTTP status POST /route answers with for each final status.
HTTP_FOR_STATUS: dict[FinalStatus, int] = {
    "delivered": 200,
    "partial": 200,
    "dead_lettered": 202,
    "interrupted": 202,
}
