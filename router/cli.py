"""The `router` command: serve, migrate, replay-dlq, agents, check-routes, db-stop."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from router import budget
from router.settings import Settings, SettingsError

if TYPE_CHECKING:
    from router.routing import RoutingTable


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; return the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # `agents` and `check-routes` own their argument parsing.
    if args and args[0] == "agents":
        from router.agents import agents_main

        return agents_main(args[1:])
    if args and args[0] == "replay-dlq":
        from router.replay_cli import replay_main

        return replay_main(args[1:])

    parser = argparse.ArgumentParser(prog="router", description="The signal router.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the production server (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (make dev)")
    sub.add_parser("migrate", help="alembic upgrade head against DATABASE_URL (or embedded)")
    sub.add_parser(
        "maintain",
        help="create the coming days' partitions, drop those past LOG_RETENTION (JSON summary)",
    )
    sub.add_parser(
        "db-stop", help="stop the embedded PostgreSQL that make dev and make test leave running"
    )
    check = sub.add_parser("check-routes", help="validate a routing table file")
    check.add_argument("file")
    sub.add_parser("agents", help="demo / load-test agents with fault injection")
    sub.add_parser(
        "replay-dlq", help="replay pending DLQ entries, oldest first; prints a JSON summary"
    )
    ns = parser.parse_args(args)

    if ns.command == "check-routes":
        from router.routing_file import check_routes_main

        return check_routes_main(ns.file)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    from router.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if ns.command == "migrate":
        return _migrate(settings)
    if ns.command == "db-stop":
        return _db_stop(settings)
    if ns.command == "maintain":
        return _maintain(settings)
    return _serve(settings, ns.host, ns.port, ns.workers, ns.reload)


def _database_url(settings: Settings) -> str:
    from router.embedded_db import resolve_database_url

    return resolve_database_url(settings)


def _migrate(settings: Settings) -> int:
    from router import migrate

    try:
        migrate.upgrade(_database_url(settings))
    except Exception as exc:  # any failure: one clear line and a non-zero exit
        print(f"router migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("router migrate: database is at head", file=sys.stderr)
    return 0


def _maintain(settings: Settings) -> int:
    import asyncio
    import dataclasses

    import orjson

    from router.store.errors import StoreError
    from router.store.partitions import maintain

    try:
        done = asyncio.run(maintain(_database_url(settings), retention=settings.log_retention))
    except StoreError as exc:
        print(f"router maintain: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(dataclasses.asdict(done)).decode())
    return 0


def _db_stop(settings: Settings) -> int:
    from router.embedded_db import stop_embedded

    pgdata = settings.data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        print(f"router db-stop: no embedded PostgreSQL is running in {pgdata}", file=sys.stderr)
        return 0
    try:
        stop_embedded(settings.data_dir)
    except Exception as exc:  # pg_ctl's own message says why
        print(f"router db-stop: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"router db-stop: stopped the embedded PostgreSQL in {pgdata}", file=sys.stderr)
    return 0


def _shutdown_grace_s(settings: Settings, table: RoutingTable) -> int:
    """SHUTDOWN_GRACE_S, else the longest a request of this table can take: SIGTERM then
    lets every request in flight finish (uvicorn takes whole seconds)."""
    if settings.shutdown_grace_s is not None:
        return math.ceil(settings.shutdown_grace_s)
    longest = max(rule.deadline_ms for rule in table.rules)
    return math.ceil(budget.longest_request_s(longest, settings.outcome_timeout_s)) + 1


def _serve(settings: Settings, host: str, port: int, workers: int, reload: bool) -> int:
    from router.routing_file import RoutingTableError, load_routing_table

    try:
        settings.require_api_key()
        table = load_routing_table(settings.routes_file)
    except (SettingsError, RoutingTableError) as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    if workers < 1:
        print("router: --workers must be >= 1", file=sys.stderr)
        return 2
    from router.ports import in_use_message, port_in_use

    if port_in_use(host, port):
        # uvicorn would only say "address already in use": name what holds it.
        print(f"router: {in_use_message(host, port)}", file=sys.stderr)
        return 1
    # Resolve the embedded server once here so every worker (and reloaded child)
    # inherits one DATABASE_URL instead of racing to start it.
    os.environ["DATABASE_URL"] = _database_url(settings)
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers > 1 or given:
        # Several workers sum their metrics through files; a directory the operator gave is
        # prepared even for one worker, or files from an earlier run would be summed in.
        from router.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(Path(given or tempfile.mkdtemp(prefix="router-prom-")))

    import uvicorn

    from router.http_protocol import HTTP_PROTOCOL
    from router.logging import uvicorn_log_config

    uvicorn.run(
        "router.asgi:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        # The routing table too: editing it under make dev reloads the server with it.
        reload_dirs=_reload_dirs(settings) if reload else None,
        reload_includes=["*.py", "*.toml"] if reload else None,
        loop="uvloop",
        # httptools, with uvicorn's own 400/500/503 answers in the contract's JSON shape; by
        # import path, as each worker imports it.
        http=HTTP_PROTOCOL,
        # No WebSocket endpoint: an upgrade request is answered as HTTP (JSON), not with
        # the WebSocket implementation's empty 403.
        ws="none",
        lifespan="on",
        access_log=False,
        # uvicorn's lines rendered like the router's (JSON with LOG_FORMAT=json), in every
        # process it starts.
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        timeout_graceful_shutdown=_shutdown_grace_s(settings, table),
    )
    return 0


def _reload_dirs(settings: Settings) -> list[str]:
    """The package (code and the packaged table) and the directory of ROUTES_FILE."""
    dirs = [str(Path(__file__).resolve().parent)]
    if settings.routes_file is not None:
        dirs.append(str(settings.routes_file.resolve().parent))
    return dirs
