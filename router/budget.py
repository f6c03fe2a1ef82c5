"""The time budget of one signal, in one place: every expiry is derived from these.

A request waits at most CLAIM_WAIT_S for its claim, dispatches for at most its deadline,
then waits for its final row for at most the outcome timeout (plus one statement's timeout,
the longest a try already sent can still run). A claim expires only after all of that and a
margin, so no live request can outlive its claim; a router that died leaves claims that
expire and are swept into the DLQ.
"""

from __future__ import annotations

# The contract: a request learns within 2 s that PostgreSQL is away.
CLAIM_WAIT_S = 2.0
# A claim is inserted only this long after it was queued: the rest of CLAIM_WAIT_S is the
# margin for a commit that passed its check to reach the router before the waiter gives up.
CLAIM_VALID_S = 1.5
# Every statement of the outcome and claim pools ends within this (statement_timeout).
STATEMENT_TIMEOUT_S = 3.0
CLAIM_STATEMENT_TIMEOUT_S = CLAIM_WAIT_S
# Added to everything a live request may still do before its claim counts as abandoned.
EXPIRY_MARGIN_S = 2.0


def claim_expiry_s(deadline_ms: int, outcome_timeout_s: float) -> float:
    """Seconds after its insert at which a claim is abandoned (its router is gone)."""
    return deadline_ms / 1000 + outcome_timeout_s + STATEMENT_TIMEOUT_S + EXPIRY_MARGIN_S


def longest_request_s(deadline_ms: int, outcome_timeout_s: float) -> float:
    """The longest one POST /route can take: what a graceful shutdown must wait for."""
    return CLAIM_WAIT_S + deadline_ms / 1000 + outcome_timeout_s + STATEMENT_TIMEOUT_S
