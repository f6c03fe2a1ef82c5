"""`router` with chosen layers answered at once, to measure what each costs (benches.ablation).

#     BENCH_ABLATE=log,metrics,database,agent python -m benches.ablated_router serve --port P

Each layer named in BENCH_ABLATE is replaced by an immediate answer: `log` the per-signal
log line (LOG_LEVEL=warning), `metrics` every prometheus_client update, `database` the
claim and the outcome (won and written at once, nothing stored), `agent` the dispatch (every
agent answers 200 at once, nothing sent). The hooks live here, in the bench harness only:
router code has no knob for them. One worker: a spawned worker would not be patched.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import prometheus_client.metrics as prometheus_metrics

from router.cli import main
from router.dispatch import Dispatcher
from router.model import AgentOutcome
from router.routing import AgentConfig
from router.store.writer import Claim, ExistingSignal, GroupCommitWriter, Outcome, Recorded

ABLATE_ENV = "BENCH_ABLATE"
LAYERS = ("log", "metrics", "database", "agent")


def _no_update(self: object, *args: Any, **kwargs: Any) -> None:
    """A metric update that changes nothing."""


def _claim_won(
    self: GroupCommitWriter, claim: Claim, *, valid_for_s: float
) -> asyncio.Future[ExistingSignal | None]:
    future: asyncio.Future[ExistingSignal | None] = asyncio.get_running_loop().create_future()
    claim.created_at = datetime.now(UTC)
    future.set_result(None)
    return future


def _outcome_written(
    self: GroupCommitWriter, outcome: Outcome, *, retry_for_s: float
) -> asyncio.Future[Recorded]:
    future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
    future.set_result(Recorded(written=True, dead_lettered=False))
    return future


async def _delivered(
    self: Dispatcher, agents: Sequence[AgentConfig], *args: Any, **kwargs: Any
) -> list[AgentOutcome]:
    return [AgentOutcome(a.name, True, 200, 1, 0.1, {"ok": True}, None) for a in agents]


def ablate(layers: Sequence[str]) -> None:
    """Replace each named layer (one of LAYERS) by an immediate answer, in this process."""
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise SystemExit(f"{ABLATE_ENV}: unknown layers {sorted(unknown)}; known: {LAYERS}")
    if "log" in layers:
        os.environ["LOG_LEVEL"] = "warning"
    if "metrics" in layers:
        for cls, names in (
            (prometheus_metrics.Counter, ("inc",)),
            (prometheus_metrics.Gauge, ("inc", "dec", "set")),
            (prometheus_metrics.Histogram, ("observe",)),
        ):
            for name in names:
                setattr(cls, name, _no_update)
    if "database" in layers:
        GroupCommitWriter.claim = _claim_won  # type: ignore[method-assign]
        GroupCommitWriter.finish = _outcome_written  # type: ignore[method-assign]
    if "agent" in layers:
        Dispatcher.dispatch = _delivered  # type: ignore[method-assign]


if __name__ == "__main__":
    ablate([layer for layer in os.environ.get(ABLATE_ENV, "").split(",") if layer])
    sys.exit(main(sys.argv[1:]))
