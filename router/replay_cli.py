"""`router replay-dlq`: replay pending DLQ entries oldest first; a one-line JSON summary."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from router.replay import DRY_RUN_LIMIT, Replayer, ReplayResult
from router.routing import RoutingTable
from router.routing_file import RoutingTableError, load_routing_table
from router.settings import Settings, SettingsError
from router.store.dlq import DlqFilter, count_pending
from router.store.errors import StoreError, wrap_database_errors

# Batches dispatched at once, each holding one connection of the CLI's own pool.
WORKERS = 4
CONNECT_TIMEOUT_S = 5
USAGE_ERROR = 2
# Piped, a progress line at most this often (and one at the end).
PROGRESS_EVERY_S = 5.0
RUN_ERROR = 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router replay-dlq",
        description="Replay pending DLQ entries, oldest first, each at most once per run; "
        "parked entries are skipped (replay them by id through POST /dlq/replay). Prints "
        'a one-line JSON summary {"replayed", "resolved", "failed", "parked"} with the routing '
        "table and agent URLs it used and the failures' reasons; progress goes to stderr. Safe "
        "to run as many copies at once as you like.",
    )
    parser.add_argument("--limit", type=_positive, help="replay at most N entries (default: all)")
    parser.add_argument("--agent", help="only entries whose failed agents include A")
    parser.add_argument("--kind", help="only entries of kind K")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"list what would be replayed, with kind, agents and last error (at most --limit, "
        f"default {DRY_RUN_LIMIT}; `capped` says when there were more); change nothing",
    )
    return parser


def replay_main(argv: Sequence[str]) -> int:
    """Run the command; 0 when it ran (whatever the outcomes), 1 when it could not, 2 on usage."""
    try:
        ns = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse has printed the usage or the help
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    for name in ("agent", "kind"):
        value = getattr(ns, name)
        if value is not None and (not value or "\x00" in value):
            print(f"router replay-dlq: --{name} must be a non-empty name", file=sys.stderr)
            return USAGE_ERROR
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"router replay-dlq: {exc}", file=sys.stderr)
        return USAGE_ERROR

    from router.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        table = load_routing_table(settings.routes_file)
    except RoutingTableError as exc:
        print(f"router replay-dlq: {exc}", file=sys.stderr)
        return USAGE_ERROR
    filters = DlqFilter(agent=ns.agent, kind=ns.kind)
    try:
        summary = asyncio.run(_run(settings, table, filters, ns.limit, ns.dry_run))
    except (StoreError, OSError) as exc:
        print(f"router replay-dlq: {_one_line(exc)}", file=sys.stderr)
        return RUN_ERROR
    except KeyboardInterrupt:
        print("router replay-dlq: interrupted", file=sys.stderr)
        return 130
    print(orjson.dumps(summary).decode(), flush=True)
    return 0


async def _run(
    settings: Settings, table: RoutingTable, filters: DlqFilter, limit: int | None, dry_run: bool
) -> dict[str, Any]:
    from router.dispatch import Dispatcher
    from router.embedded_db import resolve_database_url
    from router.http11_client import Http11Client
    from router.store.pool import open_pool

    try:
        url = await asyncio.to_thread(resolve_database_url, settings)
    except Exception as exc:  # the embedded server failed to start: one clear line
        raise StoreError(f"cannot start the embedded PostgreSQL: {exc}") from exc
    with wrap_database_errors():
        # A first connection fails fast with the real reason; the pool would retry for 10 s.
        probe = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
        await probe.close()
        pool = await open_pool(url, min_size=1, max_size=WORKERS + 1, wait=True)
    client = Http11Client()
    try:
        replayer = Replayer(
            pool,
            Dispatcher(client, table.agents.values()),
            table,
            max_replays=settings.dlq_max_replays,
            workers=WORKERS,
        )
        if dry_run:
            wanted = limit or DRY_RUN_LIMIT
            # One more than shown: whether the list was cut is then known, not guessed.
            result = await replayer.replay_pending(filters, limit=wanted + 1, dry_run=True)
        else:
            total = await count_pending(pool, filters)
            progress = _Progress(min(total, limit) if limit is not None else total)
            result = await replayer.replay_pending(filters, limit=limit, progress=progress)
            progress.done(result)
    finally:
        await client.close()
        await pool.close()
    # The table and URLs it replayed to: a replay run without the server's ROUTES_FILE
    # would deliver elsewhere, and this says so.
    summary: dict[str, Any] = {
        **result.counts(),
        "routes": table.source,
        "agents": {agent.name: list(agent.urls) for agent in table.agents.values()},
    }
    if dry_run:
        shown = result.would_replay[:wanted]
        summary["dry_run"] = True
        summary["ids"] = [e.id for e in shown]
        summary["entries"] = [
            {"id": e.id, "kind": e.kind, "agents": e.agents, "last_error": e.last_error}
            for e in shown
        ]
        summary["capped"] = len(result.would_replay) > wanted
    else:
        summary["failures"] = result.failures
    return summary


class _Progress:
    """Progress with its total: a live line on a terminal, a JSON line every few seconds when
    piped (cron, CI), so a long replay is never silent."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self._last = time.monotonic()

    def __call__(self, result: ReplayResult) -> None:
        if self.tty:
            print(
                f"\rreplay-dlq: {result.replayed} of {self.total} replayed, "
                f"{result.resolved} resolved, {result.failed} failed, {result.parked} parked",
                end="",
                file=sys.stderr,
                flush=True,
            )
        elif time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._line(result)

    def done(self, result: ReplayResult) -> None:
        if self.tty:
            print(file=sys.stderr)
        else:
            self._line(result)

    def _line(self, result: ReplayResult) -> None:
        self._last = time.monotonic()
        line = {"progress": {**result.counts(), "total": self.total}}
        print(orjson.dumps(line).decode(), file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
