"""`router replay-dlq`: replay pending DLQ entries oldest first; a one-line JSON summary."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from router.replay import DRY_RUN_LIMIT, Replayer, ReplayResult
from router.routing import RoutingTable, RoutingTableError, load_routing_table
from router.settings import Settings, SettingsError
from router.store.dlq import DlqFilter
from router.store.errors import StoreError, wrap_database_errors

# Batches dispatched at once, each holding one connection of the CLI's own pool.
WORKERS = 4
CONNECT_TIMEOUT_S = 5
USAGE_ERROR = 2
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
        'a one-line JSON summary {"replayed", "resolved", "failed", "parked"}. Safe to run '
        "as many copies at once as you like.",
    )
    parser.add_argument("--limit", type=_positive, help="replay at most N entries (default: all)")
    parser.add_argument("--agent", help="only entries whose failed agents include A")
    parser.add_argument("--kind", help="only entries of kind K")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"list what would be replayed (at most --limit, default {DRY_RUN_LIMIT}); "
        "change nothing",
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
    from router.dispatch import Dispatcher, create_client_session
    from router.embedded_db import resolve_database_url
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
    session = create_client_session()
    try:
        replayer = Replayer(
            pool,
            Dispatcher(session, table.agents.values()),
            table,
            max_replays=settings.dlq_max_replays,
            workers=WORKERS,
        )
        if dry_run:
            result = await replayer.replay_pending(
                filters, limit=limit or DRY_RUN_LIMIT, dry_run=True
            )
        else:
            progress = _show_progress if sys.stderr.isatty() else None
            result = await replayer.replay_pending(filters, limit=limit, progress=progress)
            if progress is not None:
                print(file=sys.stderr)
    finally:
        await session.close()
        await pool.close()
    summary: dict[str, Any] = dict(result.counts())
    if dry_run:
        summary["dry_run"] = True
        summary["ids"] = [e.id for e in result.would_replay]
    return summary


def _show_progress(result: ReplayResult) -> None:
    print(
        f"\rreplay-dlq: {result.replayed} replayed, {result.resolved} resolved, "
        f"{result.failed} failed, {result.parked} parked",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
